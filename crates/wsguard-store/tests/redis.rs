//! Redis-only behaviour, against real `redis-server` processes on free ports of 127.0.0.1: the
//! revocation feed between instances (nodes), its resynchronisation, probes and faults, and the
//! shared primitives (tickets, connection counts, rates, node heartbeats) with their Lua
//! scripts. The conformance suite (`tests/conformance.rs`) covers the `SessionStore` contract.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::Receiver;
use wsguard_store::test_util::{RedisServer, TcpCut};
use wsguard_store::{
    GcraRate, Lookup, RedisConfig, RedisPassword, RedisStore, Revocation, SessionRecord,
    SessionStore, StoreError, TicketIssue,
};
use wsguard_token::{SessionData, SessionId, UserId};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("{e}"))
}

/// Short timeouts, so faults show quickly.
fn config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.connect_timeout = Duration::from_secs(1);
    c.command_timeout = Duration::from_millis(500);
    c.probe_interval = Duration::from_millis(200);
    c
}

async fn node(url: String) -> RedisStore {
    RedisStore::connect(config(url)).await.unwrap()
}

fn record(uid: &str) -> SessionRecord {
    let t = now();
    SessionRecord {
        sid: SessionId::generate(),
        uid: UserId::parse(uid).unwrap(),
        data: SessionData::parse(r#"{"role":"member"}"#).unwrap(),
        created: t,
        last_active: t,
        expires_at: t + 3600,
    }
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// The next event within a generous bound.
async fn next(events: &mut Receiver<Revocation>) -> Revocation {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the channel is open")
}

/// Waits until `f` holds (polled), or fails after `within`.
async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_nodes_see_each_others_revocations_once() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let mut on_b = b.subscribe();
    let mut on_a = a.subscribe();
    let counted = b.revocations_announced().unwrap();
    let r = record("alice");
    a.create(&r).await.unwrap();
    assert!(matches!(b.get(&r.sid).await.unwrap(), Lookup::Live(_)));

    let started = Instant::now();
    a.revoke_session(&r.sid, now() + 100).await.unwrap();
    let want = Revocation::Session {
        sid: r.sid.clone(),
        uid: Some(r.uid.clone()),
    };
    assert_eq!(next(&mut on_b).await, want);
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    assert_eq!(b.get(&r.sid).await.unwrap(), Lookup::Revoked);
    // B counts what it received (Sessions::still_live_after relies on it).
    assert_eq!(b.revocations_announced().unwrap(), counted + 1);

    let at = now();
    b.revoke_user(&r.uid, at, at + 100).await.unwrap();
    let user = Revocation::User {
        uid: r.uid.clone(),
        at,
    };
    assert!(
        matches!(next(&mut on_a).await, Revocation::Session { .. }),
        "A's own, locally"
    );
    assert_eq!(next(&mut on_a).await, user);
    assert_eq!(next(&mut on_b).await, user, "B's own, locally");
    // Neither sees its own revocation twice (probes pass meanwhile).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(on_a.try_recv().is_err());
    assert!(on_b.try_recv().is_err());
}

#[tokio::test]
async fn a_trimmed_position_makes_subscribers_resync() {
    let server = server();
    let cut = TcpCut::start(server.addr()).unwrap();
    let a = node(server.url()).await;
    let b = node(cut.url()).await;
    let mut on_b = b.subscribe();
    eventually(Duration::from_secs(5), "B's feed verified", || {
        b.feed_health().unwrap().last_verified.is_some()
    })
    .await;

    cut.sever();
    eventually(Duration::from_secs(5), "B's feed down", || {
        !b.feed_health().unwrap().connected
    })
    .await;
    let lost = SessionId::generate();
    a.revoke_session(&lost, now() + 100).await.unwrap();
    // Everything B has not read is trimmed away, then one more revocation is made.
    let mut conn = raw(&server).await;
    let _: u64 = redis::cmd("XTRIM")
        .arg("wsguard:{rev}:stream")
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let kept = SessionId::generate();
    a.revoke_session(&kept, now() + 100).await.unwrap();
    let counted = b.revocations_announced().unwrap();
    cut.restore();

    assert_eq!(next(&mut on_b).await, Revocation::Resync);
    assert_eq!(
        next(&mut on_b).await,
        Revocation::Session {
            sid: kept,
            uid: None
        }
    );
    assert!(
        b.revocations_announced().unwrap() >= counted + 2,
        "resync counted"
    );
    assert!(b.feed_health().unwrap().resyncs >= 1);
}

#[tokio::test]
async fn a_flushed_store_makes_subscribers_resync() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let mut on_b = b.subscribe();
    a.revoke_session(&SessionId::generate(), now() + 100)
        .await
        .unwrap();
    assert!(matches!(next(&mut on_b).await, Revocation::Session { .. }));
    server.flushall().unwrap();
    // The next entry restarts the sequence: B cannot know what it missed.
    a.revoke_session(&SessionId::generate(), now() + 100)
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await, Revocation::Resync);
}

