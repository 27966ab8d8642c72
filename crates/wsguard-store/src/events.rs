//! Revocation events to this process's subscribers, counted.
//!
//! Owns [`Announcer`]: the broadcast channel every backend sends its revocations on (its own, and
//! for shared backends those read from other processes), with the count behind
//! [`SessionStore::revocations_announced`](crate::SessionStore::revocations_announced). It must
//! not decide what is announced: the backends do.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::store::{REVOCATION_CHANNEL_CAPACITY, Revocation};

/// A broadcast channel of revocations that counts what it sends.
#[derive(Debug)]
pub(crate) struct Announcer {
    events: broadcast::Sender<Revocation>,
    /// Events sent so far (see [`crate::SessionStore::revocations_announced`]).
    announced: AtomicU64,
}

impl Announcer {
    /// A channel of [`REVOCATION_CHANNEL_CAPACITY`] events, nothing sent yet.
    pub(crate) fn new() -> Self {
        let (events, _) = broadcast::channel(REVOCATION_CHANNEL_CAPACITY);
        Announcer {
            events,
            announced: AtomicU64::new(0),
        }
    }

    /// Counts, then sends, an event. No subscriber is not an error.
    pub(crate) fn announce(&self, event: Revocation) {
        self.announced.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(event);
    }

    /// A new subscriber, which gets the events sent from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.events.subscribe()
    }

    /// How many events were sent so far.
    pub(crate) fn announced(&self) -> u64 {
        self.announced.load(Ordering::SeqCst)
    }
}
