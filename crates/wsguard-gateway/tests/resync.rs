//! After missed revocation events the gateway re-checks every live socket against the store,
//! and a store that fails meanwhile is retried, never taken for "still live": a store that
//! drops its events (a stand-in for a trimmed Redis stream or a lagged subscriber) and fails
//! its first lookups, around a real in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tokio::sync::broadcast;
use wsguard_store::{Lookup, Revocation, SessionRecord, StoreError};
use wsguard_token::SessionId;

/// A MemoryStore whose events the gateway never hears (it listens to `events` instead), and
/// whose next `fail` lookups fail.
struct Deaf {
    inner: MemoryStore,
    events: broadcast::Sender<Revocation>,
    fail: AtomicUsize,
}

impl Deaf {
    fn lookups_fail(&self) -> Result<(), StoreError> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Backend("injected".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SessionStore for Deaf {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.inner.create(record).await
    }
    async fn get(&self, sid: &SessionId) -> Result<Lookup, StoreError> {
        self.lookups_fail()?;
        self.inner.get(sid).await
    }
    async fn get_with_user_mark(
        &self,
        sid: &SessionId,
        uid: &UserId,
    ) -> Result<(Lookup, Option<u64>), StoreError> {
        self.lookups_fail()?;
        self.inner.get_with_user_mark(sid, uid).await
    }
    async fn touch(&self, sid: &SessionId, last_active: u64) -> Result<bool, StoreError> {
        self.inner.touch(sid, last_active).await
    }
    async fn revoke_session(
        &self,
        sid: &SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError> {
        self.inner.revoke_session(sid, keep_until).await
    }
    async fn revoke_user(
        &self,
        uid: &UserId,
        now: u64,
        keep_until: u64,
    ) -> Result<usize, StoreError> {
        self.inner.revoke_user(uid, now, keep_until).await
    }
    async fn user_revoked_at(&self, uid: &UserId) -> Result<Option<u64>, StoreError> {
        self.inner.user_revoked_at(uid).await
    }
    async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_user(uid).await
    }
    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        self.inner.purge(now).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.events.subscribe()
    }
}

#[tokio::test]
async fn missed_revocations_are_caught_by_a_recheck_that_retries_a_failing_store() {
    let (events, _) = broadcast::channel(16);
    let store = Arc::new(Deaf {
        inner: MemoryStore::new(),
        events: events.clone(),
        fail: AtomicUsize::new(0),
    });
    let h = harness_with(store.clone(), policy(), |_| {}).await;
    let gone = h.login("alice").await;
    let kept = h.login("bob").await;
    let mut ws_gone = h.connect_as("/", &gone).await;
    let mut ws_kept = h.connect_as("/", &kept).await;
    // Alice's session is revoked in the store; the gateway hears nothing of it.
    let sid = h
        .sessions
        .authenticate(&gone, now())
        .await
        .unwrap()
        .sid()
        .clone();
    store
        .inner
        .revoke_session(&sid, now() + 3600)
        .await
        .unwrap();
    ws_gone
        .send(Message::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws_gone).await,
        "still here",
        "no event, no close yet"
    );
    // Then the feed says events were missed, while the store fails its next three lookups.
    store.fail.store(3, Ordering::SeqCst);
    events.send(Revocation::Resync).unwrap();
    assert_eq!(
        next_close(&mut ws_gone).await,
        (1008, "session revoked".into())
    );
    // The store was asked until it answered; the other socket stays.
    assert_eq!(store.fail.load(Ordering::SeqCst), 0);
    ws_kept.send(Message::Text("fine".into())).await.unwrap();
    assert_eq!(next_text(&mut ws_kept).await, "fine");
}
