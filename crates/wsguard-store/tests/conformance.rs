//! The store conformance suite: the same behaviour, checked against every backend.
//!
//! Each `check_*` function takes a fresh store; the `backends!` macro runs all of them against
//! `MemoryStore`, `SqliteStore` and `RedisStore` (a real `redis-server` per test, started on a
//! free port; missing, the test fails saying how to install it). SQLite-only tests
//! (persistence across reopen, revocations seen by another instance on the same file) follow;
//! Redis-only ones are in `tests/redis.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::time::Duration;

use wsguard_store::test_util::RedisServer;
use wsguard_store::{
    Lookup, MemoryStore, RedisConfig, RedisStore, Revocation, SessionRecord, SessionStore,
    SqliteStore,
};
use wsguard_token::{SessionData, SessionId, UserId};

/// "Now" for every check: the real clock, read once per test process. Redis forgets a key at
/// its absolute expiry by its own clock (`EXPIREAT`), so a fixed time in the past would make
/// it forget every session at once. Every check is written relative to this time, so memory
/// and SQLite (which never read the clock) see exactly what they saw with a fixed one.
fn now() -> u64 {
    static NOW: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    });
    *NOW
}

fn record(uid: &str, created: u64) -> SessionRecord {
    SessionRecord {
        sid: SessionId::generate(),
        uid: UserId::parse(uid).unwrap(),
        data: SessionData::parse(r#"{"role":"admin","n":1}"#).unwrap(),
        created,
        last_active: created,
        expires_at: created + 3600,
    }
}

async fn check_create_get(store: impl SessionStore) {
    let r = record("alice", now());
    store.create(&r).await.unwrap();
    assert_eq!(store.get(&r.sid).await.unwrap(), Lookup::Live(r.clone()));
    assert_eq!(
        store.get(&SessionId::generate()).await.unwrap(),
        Lookup::Unknown
    );
    assert!(matches!(
        store.create(&r).await,
        Err(wsguard_store::StoreError::Duplicate)
    ));
}

async fn check_touch_is_monotonic(store: impl SessionStore) {
    let r = record("alice", now());
    store.create(&r).await.unwrap();
    assert!(store.touch(&r.sid, now() + 100).await.unwrap());
    assert!(store.touch(&r.sid, now() + 50).await.unwrap());
    let Lookup::Live(got) = store.get(&r.sid).await.unwrap() else {
        panic!("not live")
    };
    assert_eq!(got.last_active, now() + 100);
    assert!(!store.touch(&SessionId::generate(), now()).await.unwrap());
}

async fn check_revoke_session(store: impl SessionStore) {
    let mut events = store.subscribe();
    let r = record("alice", now());
    let other = record("alice", now());
    store.create(&r).await.unwrap();
    store.create(&other).await.unwrap();
    assert_eq!(
        store.revoke_session(&r.sid, now() + 10).await.unwrap(),
        Some(r.uid.clone())
    );
    assert_eq!(store.get(&r.sid).await.unwrap(), Lookup::Revoked);
    assert!(matches!(
        store.get(&other.sid).await.unwrap(),
        Lookup::Live(_)
    ));
    assert!(
        !store.touch(&r.sid, now() + 1).await.unwrap(),
        "a revoked session cannot be touched"
    );
    assert!(matches!(
        store.create(&r).await,
        Err(wsguard_store::StoreError::Duplicate)
    ));
    assert_eq!(
        events.recv().await.unwrap(),
        Revocation::Session {
            sid: r.sid.clone(),
            uid: Some(r.uid.clone())
        }
    );
    // Unknown (e.g. stateless) ids are tombstoned too.
    let stateless = SessionId::generate();
    assert_eq!(
        store.revoke_session(&stateless, now() + 10).await.unwrap(),
        None
    );
    assert_eq!(store.get(&stateless).await.unwrap(), Lookup::Revoked);
    assert_eq!(
        events.recv().await.unwrap(),
        Revocation::Session {
            sid: stateless,
            uid: None
        }
    );
}

async fn check_revoke_user(store: impl SessionStore) {
    let mut events = store.subscribe();
    let a1 = record("alice", now() - 10);
    let a2 = record("alice", now());
    let later = record("alice", now() + 5);
    let b = record("bob", now());
    for r in [&a1, &a2, &later, &b] {
        store.create(r).await.unwrap();
    }
    let alice = a1.uid.clone();
    assert_eq!(store.user_revoked_at(&alice).await.unwrap(), None);
    assert_eq!(
        store.revoke_user(&alice, now(), now() + 100).await.unwrap(),
        2
    );
    assert_eq!(store.get(&a1.sid).await.unwrap(), Lookup::Revoked);
    assert_eq!(store.get(&a2.sid).await.unwrap(), Lookup::Revoked);
    assert!(
        matches!(store.get(&later.sid).await.unwrap(), Lookup::Live(_)),
        "created after"
    );
    assert!(matches!(store.get(&b.sid).await.unwrap(), Lookup::Live(_)));
    assert_eq!(store.user_revoked_at(&alice).await.unwrap(), Some(now()));
    assert_eq!(
        events.recv().await.unwrap(),
        Revocation::User {
            uid: alice.clone(),
            at: now()
        }
    );
    // A later revocation moves the marker forward, never back.
    store
        .revoke_user(&alice, now() - 50, now() + 100)
        .await
        .unwrap();
    assert_eq!(store.user_revoked_at(&alice).await.unwrap(), Some(now()));
}

async fn check_list_user(store: impl SessionStore) {
    let a2 = record("alice", now() + 1);
    let a1 = record("alice", now());
    let b = record("bob", now());
    for r in [&a2, &a1, &b] {
        store.create(r).await.unwrap();
    }
    let listed = store.list_user(&a1.uid).await.unwrap();
    assert_eq!(listed, vec![a1.clone(), a2.clone()]);
    store.revoke_session(&a1.sid, now()).await.unwrap();
    assert_eq!(store.list_user(&a1.uid).await.unwrap(), vec![a2]);
    assert_eq!(
        store
            .list_user(&UserId::parse("nobody").unwrap())
            .await
            .unwrap(),
        vec![]
    );
}

async fn check_purge(store: impl SessionStore) {
    let old = record("alice", now() - 4000); // expires now() - 400
    let live = record("alice", now());
    store.create(&old).await.unwrap();
    store.create(&live).await.unwrap();
    let gone = SessionId::generate();
    store.revoke_session(&gone, now() - 1).await.unwrap();
    store
        .revoke_user(&UserId::parse("bob").unwrap(), now() - 100, now())
        .await
        .unwrap();
    assert_eq!(store.purge(now()).await.unwrap(), 3);
    assert_eq!(store.get(&old.sid).await.unwrap(), Lookup::Unknown);
    assert_eq!(store.get(&gone).await.unwrap(), Lookup::Unknown);
    assert!(matches!(
        store.get(&live.sid).await.unwrap(),
        Lookup::Live(_)
    ));
    assert_eq!(
        store
            .user_revoked_at(&UserId::parse("bob").unwrap())
            .await
            .unwrap(),
        None
    );
    // A tombstone is kept at least as long as the session it replaced could have lived.
    store.revoke_session(&live.sid, now()).await.unwrap();
    assert_eq!(store.purge(now() + 10).await.unwrap(), 0);
    assert_eq!(store.get(&live.sid).await.unwrap(), Lookup::Revoked);
}

async fn check_concurrent_use(store: impl SessionStore) {
    let store = std::sync::Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = std::sync::Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let r = record(&format!("user{}", i % 4), now());
            store.create(&r).await.unwrap();
            store.touch(&r.sid, now() + 1).await.unwrap();
            r.sid
        }));
    }
    for t in tasks {
        let sid = t.await.unwrap();
        assert!(matches!(store.get(&sid).await.unwrap(), Lookup::Live(_)));
    }
    assert_eq!(
        store
            .list_user(&UserId::parse("user0").unwrap())
            .await
            .unwrap()
            .len(),
        4
    );
}

