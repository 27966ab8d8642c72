//! The harness shared by the gateway's end-to-end tests: a gateway on free ports over an
//! in-memory or SQLite session store, in front of upstreams started here (an echo that records
//! what it saw: target, headers, close frames; a closed port; an HTTP server that answers 200;
//! one that never answers; one that drops the connection after the first message), and clients
//! (tungstenite, and a raw HTTP/1.1 client for exact request bytes). Its imports are re-exported
//! as the tests' prelude. Each test binary uses part of it. By concern: `raw` (hand-made
//! sockets and frames), `tls` (a test certificate, a client trusting it, a TLS upstream),
//! `wait` (waiting on state, never on time).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    clippy::collapsible_match
)] // tests: a panic is a failure report

pub use std::net::SocketAddr;
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use futures_util::{SinkExt, StreamExt};
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::{TcpListener, TcpStream};
pub use tokio_tungstenite::tungstenite::client::IntoClientRequest;
pub use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
pub use tokio_tungstenite::tungstenite::{Error as WsError, Message};
#[allow(unused_imports)]
pub use wsguard_gateway::config::{GatewayConfig, Limit, RouteConfig};
pub use wsguard_gateway::policy::{Kind, MessageConfig, Rate};
pub use wsguard_gateway::{Running, Settings, wire};
pub use wsguard_session::{Mode, Sessions};
#[allow(unused_imports)]
pub use wsguard_store::{MemoryStore, SessionStore, SqliteStore};
pub use wsguard_token::{KeyRing, SessionData, TokenPolicy, UserId, Verifier};
pub use zeroize::Zeroizing;

mod raw;
mod tls;
mod wait;
#[allow(unused_imports)] // each test binary uses some of them
pub use {raw::*, tls::*, wait::*};

pub const ORIGIN: &str = "https://app.example.com";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghijkl";
pub const COOKIE: &str = "wsguard_session";

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// What the recording upstream saw of one connection.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub close: Option<(u16, String)>,
}

