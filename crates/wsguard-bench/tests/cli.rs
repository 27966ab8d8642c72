//! `wsguard-bench` through the real binary against tiny servers started in the test on
//! 127.0.0.1:0: an echo server (which records handshake headers, peer addresses and open
//! sockets) and a server that refuses every handshake with 403. Runs are one second or less;
//! nothing here asserts on speed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report
#![allow(clippy::result_large_err)] // the handshake callbacks have tungstenite's signature

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// What the echo server saw.
#[derive(Default)]
struct Seen {
    open: AtomicUsize,
    peers: Mutex<HashSet<IpAddr>>,
    /// (origin, cookie) of every handshake.
    headers: Mutex<Vec<(String, String)>>,
}

struct EchoServer {
    url: String,
    seen: Arc<Seen>,
    /// Sending on it makes the server close every open socket (1000).
    close_all: watch::Sender<()>,
}

async fn echo_server() -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/echo", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let (close_all, close_rx) = watch::channel(());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let seen = Arc::clone(&s);
            let mut close_rx = close_rx.clone();
            tokio::spawn(async move {
                let record = |req: &Request, resp: Response| {
                    let h = |name| {
                        req.headers()
                            .get_all(name)
                            .iter()
                            .map(|v| v.to_str().unwrap().to_owned())
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    seen.headers
                        .lock()
                        .unwrap()
                        .push((h("origin"), h("cookie")));
                    Ok::<_, ErrorResponse>(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                seen.peers.lock().unwrap().insert(peer.ip());
                seen.open.fetch_add(1, Ordering::SeqCst);
                loop {
                    tokio::select! {
                        _ = close_rx.changed() => {
                            let _ = ws.close(None).await;
                            while let Some(Ok(_)) = ws.next().await {}
                            break;
                        }
                        m = ws.next() => match m {
                            Some(Ok(m)) if m.is_text() || m.is_binary() => {
                                if ws.send(m).await.is_err() {
                                    break;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    EchoServer {
        url,
        seen,
        close_all,
    }
}

/// A server that answers every handshake with 403.
async fn refusing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let refuse = |_: &Request, _: Response| {
                    let mut resp = ErrorResponse::new(Some("forbidden".into()));
                    *resp.status_mut() = StatusCode::FORBIDDEN;
                    Err(resp)
                };
                let _ = tokio_tungstenite::accept_hdr_async(stream, refuse).await;
            });
        }
    });
    format!("ws://{addr}/")
}

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsguard-bench"));
    c.kill_on_drop(true);
    c
}

/// Runs a subcommand to completion and parses its one line of JSON.
async fn run_json(args: &[&str]) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(30), bench().args(args).output())
        .await
        .expect("wsguard-bench did not finish")
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not an integer in {v}"))
}

fn assert_latency_sane(r: &Value) {
    let (p50, p99, p999, max) = (
        u(r, "latency_p50_us"),
        u(r, "latency_p99_us"),
        u(r, "latency_p999_us"),
        u(r, "latency_max_us"),
    );
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{r}");
    assert!(max < 30_000_000, "{r}");
}

