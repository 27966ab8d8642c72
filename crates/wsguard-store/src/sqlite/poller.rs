//! The revocation-log poller: how another process's revocations reach this one's subscribers.
//!
//! Owns [`Poller`] (started once, by the first subscriber, if a Tokio runtime is there) and its
//! task. Every revocation is appended to `revocation_log` in the transaction that makes it; the
//! task reads the rows after the last one it saw, every poll interval, on a connection of its
//! own, and announces those of other store instances (this one's were announced when made). It
//! holds the store's [`Announcer`] weakly and ends when the store is dropped. It must not write
//! to the database.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::schema;
use crate::events::Announcer;

/// Whether the poller task runs.
#[derive(Debug)]
pub(super) struct Poller {
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    /// Not yet: it will read the log after `last_seq` (where the log stood when the store
    /// opened).
    NotStarted {
        last_seq: i64,
    },
    Running,
}

impl Poller {
    /// A poller that has not started; it will read the rows after `last_seq`.
    pub(super) fn new(last_seq: i64) -> Self {
        Poller {
            state: Mutex::new(State::NotStarted { last_seq }),
        }
    }

    /// Starts the task, once: it reads the log of the database at `path` every `interval` and
    /// announces, on `events`, the rows whose origin is not `origin`. Without a Tokio runtime
    /// (a synchronous caller) it does not start: subscribers then get local events only.
    pub(super) fn start(
        &self,
        events: &Arc<Announcer>,
        path: &Path,
        origin: &str,
        interval: Duration,
    ) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let State::NotStarted { last_seq } = *state else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime (e.g. a synchronous caller): local events only.
            return;
        };
        *state = State::Running;
        handle.spawn(poll_revocations(
            Arc::downgrade(events),
            path.to_path_buf(),
            origin.to_owned(),
            interval,
            last_seq,
        ));
    }
}

/// Broadcasts revocations other processes appended to the log. Stops when the store (the only
/// strong holder of `events`) is dropped.
async fn poll_revocations(
    events: Weak<Announcer>,
    path: PathBuf,
    origin: String,
    interval: Duration,
    mut last_seq: i64,
) {
    if events.strong_count() == 0 {
        return;
    }
    let conn = match tokio::task::spawn_blocking(move || schema::open_connection(&path)).await {
        Ok(Ok(conn)) => Arc::new(Mutex::new(conn)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "revocation poller cannot open the session store");
            return;
        }
        Err(_) => return,
    };
    if events.strong_count() == 0 {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if events.strong_count() == 0 {
            return;
        }
        let origin = origin.clone();
        let conn = Arc::clone(&conn);
        let rows =
            tokio::task::spawn_blocking(move || schema::read_log(&conn, last_seq, &origin)).await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "revocation poller failed; retrying");
                continue;
            }
            Err(_) => return,
        };
        let Some(events) = events.upgrade() else {
            return;
        };
        for (seq, event) in rows {
            last_seq = seq;
            if let Some(event) = event {
                events.announce(event);
            }
        }
    }
}
