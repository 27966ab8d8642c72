//! The layer, the extractors and the guarded socket through real sockets: an axum app on
//! 127.0.0.1:0 with an echo route behind [`WsGuardLayer`], raw HTTP for the handshake's
//! answers, tokio-tungstenite for the sockets. What the example chat does not show: requests
//! that pass through, the session in the request's extensions, a store that cannot answer,
//! missed revocation events, expiry, rate and control-frame limits, strict handshake refusals
//! and the ticket endpoint's CORS. Every refusal is compared with the reason table itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::extract::ws::Message as AxumMessage;
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsguard_axum::{GuardedSession, GuardedUpgrade, WsGuardLayer};
use wsguard_policy::origin::OriginPolicy;
use wsguard_policy::policy::{MessageConfig, Rate, RoutePolicy};
use wsguard_policy::reason::{CloseReason, Refusal};
use wsguard_session::{Mode, Session, Sessions};
use wsguard_store::{Lookup, MemoryStore, Revocation, SessionRecord, SessionStore, StoreError};
use wsguard_token::{KeyRing, SessionData, SessionId, TokenPolicy, UserId, Verifier};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

const ORIGIN: &str = "https://app.example";
const COOKIE: &str = "wsguard_session";
const PATIENCE: Duration = Duration::from_secs(10);

/// A MemoryStore whose revocation events the app hears only when the test sends them (on
/// `events`), and whose next `fail` lookups fail.
struct Flaky {
    inner: MemoryStore,
    events: broadcast::Sender<Revocation>,
    fail: AtomicUsize,
}

impl Flaky {
    fn new() -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemoryStore::new(),
            events: broadcast::channel(16).0,
            fail: AtomicUsize::new(0),
        })
    }

    fn lookups_fail(&self) -> Result<(), StoreError> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Backend("injected".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SessionStore for Flaky {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.inner.create(record).await
    }
    async fn get(&self, sid: &SessionId) -> Result<Lookup, StoreError> {
        self.lookups_fail()?;
        self.inner.get(sid).await
    }
    async fn get_with_user_mark(
        &self,
        sid: &SessionId,
        uid: &UserId,
    ) -> Result<(Lookup, Option<u64>), StoreError> {
        self.lookups_fail()?;
        self.inner.get_with_user_mark(sid, uid).await
    }
    async fn touch(&self, sid: &SessionId, last_active: u64) -> Result<bool, StoreError> {
        self.inner.touch(sid, last_active).await
    }
    async fn revoke_session(
        &self,
        sid: &SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError> {
        self.inner.revoke_session(sid, keep_until).await
    }
    async fn revoke_user(
        &self,
        uid: &UserId,
        now: u64,
        keep_until: u64,
    ) -> Result<usize, StoreError> {
        self.inner.revoke_user(uid, now, keep_until).await
    }
    async fn user_revoked_at(&self, uid: &UserId) -> Result<Option<u64>, StoreError> {
        self.inner.user_revoked_at(uid).await
    }
    async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_user(uid).await
    }
    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        self.inner.purge(now).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.events.subscribe()
    }
}

/// A running app: its address and sessions.
struct App {
    addr: SocketAddr,
    sessions: Sessions,
}

/// The app: `/ws` echoes behind the layer, `/who` answers an upgrade request with the user of
/// the session in its extensions, `/me` with `GuardedSession`'s, `/page` is a page, and
/// `/ticket` the ticket endpoint; the layer wraps the whole router.
async fn start(store: Arc<dyn SessionStore>, tokens: TokenPolicy, messages: MessageConfig) -> App {
    let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), tokens);
    let sessions = Sessions::new(verifier, store, Mode::Stateful, 60);
    let origins = OriginPolicy::new(&[ORIGIN.to_owned()], false).unwrap();
    let layer = WsGuardLayer::new(sessions.clone(), origins).messages(RoutePolicy::new(messages));
    let app = Router::new()
        .route("/ws", get(echo))
        .route(
            "/who",
            get(|Extension(s): Extension<Session>| async move { s.uid().as_str().to_owned() }),
        )
        .route(
            "/me",
            get(|GuardedSession(s): GuardedSession| async move { s.uid().as_str().to_owned() }),
        )
        .route("/page", get(|| async { "a page" }))
        .route("/ticket", layer.ticket_endpoint())
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App { addr, sessions }
}

