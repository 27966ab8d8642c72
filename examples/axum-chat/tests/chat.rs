//! The chat through real sockets: the app on 127.0.0.1:0, logged in over HTTP, chatted with
//! tokio-tungstenite as the browser would, refused, stamped, closed, revoked and ticketed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsguard_session::{Mode, Sessions};
use wsguard_store::MemoryStore;
use wsguard_token::{KeyRing, TokenPolicy, Verifier};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

const ORIGIN: &str = "http://localhost:3000";

/// Long enough for any answer on a loaded machine; a hang fails instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(10);

/// The chat as shipped (`axum-chat.toml`), development login on, on a free port.
async fn start() -> SocketAddr {
    let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default());
    let sessions = Sessions::new(verifier, Arc::new(MemoryStore::new()), Mode::Stateful, 60);
    let mut config = axum_chat::Config::parse(axum_chat::DEFAULT_CONFIG).unwrap();
    config.dev_login = true;
    let app = axum_chat::app(sessions, &config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
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

/// Logs `user` in; returns the `Cookie` header value that carries the session.
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
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Opens `/chat` (or `path`) as a browser would: `Origin`, and the cookie if any.
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
async fn an_allowed_origin_with_a_valid_cookie_chats() {
    let addr = start().await;
    let (alice, bob) = (login(addr, "alice").await, login(addr, "bob").await);
    let mut a = joined(addr, &alice, "alice").await;
    let mut b = joined(addr, &bob, "bob").await;
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
async fn a_foreign_origin_is_refused_with_403() {
    let addr = start().await;
    let alice = login(addr, "alice").await;
    let (status, body) = refused(connect(addr, "/chat", "http://evil.example", Some(&alice)).await);
    assert_eq!(status, 403);
    assert_eq!(body, "origin not allowed: origin_not_allowed\n");
}

#[tokio::test]
async fn no_cookie_is_refused_with_401() {
    let addr = start().await;
    let (status, body) = refused(connect(addr, "/chat", ORIGIN, None).await);
    assert_eq!(status, 401);
    assert_eq!(body, "unauthenticated: no_credentials\n");
}

#[tokio::test]
async fn a_spoofed_sender_is_stamped_over() {
    let addr = start().await;
    let alice = login(addr, "alice").await;
    let mut a = joined(addr, &alice, "alice").await;
    say(&mut a, serde_json::json!({ "sender": "bob", "text": "it was bob" })).await;
    assert_eq!(
        heard(&mut a).await,
        serde_json::json!({ "sender": "alice", "text": "it was bob" })
    );
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let addr = start().await;
    let alice = login(addr, "alice").await;
    let mut a = joined(addr, &alice, "alice").await;
    // axum-chat.toml: max_message_bytes = 4096.
    say(&mut a, serde_json::json!({ "text": "x".repeat(5000) })).await;
    assert_eq!(closed(&mut a).await, (1009, "message too big".to_owned()));
}

#[tokio::test]
async fn a_revoke_closes_the_live_socket_with_1008() {
    let addr = start().await;
    let alice = login(addr, "alice").await;
    let mut a = joined(addr, &alice, "alice").await;
    let (status, _, _) = http(addr, "POST", "/logout", &[("cookie", &alice)], "").await;
    assert_eq!(status, 204);
    assert_eq!(closed(&mut a).await, (1008, "session revoked".to_owned()));
    // And the cookie opens nothing any more.
    let (status, body) = refused(connect(addr, "/chat", ORIGIN, Some(&alice)).await);
    assert_eq!((status, body.as_str()), (401, "unauthenticated: session_revoked\n"));
}

#[tokio::test]
async fn a_ticket_works_once() {
    let addr = start().await;
    let alice = login(addr, "alice").await;
    let (status, headers, body) = http(
        addr,
        "POST",
        "/wsguard/ticket",
        &[("cookie", &alice), ("origin", ORIGIN)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ticket = answer["ticket"].as_str().unwrap();
    let path = format!("/chat?ticket={ticket}");

    // Without the cookie, as a client that cannot send it.
    let mut ws = connect(addr, &path, ORIGIN, None).await.unwrap();
    say(&mut ws, serde_json::json!({ "text": "by ticket" })).await;
    assert_eq!(
        heard(&mut ws).await,
        serde_json::json!({ "sender": "alice", "text": "by ticket" })
    );
    let (status, body) = refused(connect(addr, &path, ORIGIN, None).await);
    assert_eq!((status, body.as_str()), (401, "unauthenticated: ticket_invalid\n"));
}

#[tokio::test]
async fn the_login_is_served_only_for_development() {
    let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default());
    let sessions = Sessions::new(verifier, Arc::new(MemoryStore::new()), Mode::Stateful, 60);
    let config = axum_chat::Config::parse(axum_chat::DEFAULT_CONFIG).unwrap();
    assert!(!config.dev_login, "off unless asked for");
    let app = axum_chat::app(sessions, &config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
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
