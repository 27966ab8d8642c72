//! Helpers shared by the tests that run the real binary against upstreams started here: the
//! process guard, an upstream that records each handshake's request head, `wsguard serve` with
//! the addresses it prints, and raw HTTP requests. Each test binary uses part of it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

pub use std::io::{BufRead, BufReader};
pub use std::process::{Child, Command, Stdio};
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::{TcpListener, TcpStream};

pub const ORIGIN: &str = "https://app.example.com";

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("wsguard"));
    c.env_remove("WSGUARD_CONFIG");
    c
}

/// The request heads an upstream received, in order.
#[derive(Clone, Default)]
pub struct Heads(pub Arc<Mutex<Vec<String>>>);

impl Heads {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The request target of the last head.
    pub fn target(&self) -> String {
        let all = self.0.lock().unwrap();
        let last = all.last().expect("the upstream saw a handshake");
        last.split(' ').nth(1).unwrap().to_owned()
    }

    /// Every value of a header of the last head.
    pub fn header(&self, name: &str) -> Vec<String> {
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
pub async fn recording_upstream() -> (String, Heads) {
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

/// Starts `wsguard serve` in `dir` and returns it with its public and admin addresses.
pub fn serve(dir: &std::path::Path) -> (Proc, String, String) {
    let mut child = bin()
        .current_dir(dir)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (public, admin) = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if let Some(rest) = line.split("listening on ws://").nth(1) {
            let public = rest.split_whitespace().next().unwrap().to_owned();
            let admin = rest
                .split("admin API on http://")
                .nth(1)
                .unwrap()
                .trim_end_matches(')')
                .to_owned();
            break (public, admin);
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), public, admin)
}

pub fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    bin().current_dir(dir).args(args).output().unwrap()
}

/// Sends a raw request; returns the status of the answer.
pub async fn status(addr: &str, request: &str) -> u16 {
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

pub fn upgrade(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {ORIGIN}\r\n{extra}\r\n"
    )
}
