//! A chat server on axum, guarded by `wsguard-axum`: the example of wsguard in a Rust app.
//!
//! Owns the app around the guard: a login that issues sessions (a development stand-in: it takes
//! any user name), a logout that revokes the session, `/chat` behind [`WsGuardLayer`] (origin
//! policy, session cookie or one-time ticket, the route's message policy), the ticket endpoint,
//! and a room that broadcasts every message the policy let through, with its `sender` stamped
//! by the guard. It decides nothing about security itself: the checks, the stamping, the closes
//! of refused messages and of revoked sessions are the guard's. Its configuration is
//! `wsguard.toml`'s own `[gateway]` and `[[route]]` tables (`axum-chat.toml`, whose
//! messages must also match `message.schema.json`).

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::broadcast;
use wsguard_axum::{GuardedSocket, GuardedUpgrade, WsGuardLayer};
use wsguard_policy::config::{GatewayConfig, RouteConfig};
use wsguard_policy::cookie::{self, CookieAttributes, CookieValues};
use wsguard_session::Sessions;
use wsguard_token::{SessionData, UserId};

/// The chat's configuration as shipped, beside this crate's manifest.
pub const DEFAULT_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/axum-chat.toml");

/// Messages a slow reader may fall behind the room before it misses some.
const ROOM_BACKLOG: usize = 256;

/// What the chat needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[gateway]`: the allowed origins, the ticket lifetime.
    pub gateway: GatewayConfig,
    /// The `/chat` `[[route]]`: its origins (if its own) and `[route.messages]`.
    pub route: RouteConfig,
    /// The session cookie's name (`sessions.cookie_name`).
    pub cookie_name: String,
    /// Serve `POST /login`, which logs in any user name it is given: for development only.
    pub dev_login: bool,
}

/// The file's shape: wsguard.toml's tables.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    gateway: GatewayConfig,
    route: Vec<RouteConfig>,
}

impl Config {
    /// Reads a configuration file (`[gateway]` and one `[[route]]`), without the development
    /// login. A relative `json_schema` path is relative to the file's directory, as in
    /// `wsguard.toml`.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a configuration; relative paths in it are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let [mut route] = <[RouteConfig; 1]>::try_from(file.route)
            .map_err(|_| "route: exactly one [[route]], for /chat".to_owned())?;
        if let Some(schema) = &mut route.messages.json_schema
            && schema.is_relative()
        {
            *schema = base.join(&*schema);
        }
        Ok(Config {
            gateway: file.gateway,
            route,
            cookie_name: "wsguard_session".to_owned(),
            dev_login: false,
        })
    }
}

/// The app's state.
struct Chat {
    sessions: Sessions,
    cookie_name: String,
    /// Every message said in the room, as stamped by the guard.
    room: broadcast::Sender<Utf8Bytes>,
}

/// The chat's router: `GET /` (a page), `POST /login` (if `dev_login`), `POST /logout`,
/// `POST /wsguard/ticket`, and `GET /chat` behind the guard.
pub fn app(sessions: Sessions, config: &Config) -> Result<Router, wsguard_axum::ConfigErrors> {
    let guard = WsGuardLayer::from_config(
        sessions.clone(),
        &config.gateway,
        &config.route,
        &config.cookie_name,
    )?;
    let chat = Arc::new(Chat {
        sessions,
        cookie_name: config.cookie_name.clone(),
        room: broadcast::channel(ROOM_BACKLOG).0,
    });
    let mut router = Router::new()
        .route("/chat", get(chat_socket))
        .route_layer(guard.clone())
        .route("/", get(page))
        .route("/logout", post(logout))
        .route("/wsguard/ticket", guard.ticket_endpoint());
    if config.dev_login {
        router = router.route("/login", post(login));
    }
    Ok(router.with_state(chat))
}

/// `GET /chat`: the guard has verified the upgrade; the socket joins the room.
async fn chat_socket(upgrade: GuardedUpgrade, State(chat): State<Arc<Chat>>) -> Response {
    let room = chat.room.clone();
    upgrade.on_upgrade(move |socket| talk(socket, room))
}

/// One member of the room: what it says (as the guard let it through) goes to everyone, what
/// anyone says comes to it, until either side ends.
async fn talk(mut socket: GuardedSocket, room: broadcast::Sender<Utf8Bytes>) {
    let mut heard = room.subscribe();
    loop {
        tokio::select! {
            said = socket.recv() => match said {
                Some(Message::Text(text)) => {
                    // Nobody listening is not an error.
                    let _ = room.send(text);
                }
                Some(_) => {}
                None => return,
            },
            heard_one = heard.recv() => match heard_one {
                Ok(text) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                // A reader too slow for the room misses what it could not take.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

/// `POST /login {"user": "alice"}`, development only: starts a session for that user and sets
/// its cookie.
async fn login(State(chat): State<Arc<Chat>>, axum::Json(login): axum::Json<Login>) -> Response {
    let Ok(user) = UserId::parse(&login.user) else {
        return (StatusCode::BAD_REQUEST, "not a user id\n").into_response();
    };
    let now = now_secs();
    let issued = match chat.sessions.issue(user, SessionData::empty(), now).await {
        Ok(issued) => issued,
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "session store unavailable\n",
            )
                .into_response();
        }
    };
    // Plain http on a developer's machine: a `Secure` cookie would not be kept there.
    let attrs = CookieAttributes {
        secure: false,
        ..CookieAttributes::default()
    };
    let set_cookie = cookie::set_cookie(
        &chat.cookie_name,
        &issued.token,
        issued.expires_at.saturating_sub(now),
        &attrs,
    );
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, set_cookie)]).into_response()
}

/// `POST /logout`: revokes the session of the cookie sent; its open sockets close with 1008.
async fn logout(State(chat): State<Arc<Chat>>, headers: HeaderMap) -> StatusCode {
    let token = cookie::session_cookie(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        &chat.cookie_name,
        CookieValues::Strict,
    );
    let Ok(Some(token)) = token else {
        return StatusCode::UNAUTHORIZED;
    };
    match chat.sessions.revoke_token(token, now_secs()).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(wsguard_session::AuthError::Rejected(_)) => StatusCode::UNAUTHORIZED,
        Err(wsguard_session::AuthError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `GET /`: a page to try the chat in a browser.
async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
