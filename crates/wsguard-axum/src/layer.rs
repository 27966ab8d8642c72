//! The tower layer ([`WsGuardLayer`]) and its service ([`WsGuardService`]): which requests meet
//! the checks, and what becomes of their outcome.
//!
//! Owns the split between upgrade requests (checked by `checks.rs`, refused by `refused.rs`, or
//! passed on with the verified session in their extensions) and every other request (passed on
//! untouched), and the construction of a guarded route from parts. Building one from
//! `wsguard.toml`'s types is `config.rs`'s; the checks themselves are not here.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::Request;
use tower::{Layer, Service};
use wsguard_policy::origin::OriginPolicy;
use wsguard_policy::policy::{MessageConfig, RoutePolicy};
use wsguard_policy::tickets::Tickets;
use wsguard_session::Sessions;

use crate::checks::{Guard, is_upgrade_attempt};
use crate::refused::Refused;

/// The session cookie's name unless [`WsGuardLayer::cookie_name`] says otherwise (the default
/// of `sessions.cookie_name` in `wsguard.toml`).
const DEFAULT_COOKIE_NAME: &str = "wsguard_session";

/// The ticket lifetime unless [`WsGuardLayer::tickets`] gives a table (the default of
/// `gateway.ticket_ttl`).
const DEFAULT_TICKET_TTL_MS: u64 = 30_000;

/// A tower layer that guards one WebSocket route as the wsguard gateway does.
///
/// **Upgrade requests** (any `Upgrade` or `Sec-WebSocket-Key` header, or `CONNECT`) meet the
/// gateway's checks in its order: one valid `Host` and no body, the request target (normalised;
/// `?ticket=` split off), the strict WebSocket handshake (GET, HTTP/1.1, `Upgrade: websocket`,
/// `Connection: upgrade`, version 13, a valid key, valid subprotocols), the origin policy, then
/// a one-time ticket (`?ticket=`) or the session cookie, authenticated by
/// [`Sessions::authenticate`]. A refusal is answered with the reason table's status, body and
/// headers ([`Refused`]); a session store that cannot answer is `503 store_unavailable`, never
/// a pass. A request that passes goes on with the verified [`wsguard_session::Session`] in its
/// extensions, for [`GuardedSession`](crate::GuardedSession) and
/// [`GuardedUpgrade`](crate::GuardedUpgrade).
///
/// **Every other request passes through untouched**, without a session: the layer may wrap a
/// whole router (its pages, a login route, the [ticket endpoint](Self::ticket_endpoint)), and
/// a handler that needs the session takes [`GuardedSession`](crate::GuardedSession) or
/// [`GuardedUpgrade`](crate::GuardedUpgrade), which answer 401 when the layer did not verify
/// one. One layer is one route's policy (origins, message policy): give routes with other
/// policies a layer each (`Router::route_layer`).
///
/// Cloning is cheap: clones share the route's state (ticket table, per-user rate buckets).
#[derive(Debug, Clone)]
pub struct WsGuardLayer {
    pub(crate) guard: Arc<Guard>,
}

impl WsGuardLayer {
    /// Guards a route with `sessions` and the origin policy `origins`, the session cookie
    /// `wsguard_session`, a ticket table of its own (tickets live 30 s) and the default message
    /// policy ([`MessageConfig::default`]: any kind, 64 KiB).
    pub fn new(sessions: Sessions, origins: OriginPolicy) -> WsGuardLayer {
        WsGuardLayer {
            guard: Arc::new(Guard::new(
                sessions,
                origins,
                DEFAULT_COOKIE_NAME.to_owned(),
                Arc::new(Tickets::new(DEFAULT_TICKET_TTL_MS)),
                RoutePolicy::new(MessageConfig::default()),
            )),
        }
    }

    /// The session cookie's name (`sessions.cookie_name`).
    pub fn cookie_name(self, name: impl Into<String>) -> WsGuardLayer {
        let name = name.into();
        self.with(|g| g.cookie_name = name)
    }

    /// The one-time ticket table, to share one with the app or with other layers (a ticket is
    /// redeemed by the layer whose table issued it).
    pub fn tickets(self, tickets: Arc<Tickets>) -> WsGuardLayer {
        self.with(|g| g.tickets = tickets)
    }

    /// The route's message policy (`[route.messages]`): [`RoutePolicy::new`], or
    /// [`RoutePolicy::with_schema`] with a compiled JSON Schema.
    pub fn messages(self, policy: Arc<RoutePolicy>) -> WsGuardLayer {
        self.with(|g| g.messages = policy)
    }

    fn with(self, change: impl FnOnce(&mut Guard)) -> WsGuardLayer {
        let mut guard = Arc::unwrap_or_clone(self.guard);
        change(&mut guard);
        WsGuardLayer {
            guard: Arc::new(guard),
        }
    }
}

impl<S> Layer<S> for WsGuardLayer {
    type Service = WsGuardService<S>;

    fn layer(&self, inner: S) -> WsGuardService<S> {
        WsGuardService {
            inner,
            guard: Arc::clone(&self.guard),
        }
    }
}

/// The service of a [`WsGuardLayer`] around the app's service `S`.
#[derive(Debug, Clone)]
pub struct WsGuardService<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S, B> Service<Request<B>> for WsGuardService<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The service that was driven to readiness goes with this request; a fresh clone stays.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        if !is_upgrade_attempt(&req) {
            let passed = inner.call(req);
            return Box::pin(async move { passed.await.map(IntoResponse::into_response) });
        }
        let verify = self.guard.verify(&req);
        Box::pin(async move {
            match verify.await {
                Ok(verified) => {
                    req.extensions_mut().insert(verified.session.clone());
                    req.extensions_mut().insert(verified);
                    inner.call(req).await.map(IntoResponse::into_response)
                }
                Err(refusal) => Ok(Refused::logged(refusal, req.uri().path())),
            }
        })
    }
}
