//! Per-operation cost of the Redis store on loopback, beside SQLite and a bare `PING`, and the
//! store-level cross-node revocation latency (announce on A → event at B's subscriber).
//!
//! `cargo bench -p wsguard-store --bench redis` (starts its own redis-server on a free port;
//! needs `redis-server` installed). Prints a Markdown table; not a test, asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use wsguard_store::test_util::RedisServer;
use wsguard_store::{RedisConfig, RedisStore, SessionRecord, SessionStore, SqliteStore};
use wsguard_token::{SessionData, SessionId, UserId};

const N: usize = 5_000;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn record(uid: &str) -> SessionRecord {
    let t = now();
    SessionRecord {
        sid: SessionId::generate(),
        uid: UserId::parse(uid).unwrap(),
        data: SessionData::parse(r#"{"role":"member","tenant":"acme"}"#).unwrap(),
        created: t,
        last_active: t,
        expires_at: t + 3600,
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: total / u32::try_from(samples.len()).unwrap(),
    }
}

async fn time<F, Fut>(n: usize, mut f: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    for i in 0..n.min(200) {
        f(i).await; // warm-up
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed());
    }
    stats(samples)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, s: &Stats, ping: &Stats) {
    println!(
        "| {name} | {} | {} | {} | {:.1} |",
        us(s.p50),
        us(s.p99),
        us(s.mean),
        s.p50.as_secs_f64() / ping.p50.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let redis = RedisStore::connect(RedisConfig::new(server.url()))
        .await
        .unwrap();
    let other = RedisStore::connect(RedisConfig::new(server.url()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("s.db")).unwrap();

    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ping = time(N, |_| {
        let mut conn = conn.clone();
        async move {
            let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        }
    })
    .await;
    let _ = &mut conn;

    let live: Vec<SessionRecord> = (0..1000).map(|i| record(&format!("user{i}"))).collect();
    for r in &live {
        redis.create(r).await.unwrap();
        sqlite.create(r).await.unwrap();
    }
    let live = Arc::new(live);

    println!("| operation | p50 | p99 | mean | p50 / PING p50 |");
    println!("|---|---|---|---|---|");
    row("redis `PING` (one round trip)", &ping, &ping);
    let s = time(N, |i| {
        let (store, live) = (&redis, Arc::clone(&live));
        async move {
            store.get(&live[i % live.len()].sid).await.unwrap();
        }
    })
    .await;
    row("redis `get` (stateful authenticate)", &s, &ping);
    let s = time(N, |i| {
        let (store, live) = (&redis, Arc::clone(&live));
        async move {
            let r = &live[i % live.len()];
            store.get_with_user_mark(&r.sid, &r.uid).await.unwrap();
        }
    })
    .await;
    row(
        "redis `get_with_user_mark` (stateless authenticate)",
        &s,
        &ping,
    );
    let s = time(N, |i| {
        let (store, live) = (&redis, Arc::clone(&live));
        async move {
            let r = &live[i % live.len()];
            store.touch(&r.sid, r.created + 1).await.unwrap();
        }
    })
    .await;
    row("redis `touch`", &s, &ping);
    let s = time(N, |_| {
        let store = &redis;
        async move {
            store.create(&record("creator")).await.unwrap();
        }
    })
    .await;
    row("redis `create`", &s, &ping);
    let s = time(N, |_| {
        let store = &redis;
        async move {
            store
                .revoke_session(&SessionId::generate(), now() + 60)
                .await
                .unwrap();
        }
    })
    .await;
    row("redis `revoke_session`", &s, &ping);
    let s = time(N, |i| {
        let (store, live) = (&sqlite, Arc::clone(&live));
        async move {
            store.get(&live[i % live.len()].sid).await.unwrap();
        }
    })
    .await;
    row("sqlite `get` (for comparison)", &s, &ping);

    // Many lookups at once share the connection (requests are pipelined by the client).
    for (name, concurrency) in [("redis", 64usize), ("sqlite", 64)] {
        let started = Instant::now();
        let total = 50_000;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..concurrency {
            let live = Arc::clone(&live);
            let store: Arc<dyn SessionStore> = if name == "redis" {
                Arc::new(redis.clone())
            } else {
                Arc::new(sqlite.clone())
            };
            tasks.spawn(async move {
                for i in (t..total).step_by(concurrency) {
                    store.get(&live[i % live.len()].sid).await.unwrap();
                }
            });
        }
        tasks.join_all().await;
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!("\n{name} `get`, {concurrency} concurrent callers: {rate:.0} lookups/s");
    }

    // Cross-node revocation: A revokes, B's subscriber holds the event.
    let mut on_b = other.subscribe();
    let mut samples = Vec::new();
    for i in 0..1_300 {
        let sid = SessionId::generate();
        let t = Instant::now();
        redis.revoke_session(&sid, now() + 60).await.unwrap();
        loop {
            if let wsguard_store::Revocation::Session { sid: got, .. } = on_b.recv().await.unwrap()
                && got == sid
            {
                break;
            }
        }
        if i >= 300 {
            samples.push(t.elapsed());
        }
    }
    let s = stats(samples);
    println!(
        "\nrevoke on A → event at B's subscriber (1,000 rounds): p50 {}, p99 {}, mean {}",
        us(s.p50),
        us(s.p99),
        us(s.mean)
    );
    drop(server);
}
