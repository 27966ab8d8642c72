//! SQLite session store: the default backend.
//!
//! Owns [`SqliteStore`]: what it holds and how each [`SessionStore`] operation runs. SQLite in
//! WAL mode lets several processes (a running gateway and the `wsguard` CLI) share one file
//! safely; every revocation is also appended to `revocation_log`, which each process polls so
//! that a revoke made elsewhere still reaches its subscribers (and closes live sockets).
//!
//! The work is in three files below, which import neither this one nor each other but
//! `schema.rs`:
//! - `sqlite/schema.rs`: the tables, opening the file, row conversions, and every statement, as
//!   synchronous functions over a connection;
//! - `sqlite/batch.rs`: session lookups, batched per turn of the runtime;
//! - `sqlite/poller.rs`: the task that reads other processes' revocations from the log.
//!
//! It must not block the async runtime: every statement runs on a blocking thread
//! (`spawn_blocking`), and the connection mutex is only taken there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use wsguard_token::{SessionId, UserId};

use crate::events::Announcer;
use crate::store::{Lookup, Revocation, SessionRecord, SessionStore, StoreError};

mod batch;
mod poller;
mod schema;

use batch::Lookups;
use poller::Poller;
use schema::{SharedConn, with_conn};

/// How often other processes' revocations are looked for, by default.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A session store in a SQLite file (WAL mode), shareable between processes.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    conn: SharedConn,
    /// Events sent so far, ours and the poller's (see [`SessionStore::revocations_announced`]).
    /// The poller holds it weakly: it stops when this store is dropped.
    events: Arc<Announcer>,
    /// Identifies this store instance's rows in the revocation log, so the poller does not
    /// broadcast our own revocations twice.
    origin: String,
    poll_interval: Duration,
    poller: Poller,
    /// Session lookups waiting for the next batch (see [`SqliteStore::get`]).
    lookups: Arc<Lookups>,
}

impl SqliteStore {
    /// Opens (creating if needed, with owner-only permissions) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with_poll_interval(path, DEFAULT_POLL_INTERVAL)
    }

    /// Like [`SqliteStore::open`], polling for other processes' revocations every `interval`.
    pub fn open_with_poll_interval(
        path: impl AsRef<Path>,
        interval: Duration,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let (conn, last_seq) = schema::open(&path)?;
        let conn: SharedConn = Arc::new(Mutex::new(conn));
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                lookups: Lookups::new(Arc::clone(&conn)),
                conn,
                events: Arc::new(Announcer::new()),
                origin: SessionId::generate().as_str().to_owned(),
                poll_interval: interval,
                poller: Poller::new(last_seq),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let record = record.clone();
        with_conn(&self.inner.conn, move |conn| schema::create(conn, &record)).await
    }

    /// Batched with the other lookups asked for in the same turn of the runtime: one trip to a
    /// blocking thread and one read transaction for all of them (`sqlite/batch.rs`).
    async fn get(&self, sid: &SessionId) -> Result<Lookup, StoreError> {
        self.inner.lookups.get(sid).await
    }

    async fn touch(&self, sid: &SessionId, last_active: u64) -> Result<bool, StoreError> {
        let sid = sid.clone();
        with_conn(&self.inner.conn, move |conn| {
            schema::touch(conn, &sid, last_active)
        })
        .await
    }

    async fn revoke_session(
        &self,
        sid: &SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError> {
        let sid_owned = sid.clone();
        let origin = self.inner.origin.clone();
        let uid = with_conn(&self.inner.conn, move |conn| {
            schema::revoke_session(conn, &origin, &sid_owned, keep_until)
        })
        .await?;
        self.inner.events.announce(Revocation::Session {
            sid: sid.clone(),
            uid: uid.clone(),
        });
        Ok(uid)
    }

    async fn revoke_user(
        &self,
        uid: &UserId,
        now: u64,
        keep_until: u64,
    ) -> Result<usize, StoreError> {
        let uid_owned = uid.clone();
        let origin = self.inner.origin.clone();
        let ended = with_conn(&self.inner.conn, move |conn| {
            schema::revoke_user(conn, &origin, &uid_owned, now, keep_until)
        })
        .await?;
        self.inner.events.announce(Revocation::User {
            uid: uid.clone(),
            at: now,
        });
        Ok(ended)
    }

    async fn user_revoked_at(&self, uid: &UserId) -> Result<Option<u64>, StoreError> {
        let uid = uid.clone();
        with_conn(&self.inner.conn, move |conn| {
            schema::user_revoked_at(conn, &uid)
        })
        .await
    }

    async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let uid = uid.clone();
        with_conn(&self.inner.conn, move |conn| schema::list_user(conn, &uid)).await
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        with_conn(&self.inner.conn, move |conn| schema::purge(conn, now)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        let rx = self.inner.events.subscribe();
        let inner = &self.inner;
        inner.poller.start(
            &inner.events,
            &inner.path,
            &inner.origin,
            inner.poll_interval,
        );
        rx
    }

    fn revocations_announced(&self) -> Option<u64> {
        Some(self.inner.events.announced())
    }
}