/// Many lookups at once (SQLite answers those asked in one turn of the runtime as one batch):
/// each gets its own session's answer, and one whose caller gave up does not hold up the rest.
async fn check_concurrent_lookups(store: impl SessionStore) {
    let store = std::sync::Arc::new(store);
    let mut want = Vec::new();
    for i in 0..30 {
        let r = record(&format!("user{}", i % 3), now());
        store.create(&r).await.unwrap();
        if i % 3 == 0 {
            store.revoke_session(&r.sid, now() + 100).await.unwrap();
            want.push((r.sid, None, "revoked"));
        } else {
            want.push((r.sid.clone(), Some(r.uid), "live"));
        }
    }
    for _ in 0..10 {
        want.push((SessionId::generate(), None, "unknown"));
    }
    // Asked for, polled once (SQLite: queued for the next batch), then given up.
    {
        let mut abandoned = std::pin::pin!(store.get(&want[1].0));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = abandoned.as_mut().poll(&mut cx);
    }
    let mut lookups = tokio::task::JoinSet::new();
    for (sid, uid, kind) in want {
        let store = std::sync::Arc::clone(&store);
        lookups.spawn(async move {
            let got = store.get(&sid).await.unwrap();
            match (kind, got) {
                ("live", Lookup::Live(r)) => {
                    assert_eq!(r.sid, sid);
                    assert_eq!(Some(r.uid), uid);
                }
                ("revoked", Lookup::Revoked) | ("unknown", Lookup::Unknown) => {}
                (kind, got) => panic!("{kind} session answered {got:?}"),
            }
        });
    }
    let answered = tokio::time::timeout(Duration::from_secs(30), lookups.join_all())
        .await
        .expect("every lookup is answered");
    assert_eq!(answered.len(), 40);
}

