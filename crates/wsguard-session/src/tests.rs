//! Sessions: every store-dependent reason, in both modes, with exact time boundaries.

use std::sync::Arc;

use hmac::{Mac, digest::KeyInit};
use wsguard_store::{MemoryStore, Revocation, SessionStore, SqliteStore};
use wsguard_token::{KeyRing, Rejection, SessionData, TokenPolicy, UserId, Verifier};

use super::*;

const NOW: u64 = 1_764_000_000;
const LEGACY_SECRET: &[u8] = b"tutorial-secret-tutorial-secret!";

fn policy() -> TokenPolicy {
    TokenPolicy {
        max_age: 1000,
        idle_timeout: 100,
        future_leeway: 5,
        accept_legacy_tokens: true,
    }
}

fn sessions_with(store: Arc<dyn SessionStore>, mode: Mode) -> Sessions {
    let ring = KeyRing::generate_for_tests().with_legacy_secret(LEGACY_SECRET);
    Sessions::new(Verifier::new(ring.into(), policy()), store, mode, 10)
}

fn sessions(mode: Mode) -> Sessions {
    sessions_with(Arc::new(MemoryStore::new()), mode)
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

fn rejected(r: Result<Session, AuthError>) -> Rejection {
    match r {
        Err(AuthError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn legacy_token(sid: &str, uid: &str, created: u64, last_active: u64) -> String {
    let payload = format!(
        r#"{{"sid":"{sid}","uid":"{uid}","data":{{}},"created":{created},"last_active":{last_active}}}"#
    );
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(LEGACY_SECRET).unwrap();
    mac.update(payload.as_bytes());
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{payload}.{tag}")
}

#[tokio::test]
async fn stateful_issue_then_authenticate() {
    let s = sessions(Mode::Stateful);
    let issued = s
        .issue(alice(), SessionData::parse(r#"{"r":1}"#).unwrap(), NOW)
        .await
        .unwrap();
    let session = s.authenticate(&issued.token, NOW + 1).await.unwrap();
    assert_eq!(session.uid(), &alice());
    assert_eq!(session.data().as_json(), r#"{"r":1}"#);
    assert_eq!(session.expires_at(), NOW + 1000);
    assert_eq!(issued.expires_at, NOW + 1000);
}

#[tokio::test]
async fn stateful_revocation_is_immediate() {
    let s = sessions(Mode::Stateful);
    let issued = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    s.revoke_session(&issued.claims.sid, NOW).await.unwrap();
    assert_eq!(
        rejected(s.authenticate(&issued.token, NOW).await),
        Rejection::Revoked
    );
}

#[tokio::test]
async fn stateful_unknown_session() {
    let issuer = sessions(Mode::Stateful);
    let issued = issuer
        .issue(alice(), SessionData::empty(), NOW)
        .await
        .unwrap();
    // Same keys, other (empty) store: the session is not live there.
    let other = Sessions::new(
        (*issuer.verifier()).clone(),
        Arc::new(MemoryStore::new()),
        Mode::Stateful,
        10,
    );
    assert_eq!(
        rejected(other.authenticate(&issued.token, NOW).await),
        Rejection::UnknownSession
    );
    // Stateless tokens (never stored) are unknown to a stateful gateway.
    let stateless = Sessions::new(
        (*issuer.verifier()).clone(),
        Arc::clone(issuer.store()),
        Mode::Stateless,
        10,
    );
    let token = stateless
        .issue(alice(), SessionData::empty(), NOW)
        .await
        .unwrap()
        .token;
    assert_eq!(
        rejected(issuer.authenticate(&token, NOW).await),
        Rejection::UnknownSession
    );
}

#[tokio::test]
async fn idle_timeout_slides_with_touch() {
    let s = sessions(Mode::Stateful);
    let issued = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    // Valid through the last idle second, rejected one second later.
    s.authenticate(&issued.token, NOW + 99).await.unwrap();
    assert_eq!(
        rejected(s.authenticate(&issued.token, NOW + 100).await),
        Rejection::Idle
    );

    let mut session = s.authenticate(&issued.token, NOW + 5).await.unwrap();
    // Throttled: nothing written before touch_interval (10 s) has passed.
    assert!(!s.touch_if_due(&mut session, NOW + 9).await.unwrap());
    assert!(s.touch_if_due(&mut session, NOW + 90).await.unwrap());
    assert_eq!(session.last_active(), NOW + 90);
    // The same cookie now lives until NOW + 90 + 100 - 1: idle really slides (tutorial flaw 2).
    s.authenticate(&issued.token, NOW + 189).await.unwrap();
    assert_eq!(
        rejected(s.authenticate(&issued.token, NOW + 190).await),
        Rejection::Idle
    );
}

#[tokio::test]
async fn absolute_expiry_wins_over_activity() {
    let s = sessions(Mode::Stateful);
    let issued = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    let mut session = s.authenticate(&issued.token, NOW).await.unwrap();
    for t in (NOW + 50..NOW + 1000).step_by(50) {
        s.touch_if_due(&mut session, t).await.unwrap();
    }
    s.authenticate(&issued.token, NOW + 999).await.unwrap();
    assert_eq!(
        rejected(s.authenticate(&issued.token, NOW + 1000).await),
        Rejection::Expired
    );
    // Still "expired" (not "unknown") once the store has purged the record.
    s.store().purge(NOW + 1000).await.unwrap();
    assert_eq!(
        rejected(s.authenticate(&issued.token, NOW + 1000).await),
        Rejection::Expired
    );
}

#[tokio::test]
async fn revoke_user_ends_every_session_in_both_modes() {
    for mode in [Mode::Stateful, Mode::Stateless] {
        let s = sessions(mode);
        let a = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
        let b = s
            .issue(alice(), SessionData::empty(), NOW + 1)
            .await
            .unwrap();
        let bob = s
            .issue(UserId::parse("bob").unwrap(), SessionData::empty(), NOW)
            .await
            .unwrap();
        s.revoke_user(&alice(), NOW + 1).await.unwrap();
        assert_eq!(
            rejected(s.authenticate(&a.token, NOW + 2).await),
            Rejection::Revoked,
            "{mode:?}"
        );
        assert_eq!(
            rejected(s.authenticate(&b.token, NOW + 2).await),
            Rejection::Revoked,
            "{mode:?}"
        );
        s.authenticate(&bob.token, NOW + 2).await.unwrap();
        // A login after the revocation works.
        let c = s
            .issue(alice(), SessionData::empty(), NOW + 2)
            .await
            .unwrap();
        s.authenticate(&c.token, NOW + 3).await.unwrap();
    }
}

#[tokio::test]
async fn stateless_needs_no_store_record_but_honours_revocation() {
    let s = sessions(Mode::Stateless);
    let issued = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    assert!(
        s.list_user(&alice()).await.unwrap().is_empty(),
        "stateless sessions are not stored"
    );
    s.authenticate(&issued.token, NOW + 99).await.unwrap();
    assert_eq!(
        rejected(s.authenticate(&issued.token, NOW + 100).await),
        Rejection::Idle
    );
    let issued = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    let claims = s.revoke_token(&issued.token, NOW + 1).await.unwrap();
    assert_eq!(claims.sid, issued.claims.sid);
    assert_eq!(
        rejected(s.authenticate(&issued.token, NOW + 2).await),
        Rejection::Revoked
    );
    let mut session = s
        .authenticate(
            &s.issue(alice(), SessionData::empty(), NOW + 5)
                .await
                .unwrap()
                .token,
            NOW + 5,
        )
        .await
        .unwrap();
    assert!(!s.touch_if_due(&mut session, NOW + 50).await.unwrap());
}

#[tokio::test]
async fn legacy_token_is_adopted_then_revocable() {
    let s = sessions(Mode::Stateful);
    let sid = "TutorialSid_0123456789abcdefghijklmnopqrstuv";
    let token = legacy_token(sid, "alice", NOW - 10, NOW - 5);
    let session = s.authenticate(&token, NOW).await.unwrap();
    assert_eq!(session.format(), &Format::Legacy);
    assert_eq!(
        s.list_user(&alice()).await.unwrap().len(),
        1,
        "adopted into the store"
    );
    s.authenticate(&token, NOW + 1).await.unwrap();
    s.revoke_session(session.sid(), NOW + 2).await.unwrap();
    assert_eq!(
        rejected(s.authenticate(&token, NOW + 3).await),
        Rejection::Revoked
    );
    // A legacy token of a user revoked before it is first seen is not adopted.
    s.revoke_user(&UserId::parse("bob").unwrap(), NOW)
        .await
        .unwrap();
    let bob = legacy_token("TutorialSid_bob_0123456789abcdef", "bob", NOW - 10, NOW - 5);
    assert_eq!(
        rejected(s.authenticate(&bob, NOW + 1).await),
        Rejection::Revoked
    );
    assert!(
        s.list_user(&UserId::parse("bob").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn store_errors_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).unwrap();
    let s = sessions_with(Arc::new(store), Mode::Stateful);
    let issued = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    // Break the store underneath: the answer must be an error, never "valid".
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE sessions;")
        .unwrap();
    match s.authenticate(&issued.token, NOW).await {
        Err(AuthError::Store(_)) => {}
        other => panic!("expected a store error, got {other:?}"),
    }
}

#[tokio::test]
async fn revocation_events_match_sessions() {
    let s = sessions(Mode::Stateful);
    let mut events = s.subscribe();
    let a = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    let session = s.authenticate(&a.token, NOW).await.unwrap();
    s.revoke_user(&alice(), NOW).await.unwrap();
    let event = events.recv().await.unwrap();
    assert_eq!(
        event,
        Revocation::User {
            uid: alice(),
            at: NOW
        }
    );
    assert!(Sessions::is_revoked_by(&session, &event));
    let later = Revocation::User {
        uid: alice(),
        at: NOW - 1,
    };
    assert!(
        !Sessions::is_revoked_by(&session, &later),
        "created after that revocation"
    );
}

/// Counts lookups, to show when the store is (not) asked.
struct Counting {
    inner: MemoryStore,
    counts: bool,
    lookups: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl SessionStore for Counting {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.inner.create(record).await
    }
    async fn get(&self, sid: &wsguard_token::SessionId) -> Result<Lookup, StoreError> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get(sid).await
    }
    async fn touch(&self, sid: &wsguard_token::SessionId, at: u64) -> Result<bool, StoreError> {
        self.inner.touch(sid, at).await
    }
    async fn revoke_session(
        &self,
        sid: &wsguard_token::SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError> {
        self.inner.revoke_session(sid, keep_until).await
    }
    async fn revoke_user(
        &self,
        uid: &UserId,
        at: u64,
        keep_until: u64,
    ) -> Result<usize, StoreError> {
        self.inner.revoke_user(uid, at, keep_until).await
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
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Revocation> {
        self.inner.subscribe()
    }
    fn revocations_announced(&self) -> Option<u64> {
        if self.counts {
            self.inner.revocations_announced()
        } else {
            None
        }
    }
}

#[tokio::test]
async fn still_live_after_asks_the_store_only_if_a_revocation_was_announced() {
    let store = Arc::new(Counting {
        inner: MemoryStore::new(),
        counts: true,
        lookups: Default::default(),
    });
    let lookups = || store.lookups.load(std::sync::atomic::Ordering::SeqCst);
    let s = sessions_with(Arc::clone(&store) as Arc<dyn SessionStore>, Mode::Stateful);
    let a = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();

    // Nothing announced since the mark: answered without a lookup.
    let mark = s.revocation_mark();
    let session = s.authenticate(&a.token, NOW).await.unwrap();
    let after_auth = lookups();
    s.still_live_after(&session, mark, NOW).await.unwrap();
    assert_eq!(lookups(), after_auth);

    // Revoked between authentication and the check (the race this closes): the store is asked
    // and says so.
    let mark = s.revocation_mark();
    let session = s.authenticate(&a.token, NOW).await.unwrap();
    s.revoke_session(session.sid(), NOW).await.unwrap();
    assert_eq!(
        s.still_live_after(&session, mark, NOW)
            .await
            .unwrap_err()
            .to_string(),
        AuthError::from(Rejection::Revoked).to_string()
    );

    // Any other revocation meanwhile also sends it to the store (which says live).
    let b = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    let other = s
        .issue(UserId::parse("bob").unwrap(), SessionData::empty(), NOW)
        .await
        .unwrap();
    let mark = s.revocation_mark();
    let session = s.authenticate(&b.token, NOW).await.unwrap();
    let before = lookups();
    let bob = s.authenticate(&other.token, NOW).await.unwrap();
    s.revoke_session(bob.sid(), NOW).await.unwrap();
    let before = before + 1;
    s.still_live_after(&session, mark, NOW).await.unwrap();
    assert!(lookups() > before, "the store was asked");

    // A store that does not count its events is always asked.
    let blind = Arc::new(Counting {
        inner: MemoryStore::new(),
        counts: false,
        lookups: Default::default(),
    });
    let s = sessions_with(Arc::clone(&blind) as Arc<dyn SessionStore>, Mode::Stateful);
    let c = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    let mark = s.revocation_mark();
    assert_eq!(mark, None);
    let session = s.authenticate(&c.token, NOW).await.unwrap();
    let before = blind.lookups.load(std::sync::atomic::Ordering::SeqCst);
    s.still_live_after(&session, mark, NOW).await.unwrap();
    assert!(blind.lookups.load(std::sync::atomic::Ordering::SeqCst) > before);
}

#[tokio::test]
async fn a_session_remembers_its_verifier_and_a_reload_can_retire_its_key() {
    let s = sessions(Mode::Stateful);
    let issued = s.issue(alice(), SessionData::empty(), NOW).await.unwrap();
    let session = s.authenticate(&issued.token, NOW).await.unwrap();
    assert!(Arc::ptr_eq(session.verified_by(), &s.verifier()));
    assert!(s.keys_still_accept(&session, NOW));
    // The same keys behind a new verifier (a reload that changed something else).
    s.set_verifier((*s.verifier()).clone());
    assert!(!Arc::ptr_eq(session.verified_by(), &s.verifier()));
    assert!(s.keys_still_accept(&session, NOW));
    // Other keys: the session's key is gone.
    s.set_verifier(Verifier::new(
        KeyRing::generate_for_tests().into(),
        policy(),
    ));
    assert!(!s.keys_still_accept(&session, NOW));
}
