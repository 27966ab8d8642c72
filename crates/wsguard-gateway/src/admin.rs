//! The admin API, on its own listener (default 127.0.0.1:9090), behind a bearer token.
//!
//! Owns these endpoints, through which any backend logs users in and out:
//! - `GET /healthz` (no token): the process is up;
//! - `GET /readyz` (no token): the session store answers;
//! - `GET /metrics` (no token): Prometheus/OpenMetrics text (counts only, no user data);
//! - `POST /sessions` `{"user": "...", "data": {...}}` → the cookie value and a ready `Set-Cookie`;
//! - `DELETE /sessions/{sid}`: revoke one session (its live sockets close with 1008);
//! - `DELETE /users/{uid}/sessions`: revoke every session of a user;
//! - `GET /users/{uid}/sessions`: a user's live sessions;
//! - `GET /connections`: live proxied sockets;
//! - `POST /reload`: re-read the configuration (origins, routes, limits, timeouts, keys, TLS
//!   certificate) without dropping live sockets; an invalid file is refused and the
//!   configuration in force stays.
//!
//! Bodies are bounded; the token is compared in constant time and never logged.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use wsguard_token::{SessionData, SessionId, UserId};
use zeroize::Zeroizing;

use crate::state::Gateway;
use crate::state::ReloadError;

/// Largest admin request body.
const MAX_BODY: usize = 16 * 1024;