#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub fn last(&self) -> Seen {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no connection")
    }
    /// Waits (bounded, as [`wait_until`]) until what the upstream saw satisfies `done`; panics
    /// otherwise. A state to wait on, not a time to sleep.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) {
        let what = format!("the upstream to see {what}");
        wait_until(&what, || done(&self.0.lock().unwrap())).await;
    }

    pub fn header(&self, name: &str) -> Vec<String> {
        self.last()
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Echo upstream that records each handshake and the close frame it receives; picks the first
/// offered subprotocol.
pub async fn recording_upstream() -> (SocketAddr, Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = Recorder::default();
    let r = rec.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let r = r.clone();
            tokio::spawn(async move {
                let idx = Arc::new(Mutex::new(0usize));
                let idx2 = Arc::clone(&idx);
                let r2 = r.clone();
                let cb = move |req: &Request, mut resp: Response| {
                    let seen = Seen {
                        uri: req.uri().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned())
                            })
                            .collect(),
                        close: None,
                    };
                    if let Some(p) = req.headers().get("sec-websocket-protocol") {
                        let first = p
                            .to_str()
                            .unwrap()
                            .split(',')
                            .next()
                            .unwrap()
                            .trim()
                            .to_owned();
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", first.parse().unwrap());
                    }
                    let mut all = r2.0.lock().unwrap();
                    all.push(seen);
                    *idx2.lock().unwrap() = all.len() - 1;
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Close(f) => {
                            let i = *idx.lock().unwrap();
                            r.0.lock().unwrap()[i].close =
                                Some(f.map_or((1005, String::new()), |f| {
                                    (u16::from(f.code), f.reason.to_string())
                                }));
                        }
                        Message::Text(t) if t.as_str() == "flood" => {
                            let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
                            while ws.send(Message::Binary(chunk.clone())).await.is_ok() {}
                            return;
                        }
                        Message::Text(t) if t.as_str() == "upstream-close-4002" => {
                            let _ = ws
                                .close(Some(CloseFrame {
                                    code: CloseCode::from(4002),
                                    reason: "from upstream".into(),
                                }))
                                .await;
                        }
                        m @ (Message::Text(_) | Message::Binary(_)) => {
                            if ws.send(m).await.is_err() {
                                return;
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, rec)
}

/// Keeps a broken upstream's connection open, sending nothing more, until the test ends (its
/// runtime drops the task): a peer that stays, not a time to sleep.
async fn hold_open() {
    std::future::pending::<()>().await
}

/// Raw TCP servers standing for broken upstreams.
pub async fn raw_upstream(behaviour: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                match behaviour {
                    "http200" => {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
                            .await;
                    }
                    "silent" => {
                        hold_open().await;
                    }
                    // A 101 whose Sec-WebSocket-Accept does not answer the key.
                    "bad_accept" => {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                                  Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBhbnN3ZXI=\r\n\r\n",
                            )
                            .await;
                        hold_open().await;
                    }
                    // A valid 101 that picks a subprotocol nobody offered.
                    "foreign_protocol" => {
                        let pick = |_: &Request, mut r: Response| {
                            r.headers_mut()
                                .insert("sec-websocket-protocol", "surprise".parse().unwrap());
                            Ok(r)
                        };
                        let _ = tokio_tungstenite::accept_hdr_async(s, pick).await;
                        hold_open().await;
                    }
                    // A valid 101 that turns on an extension nobody offered.
                    "foreign_extension" => {
                        let pick = |_: &Request, mut r: Response| {
                            r.headers_mut().insert(
                                "sec-websocket-extensions",
                                "permessage-deflate".parse().unwrap(),
                            );
                            Ok(r)
                        };
                        let _ = tokio_tungstenite::accept_hdr_async(s, pick).await;
                        hold_open().await;
                    }
                    // A hand-made WebSocket server: answers each client frame with a text frame
                    // saying the masking key it arrived with and its unmasked payload.
                    "report_mask" => {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if s.read_exact(&mut byte).await.is_err() {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        let head = String::from_utf8_lossy(&head).to_string();
                        let key = head
                            .lines()
                            .find_map(|l| {
                                let (n, v) = l.split_once(':')?;
                                n.eq_ignore_ascii_case("sec-websocket-key")
                                    .then(|| v.trim().to_owned())
                            })
                            .unwrap();
                        let answer = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                            wsguard_gateway::handshake::accept_key(&key)
                        );
                        // A greeting in the same write as the 101: the gateway must relay it
                        // without waiting for more bytes from this socket.
                        let mut answer = answer.into_bytes();
                        wire::encode(&mut answer, true, wire::Op::Text, None, b"welcome");
                        s.write_all(&answer).await.unwrap();
                        loop {
                            let Some((h, payload)) = read_frame(&mut s, wire::From::Client).await
                            else {
                                return;
                            };
                            if h.op == wire::Op::Close {
                                let mut out = Vec::new();
                                wire::encode(&mut out, true, wire::Op::Close, None, &payload);
                                let _ = s.write_all(&out).await;
                                return;
                            }
                            if h.op != wire::Op::Binary && h.op != wire::Op::Text {
                                continue;
                            }
                            let mask = h.mask.unwrap();
                            let report = format!("{mask:?} {}", String::from_utf8_lossy(&payload));
                            let mut out = Vec::new();
                            wire::encode(&mut out, true, wire::Op::Text, None, report.as_bytes());
                            s.write_all(&out).await.unwrap();
                        }
                    }
                    // Completes the handshake, then never reads again.
                    "never_read" => {
                        let _ws = tokio_tungstenite::accept_async(s).await.unwrap();
                        hold_open().await;
                    }
                    "drop_after_first" => {
                        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                        let _ = ws.next().await;
                        drop(ws); // no close frame: a crash
                    }
                    _ => unreachable!(),
                }
            });
        }
    });
    addr
}

/// An upstream that, as soon as a client is connected, sends `count` binary messages of `size`
/// bytes, then the text "end".
pub async fn burst_upstream(count: usize, size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                for i in 0..count {
                    let payload = vec![i as u8; size];
                    if ws.send(Message::binary(payload)).await.is_err() {
                        return;
                    }
                }
                let _ = ws.send(Message::text("end")).await;
                // Keep the socket open: the end of the burst must reach the client with no
                // later event on the upstream side to wake the relay.
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    addr
}

