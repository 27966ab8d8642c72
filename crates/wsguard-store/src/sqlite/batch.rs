//! Batched session lookups: one per authenticated handshake, many per turn of the runtime.
//!
//! Owns [`Lookups`]: the lookups waiting for the next batch. Those asked for in the same turn of
//! the runtime share one trip to a blocking thread and one read transaction, since the trip (a
//! thread woken, two context switches, SQLite's file locks) costs more than the lookup itself.
//! The statements are `schema.rs`'s; this file only groups them. It must not hold the
//! connection's mutex anywhere but on the blocking thread.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;
use wsguard_token::SessionId;

use super::schema::{self, SharedConn, backend};
use crate::store::{Lookup, StoreError};

/// A session lookup waiting for its batch, and where its answer goes.
type PendingLookup = (SessionId, oneshot::Sender<Result<Lookup, StoreError>>);

/// The lookups waiting for the next batch, and the connection the batches run on.
#[derive(Debug)]
pub(super) struct Lookups {
    conn: SharedConn,
    waiting: Mutex<Vec<PendingLookup>>,
}

impl Lookups {
    /// No lookup waiting; batches will run on `conn`.
    pub(super) fn new(conn: SharedConn) -> Arc<Self> {
        Arc::new(Lookups {
            conn,
            waiting: Mutex::new(Vec::new()),
        })
    }

    /// Looks `sid` up in the next batch. The first lookup of a batch starts it.
    pub(super) async fn get(self: &Arc<Self>, sid: &SessionId) -> Result<Lookup, StoreError> {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.push((sid.clone(), answer));
            waiting.len() == 1
        };
        if first {
            // A task of its own, so that the batch is run even if this caller goes away.
            tokio::spawn(run(Arc::clone(self)));
        }
        answered
            .await
            .map_err(|_| backend("session lookup failed: its batch stopped"))?
    }
}

/// Runs the lookups asked for in this turn of the runtime: it yields once, so that every
/// handshake already woken can add its own, then takes them all to one blocking thread and one
/// read transaction. A lookup asked for after the batch is taken starts the next one. The
/// answers are sent from here, on the runtime: sent from the blocking thread, each one would
/// wake the runtime's driver with a system call of its own.
async fn run(lookups: Arc<Lookups>) {
    tokio::task::yield_now().await;
    let batch = std::mem::take(&mut *lookups.waiting.lock().unwrap_or_else(|p| p.into_inner()));
    let (sids, answers): (Vec<SessionId>, Vec<_>) = batch.into_iter().unzip();
    // If the batch cannot run (or panics), its answers are dropped and every caller in it gets
    // an error.
    let Ok(results) =
        schema::with_conn(&lookups.conn, move |conn| Ok(lookup_all(conn, &sids))).await
    else {
        return;
    };
    for (answer, result) in answers.into_iter().zip(results) {
        let _ = answer.send(result);
    }
}

/// The lookups of one batch, in order.
fn lookup_all(conn: &mut Connection, sids: &[SessionId]) -> Vec<Result<Lookup, StoreError>> {
    // Alone, a lookup needs no transaction of its own: its two statements may read two
    // snapshots, but the second runs only when the first found no row, and a revocation
    // deletes the row and writes the tombstone in one transaction, so the two cannot disagree
    // about it. Several lookups share one snapshot, and with it one read lock on the database.
    if let [sid] = sids {
        return vec![schema::lookup(conn, sid)];
    }
    // Every lookup still reads what was committed before it was asked for.
    let read = conn.transaction();
    sids.iter()
        .map(|sid| match &read {
            Ok(tx) => schema::lookup(tx, sid),
            Err(e) => Err(backend(e)),
        })
        .collect()
}
