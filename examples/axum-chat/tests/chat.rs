//! The chat through real sockets: the app on 127.0.0.1:0 with its shipped configuration, logged
//! in over HTTP, chatted with by tokio-tungstenite as a browser would; refused at the handshake
//! (origin, missing, expired or forged cookie, a ticket used twice), stamped, and closed with the
//! gateway's close codes (oversized, off-schema, not JSON, binary, revoked). The binary itself
//! is started once, as `cargo run -p axum-chat -- CONFIG ADDRESS` would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsguard_session::{Mode, Sessions};
use wsguard_store::MemoryStore;
use wsguard_token::{KeyRing, SessionData, TokenPolicy, UserId, Verifier};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

const ORIGIN: &str = "http://localhost:3000";
const COOKIE: &str = "wsguard_session";

/// Long enough for any answer on a loaded machine; a hang fails instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running chat: its address, and its sessions (to mint or revoke them as another part of the
/// app would).
struct Chat {
    addr: SocketAddr,
    sessions: Sessions,
}

fn sessions() -> Sessions {
    let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default());
    Sessions::new(verifier, Arc::new(MemoryStore::new()), Mode::Stateful, 60)
}

fn config() -> axum_chat::Config {
    axum_chat::Config::load(Path::new(axum_chat::DEFAULT_CONFIG)).unwrap()
}