#[tokio::test]
async fn a_revocation_made_while_cut_off_arrives_after_reconnect() {
    let server = server();
    let cut = TcpCut::start(server.addr()).unwrap();
    let a = node(server.url()).await;
    let b = node(cut.url()).await;
    let mut on_b = b.subscribe();
    cut.sever();
    eventually(Duration::from_secs(5), "B's feed down", || {
        !b.feed_health().unwrap().connected
    })
    .await;
    // B's commands fail closed, quickly.
    let started = Instant::now();
    assert!(matches!(
        b.get(&SessionId::generate()).await,
        Err(StoreError::Backend(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(1500));

    // The time sent, not a later `now()`: the reconnection may take B past a second.
    let at = now();
    a.revoke_user(&uid("alice"), at, at + 100).await.unwrap();
    cut.restore();
    assert_eq!(
        next(&mut on_b).await,
        Revocation::User {
            uid: uid("alice"),
            at
        },
        "resumed from its position: no resync needed"
    );
    eventually(Duration::from_secs(5), "B's feed verified again", || {
        let h = b.feed_health().unwrap();
        h.connected
            && h.last_verified
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
    })
    .await;
    assert_eq!(b.feed_health().unwrap().resyncs, 0);
}

#[tokio::test]
async fn a_silent_feed_is_noticed_by_its_probes() {
    let server = server();
    let cut = TcpCut::start(server.addr()).unwrap();
    let b = node(cut.url()).await;
    eventually(Duration::from_secs(5), "verified", || {
        b.feed_health().unwrap().last_verified.is_some()
    })
    .await;
    // Nothing is closed; bytes just stop (a half-open connection, a stuck proxy).
    cut.freeze();
    let frozen_at = Instant::now();
    // probe_interval (200 ms) + command_timeout (500 ms) bound each read and each probe.
    eventually(Duration::from_secs(5), "the feed gives up", || {
        !b.feed_health().unwrap().connected
    })
    .await;
    assert!(frozen_at.elapsed() < Duration::from_secs(3));
    let h = b.feed_health().unwrap();
    assert!(!h.is_fresh(Instant::now(), Duration::from_millis(100)));
    cut.restore();
    eventually(Duration::from_secs(10), "verified again", || {
        b.feed_health()
            .unwrap()
            .is_fresh(Instant::now(), Duration::from_millis(500))
    })
    .await;
}

#[tokio::test]
async fn redis_killed_fails_fast_and_restarted_recovers() {
    let mut server = RedisServer::start_persistent().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let mut on_b = b.subscribe();
    let r = record("alice");
    a.create(&r).await.unwrap();

    server.kill();
    for store in [&a, &b] {
        let started = Instant::now();
        let got = store.get(&r.sid).await;
        assert!(matches!(got, Err(StoreError::Backend(_))), "{got:?}");
        // command_timeout is 500 ms: never a hang.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    assert!(a.revoke_session(&r.sid, now() + 100).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(1500));
    eventually(Duration::from_secs(5), "feeds down", || {
        !a.feed_health().unwrap().connected && !b.feed_health().unwrap().connected
    })
    .await;

    server.restart().unwrap();
    // The data was kept (append-only file), and the stores reconnect by themselves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match b.get(&r.sid).await {
            Ok(Lookup::Live(got)) => {
                assert_eq!(got, r);
                break;
            }
            other => assert!(Instant::now() < deadline, "not back: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.revoke_session(&r.sid, now() + 100).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "A cannot revoke after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B's feed resumed: the revocation reaches it (a Resync first is allowed, not required).
    let mut got = next(&mut on_b).await;
    if got == Revocation::Resync {
        got = next(&mut on_b).await;
    }
    assert_eq!(
        got,
        Revocation::Session {
            sid: r.sid.clone(),
            uid: Some(r.uid.clone())
        }
    );
    eventually(Duration::from_secs(10), "feeds verified", || {
        [&a, &b].iter().all(|s| {
            s.feed_health()
                .unwrap()
                .is_fresh(Instant::now(), Duration::from_secs(1))
        })
    })
    .await;
}

#[test]
fn a_missing_redis_server_fails_with_how_to_install_it() {
    let err = RedisServer::start_program(
        std::path::Path::new("/nonexistent/redis-server"),
        false,
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("apt-get install -y redis-server"), "{err}");
}

#[tokio::test]
async fn connect_fails_fast_and_clearly_when_redis_is_absent() {
    let port = wsguard_store::test_util::free_port().unwrap();
    let started = Instant::now();
    let err = RedisStore::connect(config(format!("redis://127.0.0.1:{port}/0")))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn password_and_username_are_sent_and_never_shown() {
    let server = RedisServer::start_with(false, &["--requirepass", "s3cret-pass"])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = config(server.url());
    c.password = Some(RedisPassword::new("s3cret-pass"));
    let store = RedisStore::connect(c.clone()).await.unwrap();
    assert!(
        store
            .server_info()
            .await
            .unwrap()
            .version
            .starts_with(char::is_numeric)
    );
    assert!(!format!("{store:?} {c:?}").contains("s3cret"));

    c.password = Some(RedisPassword::new("wrong-pass"));
    let err = RedisStore::connect(c).await.unwrap_err().to_string();
    assert!(!err.contains("wrong-pass"), "{err}");
    let mut c = config(format!(
        "redis://default:wrong-pass@127.0.0.1:{}/0",
        server.port()
    ));
    c.username = Some("default".into());
    let err = RedisStore::connect(c).await.unwrap_err().to_string();
    assert!(!err.contains("wrong-pass"), "{err}");

    // An ACL user.
    let mut admin = config(server.url());
    admin.password = Some(RedisPassword::new("s3cret-pass"));
    drop(store);
    let mut conn = redis::Client::open(format!(
        "redis://:s3cret-pass@127.0.0.1:{}/0",
        server.port()
    ))
    .unwrap()
    .get_multiplexed_async_connection()
    .await
    .unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("gw")
        .arg("on")
        .arg(">gw-pass")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut c = config(server.url());
    c.username = Some("gw".into());
    c.password = Some(RedisPassword::new("gw-pass"));
    let store = RedisStore::connect(c).await.unwrap();
    store.create(&record("alice")).await.unwrap();
}

#[tokio::test]
async fn touch_is_atomic_under_concurrency() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let r = record("alice");
    a.create(&r).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let sid = r.sid.clone();
        let at = r.created + 1 + (i * 7919) % 50;
        tasks.spawn(async move { store.touch(&sid, at).await.unwrap() });
    }
    assert!(tasks.join_all().await.into_iter().all(|live| live));
    let Lookup::Live(got) = a.get(&r.sid).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        got.last_active,
        r.created + 50,
        "the largest of every touch"
    );
}

#[tokio::test]
async fn keys_expire_by_themselves_and_use_hash_tags() {
    let server = server();
    let store = node(server.url()).await;
    let r = record("alice");
    store.create(&r).await.unwrap();
    store
        .revoke_user(&uid("bob"), now(), now() + 100)
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let sid = r.sid.as_str();
    for (key, expires) in [
        (format!("wsguard:s:{{{sid}}}"), Some(r.expires_at)),
        ("wsguard:u:{alice}:s".to_owned(), Some(r.expires_at)),
        ("wsguard:u:{bob}:r".to_owned(), Some(now() + 100)),
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
        let at: i64 = redis::cmd("EXPIRETIME")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let want = i64::try_from(expires.unwrap()).unwrap();
        assert!((at - want).abs() <= 1, "{key}: {at} vs {want}");
    }
    // A tombstone is kept as long as the session could have lived.
    store.revoke_session(&r.sid, now()).await.unwrap();
    let at: i64 = redis::cmd("EXPIRETIME")
        .arg(format!("wsguard:s:{{{sid}}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(at, i64::try_from(r.expires_at).unwrap());
}

#[tokio::test]
async fn a_ticket_is_redeemed_exactly_once_across_nodes() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let alice = uid("alice");
    for round in 0..5 {
        let ticket = format!("ticket-{round}-{}", SessionId::generate().as_str());
        assert_eq!(
            a.issue_ticket(
                &ticket,
                &alice,
                "cookie-value",
                Duration::from_secs(30),
                100
            )
            .await
            .unwrap(),
            TicketIssue::Issued
        );
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let ticket = ticket.clone();
            tasks.spawn(async move { store.redeem_ticket(&ticket).await.unwrap() });
        }
        let redeemed: Vec<String> = tasks.join_all().await.into_iter().flatten().collect();
        assert_eq!(redeemed, vec!["cookie-value".to_owned()]);
    }
    // Stored by hash only.
    let secret = "find-me-if-you-can";
    a.issue_ticket(secret, &alice, "c", Duration::from_secs(30), 100)
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().all(|k| !k.contains(secret)), "{keys:?}");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("wsguard:u:{alice}:t")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(members.iter().all(|m| !m.contains(secret)));
}

#[tokio::test]
async fn tickets_expire_and_are_bounded_per_user() {
    let server = server();
    let store = node(server.url()).await;
    let (alice, bob) = (uid("alice"), uid("bob"));
    let ttl = Duration::from_millis(300);
    for t in ["t1", "t2"] {
        assert_eq!(
            store.issue_ticket(t, &alice, "c", ttl, 2).await.unwrap(),
            TicketIssue::Issued
        );
    }
    assert_eq!(
        store.issue_ticket("t3", &alice, "c", ttl, 2).await.unwrap(),
        TicketIssue::TooMany
    );
    assert_eq!(
        store.redeem_ticket("t3").await.unwrap(),
        None,
        "refused, not stored"
    );
    assert_eq!(
        store.issue_ticket("b1", &bob, "c", ttl, 2).await.unwrap(),
        TicketIssue::Issued,
        "per user"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.redeem_ticket("t1").await.unwrap(), None, "expired");
    assert_eq!(
        store.issue_ticket("t4", &alice, "c", ttl, 2).await.unwrap(),
        TicketIssue::Issued,
        "the bound frees up as tickets expire"
    );
    // The TTL is capped at 30 s.
    store
        .issue_ticket("long", &bob, "c", Duration::from_secs(3600), 5)
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("wsguard:t:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl <= 30_000, "{key}: {pttl}");
    }
}

#[tokio::test]
async fn connections_are_counted_across_nodes_with_a_limit() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let ttl = Duration::from_secs(30);
    let (on_a, on_b) = (
        a.connection_counter("node-a", ttl).unwrap(),
        b.connection_counter("node-b", ttl).unwrap(),
    );
    let alice = uid("alice");
    assert!(on_a.acquire(&alice, "c1", 2).await.unwrap().admitted);
    let second = on_b.acquire(&alice, "c2", 2).await.unwrap();
    assert!(second.admitted);
    assert_eq!(second.count, 2);
    let third = on_a.acquire(&alice, "c3", 2).await.unwrap();
    assert!(!third.admitted);
    assert_eq!(third.count, 2);
    assert!(
        on_b.acquire(&uid("bob"), "c3", 2).await.unwrap().admitted,
        "per user"
    );
    // Acquiring an entry already held is idempotent.
    assert!(on_b.acquire(&alice, "c2", 2).await.unwrap().admitted);
    on_a.release(&alice, "c1").await.unwrap();
    assert!(on_b.acquire(&alice, "c4", 2).await.unwrap().admitted);
    assert_eq!(on_b.held_here(), 3);
    assert_eq!(on_b.heartbeat().await.unwrap(), 3);
}

#[tokio::test]
async fn concurrent_acquires_never_exceed_the_limit() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let ttl = Duration::from_secs(30);
    let counters = Arc::new([
        a.connection_counter("node-a", ttl).unwrap(),
        b.connection_counter("node-b", ttl).unwrap(),
    ]);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let counters = Arc::clone(&counters);
        tasks.spawn(async move {
            counters[i % 2]
                .acquire(&uid("alice"), &format!("c{i}"), 5)
                .await
                .unwrap()
                .admitted
        });
    }
    let admitted = tasks.join_all().await.into_iter().filter(|a| *a).count();
    assert_eq!(admitted, 5);
}