/// Reads one frame off a raw socket: its header and its unmasked payload.
pub async fn read_frame(s: &mut TcpStream, from: wire::From) -> Option<(wire::Header, Vec<u8>)> {
    let mut buf = Vec::new();
    let h = loop {
        if let Some(h) = wire::parse_header(&buf, from).unwrap() {
            break h;
        }
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.ok()?;
        buf.push(b[0]);
    };
    let mut payload = vec![0u8; h.len as usize];
    s.read_exact(&mut payload).await.ok()?;
    if let Some(k) = h.mask {
        wire::apply_mask(&mut payload, k, 0);
    }
    Some((h, payload))
}

pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct Harness {
    pub running: Running,
    /// The settings the gateway started with.
    pub settings: Settings,
    pub sessions: Sessions,
    pub rec: Recorder,
    pub http: reqwest_free::Client,
}

pub mod reqwest_free {
    //! A tiny HTTP/1.1 client over a raw socket, for exact control of request bytes.
    use super::*;

    #[derive(Clone)]
    pub struct Client;

    pub struct Reply {
        pub status: u16,
        pub head: String,
        pub body: String,
    }

    impl Reply {
        pub fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        }
    }

    impl Client {
        pub async fn raw(&self, addr: SocketAddr, request: &str) -> Reply {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 4096];
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let text = String::from_utf8_lossy(&buf);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head.lines().find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        });
                        if head.starts_with("HTTP/1.1 101") || len.is_some_and(|l| body.len() >= l)
                        {
                            break;
                        }
                    }
                }
            })
            .await;
            let text = String::from_utf8_lossy(&buf).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Reply {
                status,
                head: head.to_owned(),
                body: body.to_owned(),
            }
        }
    }
}

pub fn policy() -> TokenPolicy {
    TokenPolicy {
        max_age: 3600,
        idle_timeout: 600,
        future_leeway: 5,
        accept_legacy_tokens: false,
    }
}

pub async fn harness_with(
    store: Arc<dyn SessionStore>,
    policy: TokenPolicy,
    tweak: impl FnOnce(&mut Settings),
) -> Harness {
    let (rec_addr, rec) = recording_upstream().await;
    let sessions = Sessions::new(
        Verifier::new(Arc::new(KeyRing::ephemeral()), policy),
        store,
        Mode::Stateful,
        60,
    );
    let route = |path: &str, upstream: String, public: bool| RouteConfig {
        public,
        ..RouteConfig::new(path, upstream)
    };
    let mut settings = Settings {
        gateway: GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allowed_origins: vec![ORIGIN.into(), "https://*.example.org".into()],
            upstream_timeout: Duration::from_millis(500),
            ticket_ttl: Duration::from_secs(30),
            max_headers: 32,
            ..GatewayConfig::default()
        },
        routes: vec![
            RouteConfig {
                messages: MessageConfig {
                    max_message_bytes: 1 << 20,
                    ..Default::default()
                },
                ..route("/", format!("ws://{rec_addr}"), false)
            },
            RouteConfig {
                messages: MessageConfig {
                    kind: Kind::Json,
                    max_message_bytes: 1024,
                    json_max_depth: 4,
                    stamp_sender: Some("sender".into()),
                    ..Default::default()
                },
                ..route("/json", format!("ws://{rec_addr}"), false)
            },
            RouteConfig {
                messages: MessageConfig {
                    kind: Kind::Text,
                    ..Default::default()
                },
                ..route("/text", format!("ws://{rec_addr}"), false)
            },
            RouteConfig {
                messages: MessageConfig {
                    connection_messages: Some(Rate {
                        per_second: 1,
                        burst: Some(5),
                    }),
                    ..Default::default()
                },
                ..route("/limited", format!("ws://{rec_addr}"), false)
            },
            RouteConfig {
                messages: MessageConfig {
                    user_messages: Some(Rate {
                        per_second: 1,
                        burst: Some(4),
                    }),
                    ..Default::default()
                },
                ..route("/user-limited", format!("ws://{rec_addr}"), false)
            },
            route("/public", format!("ws://{rec_addr}/pub"), true),
            route("/down", format!("ws://{}", closed_port()), false),
            route(
                "/non101",
                format!("ws://{}", raw_upstream("http200").await),
                false,
            ),
            route(
                "/slow",
                format!("ws://{}", raw_upstream("silent").await),
                false,
            ),
            route(
                "/bad-accept",
                format!("ws://{}", raw_upstream("bad_accept").await),
                false,
            ),
            route(
                "/foreign-protocol",
                format!("ws://{}", raw_upstream("foreign_protocol").await),
                false,
            ),
            route(
                "/foreign-extension",
                format!("ws://{}", raw_upstream("foreign_extension").await),
                false,
            ),
            route(
                "/crash",
                format!("ws://{}", raw_upstream("drop_after_first").await),
                false,
            ),
        ],
        admin: wsguard_gateway::config::AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: "unused".into(),
            ..Default::default()
        },
        cookie_name: COOKIE.into(),
        cookie: Default::default(),
    };
    tweak(&mut settings);
    let running = wsguard_gateway::start(
        sessions.clone(),
        settings.clone(),
        Zeroizing::new(ADMIN_TOKEN.into()),
    )
    .await
    .unwrap();
    Harness {
        running,
        settings,
        sessions,
        rec,
        http: reqwest_free::Client,
    }
}

