//! Revocation → close latency: how long from a revoke (as the admin API does it) until the
//! client holds the 1008 close frame, with many other live sockets open.
//!
//! `cargo bench -p wsguard-gateway --bench revocation [-- SOCKETS ROUNDS]` (defaults 1000, 300).
//! Gateway, echo upstream and clients share one process and runtime on loopback, so the figure
//! includes the client's own scheduling: an upper bound of the gateway's part. Prints p50, p99,
//! max. Not a criterion bench: each sample needs a fresh live socket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wsguard_gateway::Settings;
use wsguard_gateway::config::{AdminConfig, GatewayConfig, Limit, RouteConfig};
use wsguard_session::{Mode, Sessions};
use wsguard_store::MemoryStore;
use wsguard_token::{KeyRing, SessionData, TokenPolicy, UserId, Verifier};

const ORIGIN: &str = "https://app.example.com";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sockets = args.first().copied().unwrap_or(1000);
    let rounds = args.get(1).copied().unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(sockets, rounds));
}

async fn run(sockets: usize, rounds: usize) {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(wsguard_gateway::echo::serve(echo));
    let sessions = Sessions::new(
        Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default()),
        Arc::new(MemoryStore::new()),
        Mode::Stateful,
        60,
    );
    let settings = Settings {
        gateway: GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allowed_origins: vec![ORIGIN.into()],
            // 1,001 sockets from one address: no per-address limit here.
            max_connections_per_ip: Limit::Unlimited,
            max_connections_per_user: Limit::Unlimited,
            ..GatewayConfig::default()
        },
        routes: vec![RouteConfig::new("/", format!("ws://{echo_addr}"))],
        admin: AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: "unused".into(),
            ..Default::default()
        },
        cookie_name: "wsguard_session".into(),
        cookie: Default::default(),
    };
    let running = wsguard_gateway::start(sessions.clone(), settings, "x".repeat(40).into())
        .await
        .unwrap();
    let url = format!("ws://{}/", running.public_addr);
    let connect = |token: String| {
        let url = url.clone();
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
            req.headers_mut().insert(
                "cookie",
                format!("wsguard_session={token}").parse().unwrap(),
            );
            tokio_tungstenite::connect_async(req).await.unwrap().0
        }
    };

    // Background population: `sockets` live sockets of other users.
    let mut background = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let t = sessions
            .issue(
                UserId::parse(&format!("bg{i}")).unwrap(),
                SessionData::empty(),
                now(),
            )
            .await
            .unwrap()
            .token;
        background.push(connect(t).await);
    }
    while running.registry().len() < sockets {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let issued = sessions
            .issue(
                UserId::parse("victim").unwrap(),
                SessionData::empty(),
                now(),
            )
            .await
            .unwrap();
        let mut ws = connect(issued.token).await;
        while running.registry().len() < sockets + 1 {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        sessions
            .revoke_session(&issued.claims.sid, now())
            .await
            .unwrap();
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    assert_eq!(u16::from(f.code), 1008);
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
        samples.push(start.elapsed());
        drop(ws);
        while running.registry().len() > sockets {
            tokio::task::yield_now().await;
        }
    }
    samples.sort();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(samples.len() - 1)]
    };
    println!(
        "revocation -> close frame at the client, {sockets} other live sockets, {rounds} rounds: \
         p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
    drop(background);
    running.shutdown();
}