#[tokio::test]
async fn a_dead_nodes_connections_expire_and_heartbeats_keep_live_ones() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let ttl = Duration::from_millis(400);
    let alive = a.connection_counter("node-a", ttl).unwrap();
    let crashed = b.connection_counter("node-b", ttl).unwrap();
    let alice = uid("alice");
    assert!(alive.acquire(&alice, "c1", 2).await.unwrap().admitted);
    assert!(crashed.acquire(&alice, "c2", 2).await.unwrap().admitted);
    drop(crashed); // node B dies: no release, no heartbeat
    assert!(!alive.acquire(&alice, "c3", 2).await.unwrap().admitted);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        alive.heartbeat().await.unwrap();
    }
    // 600 ms later: B's entry is gone, A's was kept by its heartbeats.
    let got = alive.acquire(&alice, "c3", 2).await.unwrap();
    assert!(got.admitted);
    assert_eq!(got.count, 2, "c1 (kept alive) and c3");
}

#[tokio::test]
async fn gcra_allows_the_burst_then_refills_at_the_rate() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    let alice = uid("alice");
    let rate = GcraRate {
        per_second: 10.0,
        burst: 5,
    };
    // The burst, shared by two nodes.
    for i in 0..5 {
        let store = if i % 2 == 0 { &a } else { &b };
        let g = store
            .take_rate(&alice, "messages", rate, 1, false)
            .await
            .unwrap();
        assert_eq!(g.granted, 1, "unit {i}");
    }
    let refused = a
        .take_rate(&alice, "messages", rate, 1, false)
        .await
        .unwrap();
    assert_eq!(refused.granted, 0);
    let wait = refused.retry_after.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    // Other rules and users are separate.
    assert_eq!(
        a.take_rate(&alice, "bytes", rate, 5, false)
            .await
            .unwrap()
            .granted,
        5
    );
    assert_eq!(
        a.take_rate(&uid("bob"), "messages", rate, 1, false)
            .await
            .unwrap()
            .granted,
        1
    );
    // Refill: one unit per 100 ms.
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert_eq!(
        b.take_rate(&alice, "messages", rate, 1, false)
            .await
            .unwrap()
            .granted,
        1
    );
    assert_eq!(
        b.take_rate(&alice, "messages", rate, 1, false)
            .await
            .unwrap()
            .granted,
        0
    );
    // A lease: after 350 ms, three units have come back; asking for up to 10 gets them.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let lease = a
        .take_rate(&alice, "messages", rate, 10, true)
        .await
        .unwrap();
    assert!((3..=4).contains(&lease.granted), "{lease:?}");
    // All or nothing: more than the burst can never be had at once.
    let never = a
        .take_rate(&alice, "messages", rate, 6, false)
        .await
        .unwrap();
    assert_eq!(never.granted, 0);
    assert_eq!(never.retry_after, None);
    // After a full refill (500 ms), the whole burst at once.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        a.take_rate(&alice, "messages", rate, 5, false)
            .await
            .unwrap()
            .granted,
        5
    );
    assert!(
        a.take_rate(&alice, "no spaces", rate, 1, false)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn nodes_are_listed_by_their_heartbeats() {
    let server = server();
    let (a, b) = (node(server.url()).await, node(server.url()).await);
    a.node_heartbeat(&wsguard_store::NodeHeartbeat {
        id: "node-a".into(),
        address: "127.0.0.1:8080".into(),
        sockets: 3,
    })
    .await
    .unwrap();
    b.node_heartbeat(&wsguard_store::NodeHeartbeat {
        id: "node-b".into(),
        address: "127.0.0.1:8081".into(),
        sockets: 0,
    })
    .await
    .unwrap();
    let seen = a.list_nodes(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        seen.iter()
            .map(|n| (n.id.as_str(), n.address.as_str(), n.sockets))
            .collect::<Vec<_>>(),
        vec![
            ("node-a", "127.0.0.1:8080", 3),
            ("node-b", "127.0.0.1:8081", 0)
        ]
    );
    assert!(seen.iter().all(|n| n.age < Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.node_heartbeat(&wsguard_store::NodeHeartbeat {
        id: "node-a".into(),
        address: "127.0.0.1:8080".into(),
        sockets: 4,
    })
    .await
    .unwrap();
    let recent = b.list_nodes(Duration::from_millis(200)).await.unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0].sockets, 4);
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    let server = server();
    let store = node(server.url()).await;
    let r = record("alice");
    store.create(&r).await.unwrap();
    server.command("SCRIPT FLUSH").unwrap();
    assert!(store.touch(&r.sid, r.created + 5).await.unwrap());
    let other = record("alice");
    store.create(&other).await.unwrap();
    assert_eq!(store.list_user(&r.uid).await.unwrap().len(), 2);
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let server = RedisServer::start_tls(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("rediss://localhost:{}/0", server.tls_port().unwrap());

    // The system roots do not know this CA: refused.
    assert!(RedisStore::connect(config(url.clone())).await.is_err());

    let mut tls = config(url);
    tls.tls_ca_file = Some(cert);
    let (a, b) = (
        RedisStore::connect(tls.clone()).await.unwrap(),
        RedisStore::connect(tls).await.unwrap(),
    );
    let mut on_b = b.subscribe();
    let r = record("alice");
    a.create(&r).await.unwrap();
    assert!(matches!(b.get(&r.sid).await.unwrap(), Lookup::Live(_)));
    a.revoke_session(&r.sid, now() + 100).await.unwrap();
    assert!(matches!(next(&mut on_b).await, Revocation::Session { .. }));
}

#[tokio::test]
async fn a_corrupt_record_is_an_error_not_a_panic() {
    let server = server();
    let store = node(server.url()).await;
    let sid = SessionId::generate();
    let mut conn = raw(&server).await;
    let () = redis::cmd("HSET")
        .arg(format!("wsguard:s:{{{}}}", sid.as_str()))
        .arg("u")
        .arg("alice")
        .arg("d")
        .arg("{}")
        .arg("c")
        .arg("not a number")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store.get(&sid).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    let err = store
        .get_with_user_mark(&sid, &uid("alice"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[tokio::test]
async fn a_lazy_store_starts_without_redis_and_works_when_it_comes() {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.kill();
    let store = RedisStore::connect_lazy(config(server.url())).unwrap();
    let mut events = store.subscribe();
    let started = Instant::now();
    assert!(matches!(
        store.get(&SessionId::generate()).await,
        Err(StoreError::Backend(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(!store.feed_health().unwrap().connected);
    assert!(RedisStore::connect_lazy(config("http://nope".into())).is_err());

    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = record("alice");
    while store.create(&r).await.is_err() {
        assert!(Instant::now() < deadline, "not back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its feed could not know what happened before it first read the stream.
    assert_eq!(next(&mut events).await, Revocation::Resync);
    eventually(Duration::from_secs(10), "feed verified", || {
        store
            .feed_health()
            .unwrap()
            .is_fresh(Instant::now(), Duration::from_secs(1))
    })
    .await;
    let other = node(server.url()).await;
    other.revoke_session(&r.sid, now() + 100).await.unwrap();
    assert!(matches!(
        next(&mut events).await,
        Revocation::Session { .. }
    ));
}