async fn start_default() -> App {
    start(
        Arc::new(MemoryStore::new()),
        TokenPolicy::default(),
        MessageConfig::default(),
    )
    .await
}

async fn echo(upgrade: GuardedUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(m) = socket.recv().await {
            if matches!(m, AxumMessage::Text(_) | AxumMessage::Binary(_))
                && socket.send(m).await.is_err()
            {
                return;
            }
        }
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl App {
    /// A session cookie for `user`, started at `at`.
    async fn cookie_at(&self, user: &str, at: u64) -> String {
        let issued = self
            .sessions
            .issue(UserId::parse(user).unwrap(), SessionData::empty(), at)
            .await
            .unwrap();
        format!("{COOKIE}={}", issued.token)
    }

    async fn cookie(&self, user: &str) -> String {
        self.cookie_at(user, now()).await
    }

    async fn connect(&self, cookie: &str) -> Ws {
        let mut req = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
            .await
            .unwrap()
            .unwrap();
        ws
    }

    /// One raw HTTP/1.1 request; the answer's status, headers (lower-case names) and body.
    async fn raw(&self, head: &str) -> (u16, Vec<(String, String)>, String) {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let (head_len, body_len) = loop {
            let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before an answer");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                break (end + 4, len);
            }
        };
        while got.len() < head_len + body_len {
            let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before the whole body");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        let mut lines = text[..head_len - 4].lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status.unwrap(), headers, text[head_len..].to_owned())
    }

    /// A WebSocket upgrade request for `path` with `extra` header lines.
    async fn upgrade(&self, path: &str, extra: &str) -> (u16, Vec<(String, String)>, String) {
        self.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n",
            self.addr
        ))
        .await
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The answer is `refusal`'s, as the reason table writes it.
fn assert_refused(answer: &(u16, Vec<(String, String)>, String), refusal: Refusal) {
    let (status, headers, body) = answer;
    assert_eq!(
        (*status, body.as_str()),
        (refusal.status(), refusal.body().as_str())
    );
    for (name, value) in refusal.headers() {
        assert_eq!(header(headers, name), Some(*value), "{name}");
    }
    assert_eq!(header(headers, "cache-control"), Some("no-store"));
}

/// The close frame the server sends next, skipping anything before it.
async fn closed(ws: &mut Ws) -> CloseReason {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => {
                let code = u16::from(f.code);
                return CloseReason::all()
                    .into_iter()
                    .find(|r| r.close_code() == code && r.text() == f.reason.as_str())
                    .unwrap_or_else(|| panic!("not in the table: {code} {:?}", f.reason));
            }
            Some(Ok(Message::Close(None))) => panic!("closed without a code"),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// Sends `text` and expects it back.
async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("an echo in time")
        {
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), text);
                return;
            }
            Some(Ok(Message::Close(c))) => panic!("closed: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("no echo: {other:?}"),
        }
    }
}

#[tokio::test]
async fn requests_that_are_not_upgrades_pass_through_without_a_session() {
    let app = start_default().await;
    let cookie = app.cookie("alice").await;
    let page = app
        .raw(&format!(
            "GET /page HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            app.addr
        ))
        .await;
    assert_eq!((page.0, page.2.as_str()), (200, "a page"));
    // The layer verifies upgrades only: a plain request gets no session, even with a cookie.
    let me = app
        .raw(&format!(
            "GET /me HTTP/1.1\r\nHost: {}\r\nOrigin: {ORIGIN}\r\nCookie: {cookie}\r\n\
             Connection: close\r\n\r\n",
            app.addr
        ))
        .await;
    assert_refused(&me, Refusal::NoCredentials);
}