/// Serves `app` on a free port.
async fn serve(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The chat as shipped (`axum-chat.toml`), development login on, on a free port.
async fn start() -> Chat {
    let sessions = sessions();
    let mut config = config();
    config.dev_login = true;
    let app = axum_chat::app(sessions.clone(), &config).unwrap();
    Chat {
        addr: serve(app).await,
        sessions,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One HTTP/1.1 request (`Connection: close`): status, headers (lower-case names), body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status.parse().unwrap(), headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Logs `user` in through `POST /login`; returns the `Cookie` header value that carries the
/// session.
async fn login(addr: SocketAddr, user: &str) -> String {
    let body = serde_json::json!({ "user": user }).to_string();
    let (status, headers, _) = http(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(status, 204);
    let set_cookie = header(&headers, "set-cookie").expect("a session cookie");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with(&format!("{COOKIE}=")), "{cookie}");
    cookie
}

/// A session cookie for `user` from `sessions`, started at `at`.
async fn minted(sessions: &Sessions, user: &str, at: u64) -> String {
    let issued = sessions
        .issue(UserId::parse(user).unwrap(), SessionData::empty(), at)
        .await
        .unwrap();
    format!("{COOKIE}={}", issued.token)
}

/// Opens `path` as a browser would: `Origin`, and the cookie if any.
async fn connect(
    addr: SocketAddr,
    path: &str,
    origin: &str,
    cookie: Option<&str>,
) -> Result<Ws, WsError> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .map(|(ws, _)| ws)
}

/// The status and body of a refused handshake.
fn refused(result: Result<Ws, WsError>) -> (u16, String) {
    match result {
        Err(WsError::Http(r)) => (
            r.status().as_u16(),
            String::from_utf8(r.body().clone().unwrap_or_default()).unwrap(),
        ),
        Err(e) => panic!("not an HTTP refusal: {e}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

async fn say(ws: &mut Ws, value: serde_json::Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next chat message, as JSON.
async fn heard(ws: &mut Ws) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time")
            .expect("the socket open")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The close frame the server sends next (code, reason), skipping any chat before it.
async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a close in time");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("closed without a code"),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// Connects `user` and waits until the room hears it (its own first message comes back), so
/// that it hears everything said after.
async fn joined(addr: SocketAddr, cookie: &str, user: &str) -> Ws {
    let mut ws = connect(addr, "/chat", ORIGIN, Some(cookie)).await.unwrap();
    say(&mut ws, serde_json::json!({ "text": "joined" })).await;
    assert_eq!(
        heard(&mut ws).await,
        serde_json::json!({ "sender": user, "text": "joined" })
    );
    ws
}

#[tokio::test]
async fn an_allowed_origin_with_a_valid_cookie_chats_stamped_with_the_session_user() {
    let chat = start().await;
    let (alice, bob) = (
        login(chat.addr, "alice").await,
        login(chat.addr, "bob").await,
    );
    let mut a = joined(chat.addr, &alice, "alice").await;
    let mut b = joined(chat.addr, &bob, "bob").await;
    // Alice may hear bob's arrival first.
    say(&mut a, serde_json::json!({ "text": "hello bob" })).await;
    let from_alice = serde_json::json!({ "sender": "alice", "text": "hello bob" });
    assert_eq!(heard(&mut b).await, from_alice);
    loop {
        if heard(&mut a).await == from_alice {
            break;
        }
    }
}

#[tokio::test]
async fn a_spoofed_sender_is_stamped_over() {
    let chat = start().await;
    let alice = login(chat.addr, "alice").await;
    let mut a = joined(chat.addr, &alice, "alice").await;
    say(
        &mut a,
        serde_json::json!({ "sender": "bob", "text": "it was bob" }),
    )
    .await;
    assert_eq!(
        heard(&mut a).await,
        serde_json::json!({ "sender": "alice", "text": "it was bob" })
    );
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403() {
    let chat = start().await;
    let alice = login(chat.addr, "alice").await;
    let (status, body) =
        refused(connect(chat.addr, "/chat", "http://evil.example", Some(&alice)).await);
    assert_eq!(
        (status, body.as_str()),
        (403, "origin not allowed: origin_not_allowed\n")
    );
}

#[tokio::test]
async fn no_cookie_is_refused_with_401() {
    let chat = start().await;
    let (status, body) = refused(connect(chat.addr, "/chat", ORIGIN, None).await);
    assert_eq!(
        (status, body.as_str()),
        (401, "unauthenticated: no_credentials\n")
    );
}

#[tokio::test]
async fn an_expired_cookie_is_refused_with_401() {
    let chat = start().await;
    let max_age = chat.sessions.verifier().policy().max_age;
    // Started so long ago that its maximum age ended a minute ago.
    let cookie = minted(&chat.sessions, "alice", now() - max_age - 60).await;
    let (status, body) = refused(connect(chat.addr, "/chat", ORIGIN, Some(&cookie)).await);
    assert_eq!(
        (status, body.as_str()),
        (401, "unauthenticated: session_expired\n")
    );
}

#[tokio::test]
async fn a_forged_cookie_is_refused_with_401() {
    let chat = start().await;
    // Well formed, same key id (`ephemeral`), signed with a key this chat does not hold.
    let cookie = minted(&sessions(), "alice", now()).await;
    let (status, body) = refused(connect(chat.addr, "/chat", ORIGIN, Some(&cookie)).await);
    assert_eq!(
        (status, body.as_str()),
        (401, "unauthenticated: session_bad_signature\n")
    );
    let (status, body) = refused(
        connect(
            chat.addr,
            "/chat",
            ORIGIN,
            Some(&format!("{COOKIE}=not-a-token")),
        )
        .await,
    );
    assert_eq!(
        (status, body.as_str()),
        (401, "unauthenticated: session_malformed\n")
    );
}

#[tokio::test]
async fn a_ticket_works_once() {
    let chat = start().await;
    let alice = login(chat.addr, "alice").await;
    let (status, headers, body) = http(
        chat.addr,
        "POST",
        "/wsguard/ticket",
        &[("cookie", &alice), ("origin", ORIGIN)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ticket = answer["ticket"].as_str().unwrap();
    let path = format!("/chat?ticket={ticket}");

    // Without the cookie, as a client that cannot send it.
    let mut ws = connect(chat.addr, &path, ORIGIN, None).await.unwrap();
    say(&mut ws, serde_json::json!({ "text": "by ticket" })).await;
    assert_eq!(
        heard(&mut ws).await,
        serde_json::json!({ "sender": "alice", "text": "by ticket" })
    );
    let (status, body) = refused(connect(chat.addr, &path, ORIGIN, None).await);
    assert_eq!(
        (status, body.as_str()),
        (401, "unauthenticated: ticket_invalid\n")
    );
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let chat = start().await;
    let alice = login(chat.addr, "alice").await;
    let mut a = joined(chat.addr, &alice, "alice").await;
    // axum-chat.toml: max_message_bytes = 4096.
    say(&mut a, serde_json::json!({ "text": "x".repeat(5000) })).await;
    assert_eq!(closed(&mut a).await, (1009, "message too big".to_owned()));
}

#[tokio::test]
async fn a_message_off_the_schema_closes_with_1008() {
    let chat = start().await;
    let alice = login(chat.addr, "alice").await;
    let mut a = joined(chat.addr, &alice, "alice").await;
    // message.schema.json: `text` is a string, and nothing else but `sender` is allowed.
    say(&mut a, serde_json::json!({ "text": 42 })).await;
    assert_eq!(
        closed(&mut a).await,
        (1008, "message does not match the schema".to_owned())
    );
    let mut a = joined(chat.addr, &alice, "alice").await;
    say(&mut a, serde_json::json!({ "text": "hi", "admin": true })).await;
    assert_eq!(
        closed(&mut a).await,
        (1008, "message does not match the schema".to_owned())
    );
}

#[tokio::test]
async fn what_is_not_one_json_text_closes_with_the_tables_code() {
    let chat = start().await;
    let alice = login(chat.addr, "alice").await;
    let mut a = joined(chat.addr, &alice, "alice").await;
    a.send(Message::text("hello")).await.unwrap();
    assert_eq!(closed(&mut a).await, (1008, "message refused".to_owned()));
    let mut a = joined(chat.addr, &alice, "alice").await;
    a.send(Message::binary(b"{}".to_vec())).await.unwrap();
    assert_eq!(closed(&mut a).await, (1003, "unsupported data".to_owned()));
}

#[tokio::test]
async fn a_logout_closes_the_live_socket_with_1008() {
    let chat = start().await;
    let alice = login(chat.addr, "alice").await;
    let bob = login(chat.addr, "bob").await;
    let mut a = joined(chat.addr, &alice, "alice").await;
    let mut b = joined(chat.addr, &bob, "bob").await;
    let (status, _, _) = http(chat.addr, "POST", "/logout", &[("cookie", &alice)], "").await;
    assert_eq!(status, 204);
    assert_eq!(closed(&mut a).await, (1008, "session revoked".to_owned()));
    // And the cookie opens nothing any more, while bob chats on.
    let (status, body) = refused(connect(chat.addr, "/chat", ORIGIN, Some(&alice)).await);
    assert_eq!(
        (status, body.as_str()),
        (401, "unauthenticated: session_revoked\n")
    );
    say(&mut b, serde_json::json!({ "text": "still here" })).await;
    assert_eq!(
        heard(&mut b).await,
        serde_json::json!({ "sender": "bob", "text": "still here" })
    );
}

#[tokio::test]
async fn revoking_a_user_closes_every_socket_of_theirs() {
    let chat = start().await;
    let (phone, laptop) = (
        login(chat.addr, "alice").await,
        login(chat.addr, "alice").await,
    );
    let mut a1 = joined(chat.addr, &phone, "alice").await;
    let mut a2 = joined(chat.addr, &laptop, "alice").await;
    // As an admin page of the app would: every session of alice, at once.
    chat.sessions
        .revoke_user(&UserId::parse("alice").unwrap(), now())
        .await
        .unwrap();
    assert_eq!(closed(&mut a1).await, (1008, "session revoked".to_owned()));
    assert_eq!(closed(&mut a2).await, (1008, "session revoked".to_owned()));
}

#[tokio::test]
async fn the_login_is_served_only_for_development() {
    let config = config();
    assert!(!config.dev_login, "off unless asked for");
    let addr = serve(axum_chat::app(sessions(), &config).unwrap()).await;
    let (status, _, _) = http(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        r#"{"user":"mallory"}"#,
    )
    .await;
    assert_eq!(status, 404);
}

/// The binary as `cargo run -p axum-chat -- CONFIG ADDRESS` starts it: it serves the shipped
/// configuration, and a logged-in user chats.
#[tokio::test]
async fn the_binary_serves_the_chat() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_axum-chat"))
        .args([axum_chat::DEFAULT_CONFIG, "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("a line saying where it listens");
    let addr: SocketAddr = line
        .strip_prefix("axum-chat on http://")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let alice = login(addr, "alice").await;
    let mut a = joined(addr, &alice, "alice").await;
    say(&mut a, serde_json::json!({ "text": "from the binary" })).await;
    assert_eq!(
        heard(&mut a).await,
        serde_json::json!({ "sender": "alice", "text": "from the binary" })
    );
    child.kill().await.unwrap();
}