/// Polls `f` until it holds, for at most 5 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_closed_loop_reports_round_trips_and_sends_headers() {
    let server = echo_server().await;
    let r = run_json(&[
        "echo",
        "--url",
        &server.url,
        "--connections",
        "4",
        "--size",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--header",
        "Origin: https://app.example.com",
        "--header",
        "Cookie: wsguard_session=abc",
        "--sources",
        "127.0.0.1,127.0.0.2",
        "--json",
    ])
    .await;
    assert_eq!(r["mode"], "closed_loop");
    assert!(r["send_lag_max_us"].is_null(), "{r}");
    assert_eq!(u(&r, "connections_opened"), 4, "{r}");
    assert_eq!(u(&r, "errors"), 0, "{r}");
    assert_eq!(u(&r, "connections_lost"), 0, "{r}");
    let messages = u(&r, "messages");
    assert!(messages > 0, "{r}");
    let mps = r["messages_per_sec"].as_f64().unwrap();
    let bps = r["bytes_per_sec"].as_f64().unwrap();
    assert!((bps - mps * 100.0).abs() < 1.0, "{r}");
    assert_latency_sane(&r);

    let headers = server.seen.headers.lock().unwrap().clone();
    assert_eq!(headers.len(), 4);
    for (origin, cookie) in headers {
        assert_eq!(origin, "https://app.example.com");
        assert_eq!(cookie, "wsguard_session=abc");
    }
    let peers = server.seen.peers.lock().unwrap().clone();
    let want: HashSet<IpAddr> = ["127.0.0.1", "127.0.0.2"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(peers, want, "connections are spread over --sources");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_open_loop_binary() {
    let server = echo_server().await;
    let r = run_json(&[
        "echo",
        "--url",
        &server.url,
        "--connections",
        "2",
        "--size",
        "1000",
        "--rate",
        "200",
        "--binary",
        "--duration",
        "1s",
        "--warmup",
        "100ms",
        "--json",
    ])
    .await;
    assert_eq!(r["mode"], "open_loop");
    assert_eq!(r["binary"], true);
    assert!(r["send_lag_max_us"].is_u64(), "{r}");
    assert_eq!(u(&r, "errors"), 0, "{r}");
    // At 2 × 200 msg/s for 1 s the schedule asks for ~400; allow for a busy machine.
    let messages = u(&r, "messages");
    assert!(messages > 0 && messages <= 420, "{r}");
    assert_latency_sane(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_against_nothing_fails_cleanly() {
    // Bind then drop: the port is (very likely) closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let out = bench()
        .args([
            "echo",
            "--url",
            &format!("ws://{addr}/"),
            "--connections",
            "2",
        ])
        .args(["--duration", "100ms", "--warmup", "0s", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&r, "connections_opened"), 0);
    assert_eq!(u(&r, "connections_failed"), 2);
    assert_eq!(r["error_kinds"]["tcp_connect"], 2, "{r}");
    assert!(r["latency_p50_us"].is_null(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_counts_completed_handshakes() {
    let server = echo_server().await;
    let r = run_json(&[
        "handshakes",
        "--url",
        &server.url,
        "--connections",
        "2",
        "--duration",
        "1s",
        "--json",
    ])
    .await;
    assert!(u(&r, "handshakes") > 0, "{r}");
    assert_eq!(u(&r, "refusals"), 0, "{r}");
    assert_eq!(u(&r, "errors"), 0, "{r}");
    assert_latency_sane(&r);
    // Every handshake was closed again.
    eventually("server sockets closed", || {
        server.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_counts_refusals_by_status() {
    let url = refusing_server().await;
    let r = run_json(&[
        "handshakes",
        "--url",
        &url,
        "--connections",
        "2",
        "--duration",
        "500ms",
        "--json",
    ])
    .await;
    let refusals = u(&r, "refusals");
    assert!(refusals > 0, "{r}");
    assert_eq!(r["refusals_by_status"]["403"], refusals, "{r}");
    assert_eq!(u(&r, "handshakes"), 0, "{r}");
    assert!(r["latency_p50_us"].is_null(), "{r}");
}

/// Starts `hold` and waits for its `ready N` line.
async fn start_hold(url: &str, n: usize) -> (Child, String) {
    let mut child = bench()
        .args(["hold", "--url", url, "--connections", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("no ready line")
    .unwrap();
    (child, line.trim().to_owned())
}

async fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut stderr = String::new();
    let mut err = child.stderr.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        err.read_to_string(&mut stderr).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("hold did not exit");
    (status, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_keeps_connections_open_until_sigterm() {
    let server = echo_server().await;
    let (child, ready) = start_hold(&server.url, 20).await;
    assert_eq!(ready, "ready 20");
    eventually("20 open sockets", || {
        server.seen.open.load(Ordering::SeqCst) == 20
    })
    .await;
    // Still open a moment later: nothing closes idle connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.seen.open.load(Ordering::SeqCst), 20);

    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let (status, stderr) = finish(child).await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("held 20, closed by peer 0"), "{stderr}");
    eventually("all sockets closed", || {
        server.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_counts_peer_closes_and_stops_when_stdin_closes() {
    let server = echo_server().await;
    let (mut child, ready) = start_hold(&server.url, 3).await;
    assert_eq!(ready, "ready 3");
    eventually("3 open sockets", || {
        server.seen.open.load(Ordering::SeqCst) == 3
    })
    .await;
    server.close_all.send(()).unwrap();
    eventually("server closed them", || {
        server.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
    drop(child.stdin.take());
    let (status, stderr) = finish(child).await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("stdin closed"), "{stderr}");
    assert!(stderr.contains("held 3, closed by peer 3"), "{stderr}");
}