#[tokio::test]
async fn the_verified_session_is_in_the_request_extensions() {
    let app = start_default().await;
    let cookie = app.cookie("alice").await;
    let who = app
        .upgrade("/who", &format!("Origin: {ORIGIN}\r\nCookie: {cookie}\r\n"))
        .await;
    assert_eq!((who.0, who.2.as_str()), (200, "alice"));
    let me = app
        .upgrade("/me", &format!("Origin: {ORIGIN}\r\nCookie: {cookie}\r\n"))
        .await;
    assert_eq!((me.0, me.2.as_str()), (200, "alice"));
}

#[tokio::test]
async fn handshake_refusals_are_the_tables() {
    let app = start_default().await;
    let cookie = app.cookie("alice").await;
    let with = |extra: &str| format!("Origin: {ORIGIN}\r\nCookie: {cookie}\r\n{extra}");
    assert_refused(
        &app.upgrade("/ws", &format!("Cookie: {cookie}\r\n")).await,
        Refusal::OriginMissing,
    );
    assert_refused(
        &app.upgrade(
            "/ws",
            &format!("Origin: https://evil.example\r\nCookie: {cookie}\r\n"),
        )
        .await,
        Refusal::OriginNotAllowed,
    );
    assert_refused(
        &app.upgrade("/ws", &with(&format!("Cookie: {cookie}\r\n")))
            .await,
        Refusal::CookieAmbiguous,
    );
    assert_refused(
        &app.upgrade("/ws", &format!("Origin: {ORIGIN}\r\n")).await,
        Refusal::NoCredentials,
    );
    // The strict handshake, before anything is authenticated.
    assert_refused(
        &app.raw(&format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n{}\r\n",
            app.addr,
            with("")
        ))
        .await,
        Refusal::BadKey,
    );
    assert_refused(
        &app.raw(&format!(
            "POST /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Content-Length: 0\r\n{}\r\n",
            app.addr,
            with("")
        ))
        .await,
        Refusal::NotGet,
    );
}

#[tokio::test]
async fn a_store_that_cannot_answer_is_503_never_a_pass() {
    let store = Flaky::new();
    let app = start(
        store.clone(),
        TokenPolicy::default(),
        MessageConfig::default(),
    )
    .await;
    let cookie = app.cookie("alice").await;
    store.fail.store(1, Ordering::SeqCst);
    assert_refused(
        &app.upgrade("/ws", &format!("Origin: {ORIGIN}\r\nCookie: {cookie}\r\n"))
            .await,
        Refusal::StoreUnavailable,
    );
    // Once it answers again, so does the layer.
    let mut ws = app.connect(&cookie).await;
    echoes(&mut ws, "back").await;
}

#[tokio::test]
async fn missed_revocations_are_caught_by_a_recheck_that_retries_a_failing_store() {
    let store = Flaky::new();
    let app = start(
        store.clone(),
        TokenPolicy::default(),
        MessageConfig::default(),
    )
    .await;
    let (gone, kept) = (app.cookie("alice").await, app.cookie("bob").await);
    let mut ws_gone = app.connect(&gone).await;
    let mut ws_kept = app.connect(&kept).await;
    echoes(&mut ws_gone, "open").await;
    echoes(&mut ws_kept, "open").await;
    // Alice's session is revoked in the store; the app hears nothing of it, and the store
    // fails its next lookups. Then it says events were missed.
    let token = gone.strip_prefix(&format!("{COOKIE}=")).unwrap();
    let sid = app
        .sessions
        .authenticate(token, now())
        .await
        .unwrap()
        .sid()
        .clone();
    store
        .inner
        .revoke_session(&sid, now() + 3600)
        .await
        .unwrap();
    store.fail.store(2, Ordering::SeqCst);
    store.events.send(Revocation::Resync).unwrap();
    assert_eq!(closed(&mut ws_gone).await, CloseReason::SessionRevoked);
    assert_eq!(
        store.fail.load(Ordering::SeqCst),
        0,
        "the failures were met"
    );
    echoes(&mut ws_kept, "still open").await;
}