async fn check_revocations_are_counted(store: impl SessionStore) {
    let count = || {
        store
            .revocations_announced()
            .expect("this backend counts its events")
    };
    let r = record("alice", now());
    store.create(&r).await.unwrap();
    let before = count();
    store.touch(&r.sid, now() + 1).await.unwrap();
    assert_eq!(count(), before, "no revocation, no count");
    store.revoke_session(&r.sid, now() + 100).await.unwrap();
    assert_eq!(count(), before + 1);
    store.revoke_user(&r.uid, now(), now() + 100).await.unwrap();
    assert_eq!(count(), before + 2);
}

macro_rules! backends {
    ($($check:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(MemoryStore::new()).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$check(SqliteStore::open(dir.path().join("s.db")).unwrap()).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
                    let store = RedisStore::connect(RedisConfig::new(server.url())).await.unwrap();
                    super::$check(store).await;
                    drop(server);
                }
            )*
        }
    };
}

backends!(
    check_create_get,
    check_touch_is_monotonic,
    check_revoke_session,
    check_revoke_user,
    check_list_user,
    check_purge,
    check_concurrent_use,
    check_concurrent_lookups,
    check_revocations_are_counted,
);

#[tokio::test]
async fn sqlite_sessions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (live, revoked) = (record("alice", now()), record("alice", now()));
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create(&live).await.unwrap();
        store.create(&revoked).await.unwrap();
        store.touch(&live.sid, now() + 30).await.unwrap();
        store
            .revoke_session(&revoked.sid, now() + 100)
            .await
            .unwrap();
        store
            .revoke_user(&UserId::parse("bob").unwrap(), now(), now() + 100)
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let Lookup::Live(got) = store.get(&live.sid).await.unwrap() else {
        panic!("lost")
    };
    assert_eq!(got.last_active, now() + 30);
    assert_eq!(store.get(&revoked.sid).await.unwrap(), Lookup::Revoked);
    assert_eq!(
        store
            .user_revoked_at(&UserId::parse("bob").unwrap())
            .await
            .unwrap(),
        Some(now())
    );
}

#[cfg(unix)]
#[test]
fn sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    SqliteStore::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Two instances on one file stand for the gateway and the CLI: a revoke made by one reaches the
/// other's subscribers through the revocation log, exactly once.
#[tokio::test]
async fn sqlite_revocations_reach_other_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let gateway = SqliteStore::open_with_poll_interval(&path, Duration::from_millis(5)).unwrap();
    let cli = SqliteStore::open(&path).unwrap();
    let mut events = gateway.subscribe();
    let announced = gateway.revocations_announced().unwrap();
    let r = record("alice", now());
    cli.create(&r).await.unwrap();
    cli.revoke_session(&r.sid, now() + 100).await.unwrap();
    cli.revoke_user(&r.uid, now(), now() + 100).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first,
        Revocation::Session {
            sid: r.sid.clone(),
            uid: Some(r.uid.clone())
        }
    );
    let second = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second,
        Revocation::User {
            uid: r.uid.clone(),
            at: now()
        }
    );
    // Revocations made by another process are counted when the poller announces them.
    assert_eq!(gateway.revocations_announced().unwrap(), announced + 2);
    // The gateway's own revocations are broadcast once, not again by its poller.
    let own = SessionId::generate();
    gateway.revoke_session(&own, now()).await.unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        Revocation::Session {
            sid: own,
            uid: None
        }
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        events.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
}

#[tokio::test]
async fn sqlite_history_is_not_replayed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let cli = SqliteStore::open(&path).unwrap();
    cli.revoke_session(&SessionId::generate(), now())
        .await
        .unwrap();
    let gateway = SqliteStore::open_with_poll_interval(&path, Duration::from_millis(5)).unwrap();
    let mut events = gateway.subscribe();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn sqlite_rejects_a_corrupt_row_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO sessions VALUES ('short', 'alice', '{}', 1, 1, 9999999999)",
        [],
    )
    .unwrap();
    let err = store
        .list_user(&UserId::parse("alice").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, wsguard_store::StoreError::Corrupt(_)),
        "{err}"
    );
}