pub async fn harness() -> Harness {
    harness_with(Arc::new(MemoryStore::new()), policy(), |_| {}).await
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The "SecureSession" tutorial's token, minted by Python's standard library as its code does.
pub fn python_legacy_token(secret: &str, uid: &str) -> String {
    let script = r#"
import hashlib, hmac, json, secrets, sys, time
secret, uid = sys.argv[1], sys.argv[2]
now = int(time.time())
data = {"sid": secrets.token_urlsafe(32), "uid": uid, "data": {"name": "Ada L"},
        "created": now, "last_active": now}
payload = json.dumps(data, separators=(",", ":"))
print(payload + "." + hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret, uid])
        .output()
        .expect("python3 is needed for this test");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Harness {
    pub async fn login(&self, user: &str) -> String {
        self.sessions
            .issue(
                UserId::parse(user).unwrap(),
                SessionData::parse(r#"{"role":"member"}"#).unwrap(),
                now(),
            )
            .await
            .unwrap()
            .token
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.running.public_addr)
    }

    pub async fn connect(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
        let mut req = self.url(path).into_client_request().unwrap();
        for (n, v) in headers {
            req.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }

    pub async fn connect_as(&self, path: &str, token: &str) -> Ws {
        let cookie = format!("{COOKIE}={token}");
        self.connect(path, &[("origin", ORIGIN), ("cookie", &cookie)])
            .await
            .expect("connect")
    }

    /// Status of a refused upgrade.
    pub async fn refused(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        match self.connect(path, headers).await {
            Err(WsError::Http(r)) => r.status().as_u16(),
            Ok(_) => panic!("upgrade to {path} with {headers:?} was accepted"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    pub fn upgrade_request(&self, path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    /// Makes `POST /reload` apply the settings and keys the gateway started with.
    pub fn reload_as_started(&self) {
        let (settings, verifier) = (self.settings.clone(), (*self.sessions.verifier()).clone());
        self.running.set_loader(Arc::new(move || {
            Ok(wsguard_gateway::Reload {
                settings: settings.clone(),
                verifier: verifier.clone(),
                restart_required: Vec::new(),
            })
        }));
    }

    /// The admin API's `/metrics`.
    pub async fn metrics(&self) -> reqwest_free::Reply {
        self.http
            .raw(
                self.running.admin_addr,
                "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            )
            .await
    }

    /// Polls `/metrics` until a line starts with `needle` (a state, not a timing: bounded at
    /// 10 s); returns the body then, or None.
    pub async fn wait_for_metric(&self, needle: &str) -> Option<String> {
        for _ in 0..100 {
            let m = self.metrics().await;
            if metric(&m.body, needle) {
                return Some(m.body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub async fn admin(&self, method: &str, path: &str, body: &str) -> reqwest_free::Reply {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.http.raw(self.running.admin_addr, &req).await
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out")
            .expect("ended")
            .expect("error")
        {
            Message::Text(t) => return t.to_string(),
            Message::Binary(b) => return format!("<binary {}>", b.len()),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// Waits for a close frame, completes the closing handshake; returns (code, reason).
pub async fn next_close(ws: &mut Ws) -> (u16, String) {
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => break (1005, String::new()),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("error instead of close: {e}"),
            None => panic!("ended without a close frame"),
        }
    };
    // Polling on sends the close reply and sees the end of the stream.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while ws.next().await.is_some() {}
    })
    .await;
    got
}

/// Whether a line of a `/metrics` body starts with `needle`.
pub fn metric(body: &str, needle: &str) -> bool {
    body.lines().any(|l| l.starts_with(needle))
}