/// The admin listener's state.
pub struct Admin {
    gateway: Arc<Gateway>,
    token: Zeroizing<String>,
    /// `admin.metrics_require_token`.
    metrics_require_token: bool,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message }))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Admin {
    /// Admin state over a gateway, with the bearer token.
    pub fn new(
        gateway: Arc<Gateway>,
        token: Zeroizing<String>,
        metrics_require_token: bool,
    ) -> Admin {
        Admin {
            gateway,
            token,
            metrics_require_token,
        }
    }

    /// Serves until the gateway shuts down.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut shutdown = self.gateway.shutdown.subscribe();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let admin = Arc::clone(&self);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let admin = Arc::clone(&admin);
                            async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(std::time::Duration::from_secs(10))
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                () = crate::state::shutdown_signalled(&mut shutdown) => return,
            }
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        given.ct_eq(self.token.as_bytes()).into()
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => {
                return json_response(StatusCode::OK, json!({"status": "ok"}));
            }
            (&Method::GET, "/readyz") => return self.ready().await,
            (&Method::GET, "/metrics") if !self.metrics_require_token || self.authorized(&req) => {
                let pending = i64::try_from(self.gateway.limits.pending()).unwrap_or(i64::MAX);
                self.gateway.metrics.pending.set(pending);
                self.gateway.metrics.set_upstreams(&self.upstream_states());
                let mut r = Response::new(Full::new(Bytes::from(self.gateway.metrics.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                return r;
            }
            _ => {}
        }
        if !self.authorized(&req) {
            tracing::info!(event = "admin_refused", reason = "unauthorized", peer = %peer);
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::POST, ["sessions"]) => self.issue(req).await,
            (&Method::DELETE, ["sessions", sid]) => self.revoke_session(sid).await,
            (&Method::DELETE, ["users", uid, "sessions"]) => self.revoke_user(uid).await,
            (&Method::GET, ["users", uid, "sessions"]) => self.list_user(uid).await,
            (&Method::GET, ["connections"]) => json_response(
                StatusCode::OK,
                json!({ "connections": self.gateway.registry.list() }),
            ),
            (&Method::GET, ["upstreams"]) => json_response(
                StatusCode::OK,
                json!({ "upstreams": self.upstream_states() }),
            ),
            (&Method::POST, ["upstreams", key, action @ ("drain" | "undrain")]) => {
                let state = self.gateway.state.load();
                match state.backends.get(key) {
                    Some(b) => {
                        b.set_draining(*action == "drain");
                        tracing::info!(
                            event = "upstream_drain",
                            upstream = b.key(),
                            draining = b.is_draining(),
                            open = b.open(),
                        );
                        json_response(StatusCode::OK, json!(b.state(Instant::now())))
                    }
                    None => error(StatusCode::NOT_FOUND, "no such upstream (host:port)"),
                }
            }
            (&Method::POST, ["reload"]) => match self.gateway.reload() {
                Ok(restart_required) => json_response(
                    StatusCode::OK,
                    json!({ "reloaded": true, "restart_required": restart_required }),
                ),
                Err(ReloadError::NotConfigured) => error(
                    StatusCode::NOT_IMPLEMENTED,
                    "this gateway was started without a configuration file to reload",
                ),
                Err(ReloadError::Invalid(e)) => json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "reloaded": false,
                        "errors": e.lines().collect::<Vec<_>>(),
                        "error": e,
                        "note": "the configuration in force is unchanged"
                    }),
                ),
            },
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// Every configured upstream's state now.
    fn upstream_states(&self) -> Vec<crate::pool::BackendState> {
        let now = Instant::now();
        self.gateway
            .state
            .load()
            .backends
            .all()
            .map(|b| b.state(now))
            .collect()
    }

    async fn ready(&self) -> Response<Full<Bytes>> {
        match self
            .gateway
            .sessions
            .store()
            .get(&SessionId::generate())
            .await
        {
            Ok(_) => json_response(StatusCode::OK, json!({"status": "ready"})),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable"),
        }
    }

    async fn issue(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct IssueRequest {
            user: String,
            #[serde(default)]
            data: Option<Box<serde_json::value::RawValue>>,
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
        };
        let Ok(r) = serde_json::from_slice::<IssueRequest>(&body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"user\": string, \"data\": object}",
            );
        };
        let Ok(uid) = UserId::parse(&r.user) else {
            return error(
                StatusCode::BAD_REQUEST,
                "user: 1 to 128 printable ASCII characters",
            );
        };
        let data = match r.data {
            None => SessionData::empty(),
            Some(raw) => match SessionData::parse_for_issue(raw.get()) {
                Ok(d) => d,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("data: {e}")),
            },
        };
        match self.gateway.sessions.issue(uid, data, now()).await {
            Ok(issued) => {
                let max_age = self.gateway.sessions.verifier().policy().max_age;
                let set_cookie = crate::cookie::set_cookie(
                    &self.gateway.cookie_name,
                    &issued.token,
                    max_age,
                    &self.gateway.cookie,
                );
                json_response(
                    StatusCode::CREATED,
                    json!({
                        "token": issued.token,
                        "sid": issued.claims.sid.as_str(),
                        "uid": issued.claims.uid.as_str(),
                        "expires_at": issued.expires_at,
                        "set_cookie": set_cookie,
                    }),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store a new session");
                error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
            }
        }
    }

    async fn revoke_session(&self, sid: &str) -> Response<Full<Bytes>> {
        let Ok(sid) = SessionId::parse(sid) else {
            return error(StatusCode::BAD_REQUEST, "not a session id");
        };
        match self.gateway.sessions.revoke_session(&sid, now()).await {
            Ok(uid) => json_response(
                StatusCode::OK,
                json!({ "revoked": "session", "sid": sid.as_str(), "uid": uid.as_ref().map(UserId::as_str), "was_live": uid.is_some() }),
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot revoke");
                error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
            }
        }
    }

    async fn revoke_user(&self, uid: &str) -> Response<Full<Bytes>> {
        let Ok(uid) = UserId::parse(uid) else {
            return error(StatusCode::BAD_REQUEST, "not a user id");
        };
        match self.gateway.sessions.revoke_user(&uid, now()).await {
            Ok(n) => json_response(
                StatusCode::OK,
                json!({ "revoked": "user", "uid": uid.as_str(), "sessions_ended": n }),
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot revoke");
                error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
            }
        }
    }

    async fn list_user(&self, uid: &str) -> Response<Full<Bytes>> {
        let Ok(uid) = UserId::parse(uid) else {
            return error(StatusCode::BAD_REQUEST, "not a user id");
        };
        match self.gateway.sessions.list_user(&uid).await {
            Ok(records) => {
                let list: Vec<Value> = records
                    .iter()
                    .map(|r| json!({ "sid": r.sid.as_str(), "uid": r.uid.as_str(), "data": r.data.to_value(), "created": r.created, "last_active": r.last_active, "expires_at": r.expires_at }))
                    .collect();
                json_response(StatusCode::OK, Value::Array(list))
            }
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable"),
        }
    }
}