#[tokio::test]
async fn a_socket_closes_when_its_session_reaches_its_maximum_age() {
    let tokens = TokenPolicy {
        max_age: 3,
        ..TokenPolicy::default()
    };
    let app = start(
        Arc::new(MemoryStore::new()),
        tokens,
        MessageConfig::default(),
    )
    .await;
    // Two seconds of life left.
    let cookie = app.cookie_at("alice", now() - 1).await;
    let mut ws = app.connect(&cookie).await;
    echoes(&mut ws, "alive").await;
    assert_eq!(closed(&mut ws).await, CloseReason::SessionExpired);
}

#[tokio::test]
async fn the_routes_rate_limits_close() {
    let messages = MessageConfig {
        connection_messages: Some(Rate {
            per_second: 1,
            burst: Some(2),
        }),
        ..MessageConfig::default()
    };
    let app = start(
        Arc::new(MemoryStore::new()),
        TokenPolicy::default(),
        messages,
    )
    .await;
    let mut ws = app.connect(&app.cookie("alice").await).await;
    for i in 0..3 {
        ws.send(Message::text(format!("{i}"))).await.unwrap();
    }
    assert_eq!(closed(&mut ws).await, CloseReason::RateLimited);

    // A ping flood (default: 10/s, bursts of 50).
    let mut ws = app.connect(&app.cookie("bob").await).await;
    for _ in 0..60 {
        ws.send(Message::Ping(Vec::new().into())).await.unwrap();
    }
    assert_eq!(closed(&mut ws).await, CloseReason::ControlFlood);
}

#[tokio::test]
async fn the_ticket_endpoint_answers_allowed_origins_only() {
    let app = start_default().await;
    let cookie = app.cookie("alice").await;
    let host = app.addr;
    let get = app
        .raw(&format!(
            "GET /ticket HTTP/1.1\r\nHost: {host}\r\nOrigin: {ORIGIN}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_refused(&get, Refusal::NotPost);
    assert_eq!(header(&get.1, "access-control-allow-origin"), Some(ORIGIN));

    let preflight = app
        .raw(&format!(
            "OPTIONS /ticket HTTP/1.1\r\nHost: {host}\r\nOrigin: {ORIGIN}\r\n\
             Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(preflight.0, 204);
    assert_eq!(
        header(&preflight.1, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&preflight.1, "access-control-allow-credentials"),
        Some("true")
    );

    let foreign = app
        .raw(&format!(
            "POST /ticket HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\n\
             Cookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_refused(&foreign, Refusal::OriginNotAllowed);
    assert_eq!(header(&foreign.1, "access-control-allow-origin"), None);

    let issued = app
        .raw(&format!(
            "POST /ticket HTTP/1.1\r\nHost: {host}\r\nOrigin: {ORIGIN}\r\n\
             Cookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(issued.0, 200, "{}", issued.2);
    let ticket: serde_json::Value = serde_json::from_str(&issued.2).unwrap();
    let ticket = ticket["ticket"].as_str().unwrap();
    // Redeemed by an upgrade, once, with no cookie.
    let who = app
        .upgrade(
            &format!("/who?ticket={ticket}"),
            &format!("Origin: {ORIGIN}\r\n"),
        )
        .await;
    assert_eq!((who.0, who.2.as_str()), (200, "alice"));
    assert_refused(
        &app.upgrade(
            &format!("/who?ticket={ticket}"),
            &format!("Origin: {ORIGIN}\r\n"),
        )
        .await,
        Refusal::TicketInvalid,
    );
}

/// Connecting with a refused handshake is an HTTP error for tokio-tungstenite too (what a
/// browser sees as a failed `new WebSocket`).
#[tokio::test]
async fn a_websocket_client_sees_the_refusal() {
    let app = start_default().await;
    let mut req = format!("ws://{}/ws", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("not refused: {other:?}"),
    }
}
