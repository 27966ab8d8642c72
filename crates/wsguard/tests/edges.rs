//! The handshake's edges through the real binary: `wsguard serve` in front of an upstream that
//! records each handshake it receives, attacked with raw requests (path tricks against a
//! public and a private route, forged client addresses, bodies on upgrades), and identity bytes
//! issued through `wsguard session issue` reaching the upstream whole.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ORIGIN: &str = "https://app.example.com";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("wsguard"));
    c.env_remove("WSGUARD_CONFIG");
    c
}

/// The request heads an upstream received, in order.
#[derive(Clone, Default)]
struct Heads(Arc<Mutex<Vec<String>>>);

impl Heads {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The request target of the last head.
    fn target(&self) -> String {
        let all = self.0.lock().unwrap();
        let last = all.last().expect("the upstream saw a handshake");
        last.split(' ').nth(1).unwrap().to_owned()
    }

    /// Every value of a header of the last head.
    fn header(&self, name: &str) -> Vec<String> {
        let all = self.0.lock().unwrap();
        let last = all.last().expect("the upstream saw a handshake");
        last.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// An upstream that records each request head and accepts the WebSocket handshake.
async fn recording_upstream() -> (String, Heads) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads = Heads::default();
    let h = heads.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let h = h.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap();
                h.0.lock().unwrap().push(head);
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    wsguard_gateway::handshake::accept_key(&key)
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let mut sink = [0u8; 1024];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, heads)
}

/// Starts `wsguard serve` in `dir` and returns it with its public address.
fn serve(dir: &std::path::Path) -> (Proc, String) {
    let mut child = bin()
        .current_dir(dir)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if let Some(rest) = line.split("listening on ws://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}

fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    bin().current_dir(dir).args(args).output().unwrap()
}

/// A gateway with a public route `/` and a private route `/ws`, both to one recording upstream.
async fn gateway(dir: &std::path::Path) -> (Proc, String, Heads) {
    let (upstream, heads) = recording_upstream().await;
    std::fs::write(
        dir.join("wsguard.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"{ORIGIN}\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[route]]\npath = \"/\"\nupstream = \"ws://{upstream}\"\npublic = true\n\n\
             [[route]]\npath = \"/ws\"\nupstream = \"ws://{upstream}\"\n"
        ),
    )
    .unwrap();
    assert!(run(dir, &["keygen"]).status.success());
    let (proc, addr) = serve(dir);
    (proc, addr, heads)
}

/// Sends a raw request; returns the status of the answer.
async fn status(addr: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1).unwrap_or("0").parse().unwrap()
}

fn upgrade(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {ORIGIN}\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_the_private_route_anonymously() {
    let dir = tempfile::tempdir().unwrap();
    let (_gw, addr, heads) = gateway(dir.path()).await;
    for (target, want) in [
        ("/pub/../ws", 401),
        ("/pub/%2e%2e/ws", 401),
        ("/pub/.%2E/ws/x", 401),
        ("/pub//../ws", 401),
        ("/pub/..;/ws", 400),
        ("/pub%2f..%2fws", 400),
        ("/pub\\..\\ws", 400),
        ("/pub/%5c../ws", 400),
        ("/WS", 400),
        ("/ws.", 400),
        ("/pub/%c0%ae%c0%ae/ws", 400),
        ("/pub/\u{e9}", 400),
        ("http://evil.example/pub", 400),
    ] {
        let before = heads.count();
        assert_eq!(status(&addr, &upgrade(target, "")).await, want, "{target}");
        assert_eq!(heads.count(), before, "{target} reached the upstream");
    }
    // What is let through goes upstream in the normal form that was matched, without the
    // gateway's ticket parameter.
    for (target, upstream) in [
        ("/pub/a/../b", "/pub/b"),
        ("/wsx", "/wsx"),
        ("/pub/%7e?ticket=x&q=1", "/pub/~?q=1"),
        ("http://gw.example/pub", "/pub"),
    ] {
        assert_eq!(status(&addr, &upgrade(target, "")).await, 101, "{target}");
        assert_eq!(heads.target(), upstream, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_addresses_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (_gw, addr, heads) = gateway(dir.path()).await;
    let spoofs = "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
                  Forwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
                  X-Original-URL: /ws\r\nX-Wsguard-User: admin\r\n";
    assert_eq!(status(&addr, &upgrade("/chat", spoofs)).await, 101);
    assert_eq!(heads.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(heads.header("x-forwarded-host"), ["gw.example"]);
    assert_eq!(heads.header("x-forwarded-proto"), ["http"]);
    assert_eq!(
        heads.header("forwarded"),
        ["for=127.0.0.1;host=\"gw.example\";proto=http"]
    );
    for gone in ["x-real-ip", "x-original-url", "x-wsguard-user"] {
        assert!(heads.header(gone).is_empty(), "{gone}");
    }
    let before = heads.count();
    for framing in [
        "Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ] {
        let request = upgrade("/chat", framing).replacen("\r\n\r\n", "\r\n", 1);
        assert_eq!(status(&addr, &request).await, 400, "{framing:?}");
    }
    for hosts in ["", "Host: a\r\nHost: b\r\n", "Host: a@b\r\n"] {
        let request = upgrade("/chat", "").replace("Host: gw.example\r\n", hosts);
        assert_eq!(status(&addr, &request).await, 400, "{hosts:?}");
    }
    assert_eq!(heads.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_bytes_reach_the_upstream_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_gw, addr, heads) = gateway(dir.path()).await;
    let data = "{\"readonly\":true,\"note\":\"a\u{7f}b \u{e9}\u{1f512}\"}";
    let issued = run(
        dir.path(),
        &[
            "session",
            "issue",
            "--user",
            "alice@example.com",
            "--data",
            data,
        ],
    );
    assert!(issued.status.success(), "{issued:?}");
    let token = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let cookie = format!("Cookie: wsguard_session={token}\r\n");
    assert_eq!(status(&addr, &upgrade("/ws", &cookie)).await, 101);
    assert_eq!(heads.header("x-wsguard-user"), ["alice@example.com"]);
    let sent = heads.header("x-wsguard-data");
    assert_eq!(
        sent,
        [r#"{"readonly":true,"note":"a\u007fb \u00e9\ud83d\udd12"}"#]
    );
    let back: serde_json::Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(data).unwrap()
    );
    // Data that no header could carry is refused when issued, with the reason.
    let long = format!("{{\"a\":\"{}\"}}", "\u{7f}".repeat(1400));
    let refused = run(
        dir.path(),
        &["session", "issue", "--user", "bob", "--data", &long],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("too long to forward"), "{stderr}");
}
