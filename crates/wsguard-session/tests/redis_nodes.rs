//! Sessions on two gateway nodes sharing one Redis (a real `redis-server` on a free port):
//! a session issued on one node is accepted on the other, a revocation made on one is refused
//! on the other at once, in both modes, and `still_live_after` notices a revocation that
//! another node announced between a node's authentication and its check.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::sync::Arc;
use std::time::Duration;

use wsguard_session::{AuthError, Mode, Sessions};
use wsguard_store::test_util::RedisServer;
use wsguard_store::{RedisConfig, RedisStore, SessionStore};
use wsguard_token::{KeyRing, Rejection, SessionData, TokenPolicy, UserId, Verifier};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn two_nodes(server: &RedisServer, mode: Mode) -> (Sessions, Sessions) {
    let keys = Arc::new(KeyRing::generate_for_tests());
    let policy = TokenPolicy {
        max_age: 3600,
        idle_timeout: 600,
        future_leeway: 5,
        accept_legacy_tokens: false,
    };
    let mut out = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(RedisConfig::new(server.url()))
            .await
            .unwrap();
        out.push(Sessions::new(
            Verifier::new(Arc::clone(&keys), policy),
            Arc::new(store) as Arc<dyn SessionStore>,
            mode,
            60,
        ));
    }
    let b = out.pop().unwrap();
    (out.pop().unwrap(), b)
}

fn revoked<T: std::fmt::Debug>(r: Result<T, AuthError>) -> bool {
    matches!(r, Err(AuthError::Rejected(Rejection::Revoked)))
}

#[tokio::test]
async fn a_session_from_one_node_works_and_ends_on_the_other() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    for mode in [Mode::Stateful, Mode::Stateless] {
        let (a, b) = two_nodes(&server, mode).await;
        let alice = UserId::parse(&format!("alice-{mode:?}")).unwrap();
        let one = a
            .issue(alice.clone(), SessionData::empty(), now())
            .await
            .unwrap();
        b.authenticate(&one.token, now()).await.unwrap();
        a.revoke_token(&one.token, now()).await.unwrap();
        assert!(revoked(b.authenticate(&one.token, now()).await), "{mode:?}");
        let two = a
            .issue(alice.clone(), SessionData::empty(), now())
            .await
            .unwrap();
        b.authenticate(&two.token, now()).await.unwrap();
        b.revoke_user(&alice, now()).await.unwrap();
        assert!(revoked(a.authenticate(&two.token, now()).await), "{mode:?}");
    }
}

#[tokio::test]
async fn still_live_after_sees_another_nodes_revocation() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = two_nodes(&server, Mode::Stateful).await;
    let mut events = b.subscribe();
    let issued = a
        .issue(UserId::parse("alice").unwrap(), SessionData::empty(), now())
        .await
        .unwrap();
    // B authenticates (the store says live), then A revokes before B registered the socket.
    let mark = b.revocation_mark();
    let session = b.authenticate(&issued.token, now()).await.unwrap();
    a.revoke_session(session.sid(), now()).await.unwrap();
    // Once the event has reached B, its mark has moved, so the check asks the store.
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(b.revocation_mark(), mark);
    assert!(revoked(b.still_live_after(&session, mark, now()).await));
    // With no revocation announced since the mark, nothing is asked and the session stands.
    let other = a
        .issue(UserId::parse("bob").unwrap(), SessionData::empty(), now())
        .await
        .unwrap();
    let mark = b.revocation_mark();
    let session = b.authenticate(&other.token, now()).await.unwrap();
    b.still_live_after(&session, mark, now()).await.unwrap();
}
