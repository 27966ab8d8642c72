//! The public listener: HTTP/1.1 connections, the upgrade path and the ticket endpoint.
//!
//! Owns the order of checks on an upgrade (handshake → route → origin → credentials → upstream
//! dial → 101), the identity headers sent upstream, and the lifetime of each proxied socket
//! (registry, relay, graceful shutdown). Every refusal goes through [`refuse`], which logs one
//! event with the reason code and the peer address and answers with the status from
//! [`crate::reason`]. Tokens, cookies and keys are never logged.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use wsguard_session::{AuthError, Session, Sessions};

use arc_swap::ArcSwap;

use crate::forward::{ClientChain, Decided};
use crate::limits::PendingSlot;
use crate::reason::{CloseReason, Refusal};
use crate::registry::Registry;
use crate::relay::{Ended, relay};
use crate::tickets::Tickets;
use crate::{Loader, ReloadError, State};
use crate::{cookie, handshake};

pub use crate::forward::{DATA_HEADER, SESSION_HEADER, USER_HEADER};

/// How often expired tickets and idle rate buckets are dropped.
const HOUSEKEEPING: Duration = Duration::from_secs(30);
/// Expired sessions are purged from the store every this many housekeeping rounds (10 min).
const STORE_PURGE_EVERY: u32 = 20;

/// Path of the ticket endpoint on the public listener.
pub const TICKET_PATH: &str = "/wsguard/ticket";

type Body = Full<Bytes>;

/// Everything the public listener needs.
pub struct Gateway {
    pub(crate) sessions: Sessions,
    /// What a reload replaces, swapped in whole.
    pub(crate) state: ArcSwap<State>,
    pub(crate) cookie_name: String,
    /// The session cookie's `Set-Cookie` attributes.
    pub(crate) cookie: cookie::CookieAttributes,
    /// Public and admin listen addresses (a change needs a restart).
    pub(crate) listeners: (SocketAddr, SocketAddr),
    pub(crate) tickets: Tickets,
    pub(crate) registry: Registry,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) limits: crate::limits::Limits,
    pub(crate) loader: std::sync::Mutex<Option<Loader>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("state", &**self.state.load())
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn text_response(status: u16, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `Retry-After` of the refusals that a client may retry (limits, shutdown, store down).
const RETRY_AFTER: &str = "5";

/// Logs a refusal and builds its response.
pub(crate) fn refuse(refusal: Refusal, peer: SocketAddr, path: &str) -> Response<Body> {
    tracing::info!(
        event = "handshake_refused",
        reason = refusal.code(),
        status = refusal.status(),
        peer = %peer,
        route = %loggable_path(path),
    );
    let mut r = text_response(refusal.status(), refusal.body());
    match refusal {
        Refusal::BadVersion | Refusal::NotWebSocket => {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        Refusal::NotGet => {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        Refusal::NotPost => {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        Refusal::StoreUnavailable
        | Refusal::NoUpstream
        | Refusal::ShuttingDown
        | Refusal::TooManyConnections
        | Refusal::TooManyFromClient
        | Refusal::TooManyForUser => {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
        }
        _ => {}
    }
    if refusal.closes_connection() {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The response to a connection refused before its request was read, from the reason table.
fn unread_refusal(refusal: Refusal) -> String {
    let status = refusal.status();
    let phrase = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body = refusal.body();
    format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         cache-control: no-store\r\nretry-after: {RETRY_AFTER}\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A request path safe to log: bounded, and only printable ASCII.
fn loggable_path(path: &str) -> String {
    path.chars()
        .take(128)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// What the rules every request meets established, for the upgrade that follows.
struct Checked {
    peer: SocketAddr,
    /// The client reached the gateway over TLS.
    tls: bool,
    /// The request's `Host` (validated).
    host: String,
    /// The request target, normalised.
    target: crate::target::Target,
}

impl Gateway {
    /// Accepts connections until shutdown, then closes every socket with 1001 and waits (bounded)
    /// for them to finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut shutdown = self.shutdown.subscribe();
        let revocations = tokio::spawn(Arc::clone(&self).follow_revocations());
        let housekeeping = tokio::spawn(Arc::clone(&self).housekeeping());
        let health = tokio::spawn(Arc::clone(&self).health_checks());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let state = self.state.load();
                    // Before anything is read: a token from the address's handshake bucket (if
                    // a rate is set), then a place among the connections not yet upgraded, so
                    // that fast, slow or silent clients cannot take more than their share.
                    let trusted =
                        crate::limits::is_trusted(peer.ip(), &state.settings.trusted_proxies);
                    let rate = match &state.handshake_rate {
                        Some(rate) if !trusted => rate.check(peer.ip()),
                        _ => Ok(()),
                    };
                    let admitted =
                        rate.and_then(|()| self.limits.acquire_pending(peer.ip(), !trusted));
                    let pending = match admitted {
                        Ok(p) => p,
                        Err(refusal) => {
                            self.refuse_unread(refusal, &stream, peer, state.tls.is_none());
                            continue;
                        }
                    };
                    match &state.tls {
                        None => {
                            tokio::spawn(
                                Arc::clone(&self).connection(stream, peer, false, pending),
                            );
                        }
                        Some(acceptor) => {
                            let accept = acceptor.accept(stream);
                            let deadline = state.settings.handshake_timeout;
                            let gateway = Arc::clone(&self);
                            tokio::spawn(async move {
                                match tokio::time::timeout(deadline, accept).await {
                                    Ok(Ok(tls)) => gateway.connection(tls, peer, true, pending).await,
                                    Ok(Err(e)) => {
                                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                                    }
                                    Err(_) => {
                                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                                    }
                                }
                            });
                        }
                    }
                }
                () = crate::shutdown_signalled(&mut shutdown) => break,
            }
        }
        drop(listener);
        let asked = self.registry.close_all(CloseReason::Shutdown);
        tracing::info!(event = "shutdown", sockets = asked, "closing sockets");
        let deadline = Instant::now() + self.state.load().settings.drain_timeout;
        while !self.registry.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        revocations.abort();
        housekeeping.abort();
        health.abort();
    }

    /// Every [`HOUSEKEEPING`]: drops expired tickets and full per-user rate buckets; every
    /// [`STORE_PURGE_EVERY`] rounds, purges expired sessions and tombstones from the store, so
    /// nothing grows without bound.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut round = 0u32;
        loop {
            tick.tick().await;
            round = round.wrapping_add(1);
            self.sweep(round.is_multiple_of(STORE_PURGE_EVERY)).await;
        }
    }

    /// Probes every upstream each `gateway.health_check.interval` (read again each round, so a
    /// reload turns checks on, off or changes them), all upstreams at once.
    async fn health_checks(self: Arc<Self>) {
        loop {
            let check = self.state.load().settings.health_check.clone();
            let Some(check) = check else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            self.probe_all(&check).await;
            tokio::time::sleep(check.interval).await;
        }
    }

    /// One round of probes; logs each upstream whose health changed.
    pub(crate) async fn probe_all(&self, check: &crate::config::HealthCheckConfig) {
        let state = self.state.load_full();
        let mut seen = std::collections::HashSet::new();
        let mut probes = Vec::new();
        for route in &state.routes {
            for m in route.pool.members() {
                if !seen.insert(m.backend.key().to_owned()) {
                    continue;
                }
                let (m, tls) = (m.clone(), route.tls.clone());
                let path = check.path.clone();
                let timeout = check.timeout;
                probes.push(async move {
                    let ok =
                        crate::health::probe(&m.url, tls.as_ref(), path.as_deref(), timeout).await;
                    let was_up = m.backend.is_up(Instant::now());
                    m.backend.probed(ok);
                    if was_up != ok {
                        tracing::warn!(
                            event = "upstream_health",
                            upstream = m.backend.key(),
                            up = ok,
                            "health check changed the upstream's state"
                        );
                    }
                });
            }
        }
        futures_util::future::join_all(probes).await;
    }

    /// One housekeeping round; returns (expired tickets dropped, store rows purged).
    pub(crate) async fn sweep(&self, purge_store: bool) -> (usize, usize) {
        let tickets = self.tickets.purge(now_ms());
        let state = self.state.load();
        for route in &state.routes {
            route.messages.shrink();
        }
        if let Some(rate) = &state.handshake_rate {
            rate.shrink();
        }
        let mut purged = 0;
        if purge_store {
            match self.sessions.store().purge(now_secs()).await {
                Ok(n) => purged = n,
                Err(e) => tracing::warn!(error = %e, "cannot purge expired sessions"),
            }
        }
        tracing::debug!(expired_tickets = tickets, purged, "housekeeping");
        (tickets, purged)
    }

    /// Closes live sockets as revocations arrive (from this process or, through the store,
    /// from others). After missed events, re-checks every socket against the store.
    async fn follow_revocations(self: Arc<Self>) {
        let mut events = self.sessions.subscribe();
        loop {
            match events.recv().await {
                // The store's feed may have missed events: as after a lag.
                Ok(wsguard_store::Revocation::Resync) => {
                    tracing::warn!("revocation feed resynchronised; re-checking every socket");
                    self.recheck_all().await;
                }
                Ok(event) => {
                    let n = self.registry.apply(&event);
                    tracing::debug!(closed = n, "revocation applied");
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "revocation events missed; re-checking every socket");
                    self.recheck_all().await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn recheck_all(&self) {
        let store = self.sessions.store();
        for (id, sid, uid, created) in self.registry.sessions() {
            let revoked = matches!(store.get(&sid).await, Ok(wsguard_store::Lookup::Revoked))
                || matches!(store.user_revoked_at(&uid).await, Ok(Some(at)) if created <= at);
            if revoked {
                self.registry.close_conn(id, CloseReason::SessionRevoked);
            }
        }
    }

    /// Refuses a connection before reading from it (a pending-handshake limit is full): counts
    /// the refusal, logs it at debug level (these come in floods, which must not flood the log
    /// too; the metric shows them) and, on a plain listener, writes its fixed response if the
    /// socket takes it at once. The connection is then dropped; a request already received
    /// makes the close a reset, so the client may not see the response.
    fn refuse_unread(&self, refusal: Refusal, stream: &TcpStream, peer: SocketAddr, plain: bool) {
        self.metrics.refused(refusal);
        tracing::debug!(
            event = "handshake_refused",
            reason = refusal.code(),
            status = refusal.status(),
            peer = %peer,
        );
        if plain {
            let _ = stream.try_write(unread_refusal(refusal).as_bytes());
        }
    }

    /// Serves one connection's HTTP until it is upgraded or ends; `pending` is its place among
    /// the connections not yet upgraded, given back when this returns.
    async fn connection<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        tls: bool,
        pending: PendingSlot,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(stream);
        let settings = &self.state.load().settings;
        let gateway = Arc::clone(&self);
        let service = hyper::service::service_fn(move |req| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, Infallible>(gateway.handle(req, peer, tls).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.handshake_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192))
            .max_headers(settings.max_headers);
        // Returns once the 101 is written and the socket handed over, or the connection ends.
        if let Err(e) = builder.serve_connection(io, service).with_upgrades().await {
            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
        }
        drop(pending);
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let outcome = if *self.shutdown.borrow() {
            Err(Refusal::ShuttingDown)
        } else {
            self.dispatch(req, peer, tls).await
        };
        match outcome {
            Ok(r) => r,
            Err(refusal) => {
                self.metrics.refused(refusal);
                refuse(refusal, peer, &path)
            }
        }
    }

    /// The rules every request meets, then the endpoint its normalised path names: the ticket
    /// endpoint or an upgrade.
    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Result<Response<Body>, Refusal> {
        let host = handshake::check_request(req.headers())?.to_owned();
        let target = crate::target::parse(req.uri(), &host)?;
        if target.path == TICKET_PATH {
            // Answered here, refusals included, so that an allowed origin's script can read
            // every answer (CORS headers on all of them).
            let cors = self.cors_origin(req.headers());
            let mut r = match self.ticket(&req).await {
                Ok(r) => r,
                Err(refusal) => {
                    self.metrics.refused(refusal);
                    refuse(refusal, peer, TICKET_PATH)
                }
            };
            let h = r.headers_mut();
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            if let Some(origin) = cors {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            return Ok(r);
        }
        self.upgrade(
            req,
            Checked {
                peer,
                tls,
                host,
                target,
            },
        )
        .await
    }

    /// The origin to name in the ticket endpoint's CORS headers: the request's `Origin` if the
    /// ticket origins allow it (re-serialised), never `*` and never for `null` or none.
    fn cors_origin(&self, headers: &http::HeaderMap) -> Option<HeaderValue> {
        match self
            .state
            .load()
            .ticket_origins
            .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))
        {
            Ok(o @ crate::origin::Allowed::Origin(_)) => o.header_value(),
            _ => None,
        }
    }

    /// `POST /wsguard/ticket`: a valid cookie and an allowed Origin get a one-time ticket.
    /// `OPTIONS` answers a CORS preflight from an allowed origin (a page on another origin
    /// that asks with `credentials: "include"` and a `Content-Type`).
    async fn ticket(&self, req: &Request<Incoming>) -> Result<Response<Body>, Refusal> {
        if req.method() == Method::OPTIONS {
            return self.preflight(req.headers());
        }
        if req.method() != Method::POST {
            return Err(Refusal::NotPost);
        }
        let headers = req.headers();
        self.state
            .load()
            .ticket_origins
            .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))?;
        let token = cookie::session_cookie(
            headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
            &self.cookie_name,
            self.cookie_values(),
        )
        .map_err(cookie_refusal)?
        .ok_or(Refusal::NoCredentials)?
        .to_owned();
        let session = self.authenticate(&token).await?;
        let ticket = self
            .tickets
            .issue(session.uid().as_str(), &token, now_ms())
            .map_err(|e| match e {
                crate::tickets::TicketError::UserFull => Refusal::TooManyForUser,
                crate::tickets::TicketError::Full => Refusal::TooManyConnections,
            })?;
        let body = serde_json::json!({ "ticket": ticket, "expires_in_ms": self.tickets.ttl_ms() });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    /// A CORS preflight for the ticket endpoint: only from an allowed origin, only for POST.
    fn preflight(&self, headers: &http::HeaderMap) -> Result<Response<Body>, Refusal> {
        if self.cors_origin(headers).is_none() {
            return Err(match headers.get(header::ORIGIN) {
                None => Refusal::OriginMissing,
                Some(_) => Refusal::OriginNotAllowed,
            });
        }
        let method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        if method.is_none_or(|m| m.as_bytes() != b"POST") {
            return Err(Refusal::NotPost);
        }
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    async fn authenticate(&self, token: &str) -> Result<Session, Refusal> {
        match self.sessions.authenticate(token, now_secs()).await {
            Ok(s) => Ok(s),
            Err(AuthError::Rejected(r)) => Err(Refusal::Session(r)),
            Err(AuthError::Store(e)) => {
                tracing::error!(error = %e, "session store unavailable; refusing (fail closed)");
                Err(Refusal::StoreUnavailable)
            }
        }
    }

    async fn upgrade(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        checked: Checked,
    ) -> Result<Response<Body>, Refusal> {
        let Checked {
            peer,
            tls,
            host,
            target,
        } = checked;
        let up = handshake::check(req.method(), req.version(), req.headers())?;
        // One configuration for the whole handshake, even if a reload lands meanwhile.
        let state = self.state.load_full();
        let route = crate::target::route(&state.routes, &target.path)?;
        let headers = req.headers();
        let origin = route
            .origins
            .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))?;

        // Taken before the store is read: see `Sessions::still_live_after`.
        let revocation_mark = self.sessions.revocation_mark();
        let session = if route.public {
            None
        } else if let Some(ticket) = &target.ticket {
            let token = self
                .tickets
                .redeem(ticket, now_ms())
                .ok_or(Refusal::TicketInvalid)?;
            Some(self.authenticate(&token).await?)
        } else {
            let token = cookie::session_cookie(
                headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
                &self.cookie_name,
                self.cookie_values(),
            )
            .map_err(cookie_refusal)?
            .ok_or(Refusal::NoCredentials)?;
            Some(self.authenticate(token).await?)
        };

        let trusted = &state.settings.trusted_proxies;
        let chain = ClientChain::new(
            peer.ip(),
            headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes()),
            trusted,
        );
        // Everything the upstream is told, rebuilt from what was checked above.
        let upstream_headers = state.forwarding.headers(
            headers,
            &Decided {
                session: session.as_ref(),
                origin: origin.header_value(),
                protocols: &up.protocols,
                chain: &chain,
                trusted,
                host: &host,
                tls,
                cookie_name: &self.cookie_name,
            },
        )?;
        let client_ip = chain.client();
        let slot = self
            .limits
            .acquire(client_ip, session.as_ref().map(Session::uid))?;

        // permessage-deflate, on routes that enable it: the client's offers answered; the
        // upstream is offered it only if the client agreed (else it would only cost inflating).
        let client_deflate = route
            .compression
            .then(|| {
                let offers = req.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS);
                crate::deflate::answer(offers.iter().map(|v| v.as_bytes()))
            })
            .flatten();

        // Dial an upstream only now that the client has passed every check; it is asked for
        // exactly the path that was matched.
        let (upstream, (protocol, upstream_deflate), lease) = self
            .dial(
                route,
                &target,
                &upstream_headers,
                &state.settings,
                client_deflate.is_some(),
            )
            .await?;
        if let Some(p) = &protocol {
            // The upstream may only pick one of the client's offers.
            if !up.protocols.iter().any(|o| o.as_bytes() == p.as_bytes()) {
                tracing::warn!(
                    event = "upstream_failed",
                    error = "upstream chose a subprotocol the client did not offer"
                );
                return Err(Refusal::UpstreamFailed);
            }
        }

        self.metrics.accepted();
        let on_upgrade = hyper::upgrade::on(&mut req);
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&handshake::accept_key(&up.key)) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        let client_deflate = client_deflate.and_then(|(agreed, answer)| {
            let v = HeaderValue::from_str(&answer).ok()?;
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
            Some(agreed)
        });

        let gateway = Arc::clone(self);
        let route_path = route.path.clone();
        let messages = Arc::clone(&route.messages);
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "client upgrade failed");
                    return;
                }
            };
            let (mut client, client_read) = crate::stream::unwrap_upgraded::<
                tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
            >(upgraded);
            let (mut upstream, upstream_read) = upstream;
            gateway
                .run_socket(
                    crate::relay::Opened {
                        io: &mut client,
                        read: client_read,
                        deflate: client_deflate,
                    },
                    crate::relay::Opened {
                        io: &mut upstream,
                        read: upstream_read,
                        deflate: upstream_deflate,
                    },
                    (session, revocation_mark),
                    (peer, client_ip),
                    (&route_path, lease.backend().key()),
                    &messages,
                )
                .await;
            drop((slot, lease));
        });
        Ok(resp)
    }

    /// Dials the route's upstreams in the pool's order until one completes the handshake, all
    /// within `gateway.upstream_timeout`. An upstream that cannot be reached is passed over for
    /// `gateway.upstream_backoff` and the next one is tried; one that answers but refuses the
    /// handshake ends the attempt (the application said no). Returns the socket, the
    /// subprotocol chosen, and the place taken on that upstream.
    async fn dial(
        &self,
        route: &crate::config::Route,
        target: &crate::target::Target,
        headers: &http::HeaderMap,
        settings: &crate::config::GatewayConfig,
        compression: bool,
    ) -> Result<
        (
            crate::upstream::UpstreamSocket,
            crate::upstream::Agreed,
            crate::pool::Lease,
        ),
        Refusal,
    > {
        let deadline = tokio::time::Instant::now() + settings.upstream_timeout;
        let mut tried = Vec::new();
        loop {
            let Some(i) = route.pool.pick(Instant::now(), &tried) else {
                return Err(if tried.is_empty() {
                    Refusal::NoUpstream
                } else {
                    Refusal::UpstreamFailed
                });
            };
            tried.push(i);
            let Some((member, lease)) = route.pool.lease(i) else {
                return Err(Refusal::UpstreamFailed);
            };
            let backend = lease.backend();
            let upstream_target =
                route.upstream_target(&member.url, &target.path, target.query.as_deref());
            let dial = crate::upstream::dial(
                &member.url,
                &upstream_target,
                headers,
                route.tls.as_ref(),
                compression,
            );
            match tokio::time::timeout_at(deadline, dial).await {
                Ok(Ok((socket, agreed))) => {
                    backend.dial_succeeded();
                    return Ok((socket, agreed, lease));
                }
                Ok(Err(e)) if e.is_unreachable() => {
                    backend.dial_failed(Instant::now(), settings.upstream_backoff);
                    self.metrics.upstream_failed(backend.key());
                    tracing::warn!(
                        event = "upstream_failed",
                        error = %e,
                        route = %route.path,
                        upstream = backend.key(),
                        "passed over for gateway.upstream_backoff; trying the next upstream"
                    );
                }
                Ok(Err(e)) => {
                    self.metrics.upstream_failed(backend.key());
                    tracing::warn!(
                        event = "upstream_failed",
                        error = %e,
                        route = %route.path,
                        upstream = backend.key(),
                    );
                    return Err(Refusal::UpstreamFailed);
                }
                Err(_) => {
                    backend.dial_failed(Instant::now(), settings.upstream_backoff);
                    self.metrics.upstream_failed(backend.key());
                    tracing::warn!(
                        event = "upstream_failed",
                        error = "no handshake within gateway.upstream_timeout",
                        route = %route.path,
                        upstream = backend.key(),
                    );
                    return Err(Refusal::UpstreamTimeout);
                }
            }
        }
    }

    async fn run_socket<C, U>(
        &self,
        client: crate::relay::Opened<'_, C>,
        upstream: crate::relay::Opened<'_, U>,
        (mut session, revocation_mark): (Option<Session>, Option<u64>),
        (peer, client_ip): (SocketAddr, std::net::IpAddr),
        (route, upstream_key): (&str, &str),
        messages: &Arc<crate::policy::RoutePolicy>,
    ) where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let now = now_secs();
        let opened = Instant::now();
        let (registration, stop) = self.registry.register(
            session.as_ref(),
            (peer, client_ip),
            (route, upstream_key),
            now,
        );
        // A revocation between authentication and registration would be missed: check again
        // (without a store round trip when no revocation was announced since the mark).
        if let Some(s) = &session
            && let Err(r) = Box::pin(self.sessions.still_live_after(s, revocation_mark, now)).await
        {
            tracing::info!(event = "closed_by_gateway", reason = "session_revoked", peer = %peer, detail = %r);
            self.registry
                .close_conn(registration.id(), CloseReason::SessionRevoked);
        }
        // Likewise a reload that retired the token's key between authentication and
        // registration (one that lands after this check finds the socket in the registry).
        if let Some(s) = &session
            && !self.sessions.keys_still_accept(s, now)
        {
            tracing::info!(event = "closed_by_gateway", reason = "key_retired", peer = %peer);
            self.registry
                .close_conn(registration.id(), CloseReason::KeyRetired);
        }
        let expires_in = session
            .as_ref()
            .map(|s| Duration::from_secs(s.expires_at().saturating_sub(now)));
        let uid = session.as_ref().map(|s| s.uid().as_str().to_owned());
        // The first 8 characters: enough to find the session in the admin API, too few to use.
        let sid_prefix = session
            .as_ref()
            .map(|s| s.sid().as_str().chars().take(8).collect::<String>());
        let touch_every = Duration::from_secs(self.sessions.touch_interval().max(1));
        let mut next_touch = Instant::now() + touch_every;
        let sessions = self.sessions.clone();
        let policy = messages.connection(uid.as_deref());
        self.metrics.open.inc();
        let opt = |d: Duration| (!d.is_zero()).then_some(d);
        let timing = {
            let settings = &self.state.load().settings;
            crate::relay::Timing {
                idle: opt(settings.idle_timeout),
                ping: opt(settings.ping_interval),
                pong: settings.pong_timeout,
                send: settings.send_timeout,
            }
        };
        // Boxed: the relay lives as long as the socket, the states around it do not, and a
        // separate allocation keeps them from being laid out side by side (memory per socket).
        let cfg = messages.config();
        let limits = crate::relay::Limits {
            max_frame: messages.max_frame_bytes() as u64,
            max_message: cfg.max_message_bytes as u64,
            max_fragments: cfg.max_fragments,
            assembly: Some(cfg.assembly_timeout),
            max_inflate_ratio: Some(cfg.max_inflate_ratio),
        };
        let ended = Box::pin(relay(
            client,
            upstream,
            stop,
            (&self.metrics, registration.traffic()),
            expires_in,
            timing,
            limits,
            |seen| {
                let verdict = policy.judge(seen);
                let Some(s) = session.as_mut() else {
                    return verdict;
                };
                if !matches!(
                    verdict,
                    crate::policy::Verdict::Forward | crate::policy::Verdict::Rewrite(_)
                ) {
                    return verdict;
                }
                let now_i = Instant::now();
                if now_i < next_touch {
                    return verdict;
                }
                next_touch = now_i + touch_every;
                let sessions = sessions.clone();
                let mut s = s.clone();
                tokio::spawn(async move {
                    if let Err(e) = sessions.touch_if_due(&mut s, now_secs()).await {
                        tracing::warn!(error = %e, "cannot record session activity");
                    }
                });
                verdict
            },
        ))
        .await;
        self.metrics.open.dec();
        match &ended {
            Ended::ByGateway(r) => self.metrics.closed_by_gateway(*r),
            Ended::ByClient(code) => self.metrics.closed(*code, "client"),
            Ended::ByUpstream(code) => self.metrics.closed(*code, "upstream"),
        }
        // The access log: one line per socket, at its close.
        let (closed_by, code, reason) = match &ended {
            Ended::ByGateway(r) => ("gateway", Some(r.close_code()), r.code()),
            Ended::ByClient(code) => ("client", *code, "-"),
            Ended::ByUpstream(code) => ("upstream", *code, "-"),
        };
        let t = registration.traffic().counts();
        let sid = sid_prefix.as_deref().unwrap_or("-");
        tracing::info!(
            event = "socket_closed",
            conn = registration.id(),
            route,
            upstream = upstream_key,
            user = uid.as_deref().unwrap_or("-"),
            session = sid,
            client = %client_ip,
            peer = %peer,
            duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
            messages_in = t.messages_in,
            bytes_in = t.bytes_in,
            messages_out = t.messages_out,
            bytes_out = t.bytes_out,
            code = code.map_or_else(|| "none".to_owned(), |c| c.to_string()),
            closed_by,
            reason,
        );
        drop(registration);
    }
}

/// A duplicate session cookie is ambiguous; an unusable value is a malformed token.
fn cookie_refusal(e: cookie::CookieError) -> Refusal {
    match e {
        cookie::CookieError::Duplicate => Refusal::CookieAmbiguous,
        cookie::CookieError::Invalid => Refusal::Session(wsguard_token::Rejection::Malformed(
            wsguard_token::Malformed::Encoding,
        )),
    }
}

impl Gateway {
    /// Strict cookie values, unless legacy tutorial tokens (raw JSON) are accepted.
    fn cookie_values(&self) -> cookie::CookieValues {
        if self.sessions.verifier().policy().accept_legacy_tokens {
            cookie::CookieValues::LegacyJson
        } else {
            cookie::CookieValues::Strict
        }
    }

    pub(crate) fn set_loader(&self, loader: Loader) {
        *self.loader.lock().unwrap_or_else(|p| p.into_inner()) = Some(loader);
    }

    /// Reads the configuration again and applies it, or keeps the one in force.
    pub(crate) fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let loader = self
            .loader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ReloadError::NotConfigured)?;
        let previous = self.state.load();
        let outcome = loader().and_then(|reload| {
            let state = crate::build_state(&reload.settings, &previous.backends)?;
            Ok((reload, state))
        });
        drop(previous);
        let (reload, mut state) = match outcome {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(
                    event = "reload_refused",
                    error = %e.replace('\n', "; "),
                    "configuration not reloaded; the one in force stays"
                );
                self.metrics.reloaded("refused");
                return Err(ReloadError::Invalid(e));
            }
        };
        let mut restart_required = reload.restart_required;
        let new = &reload.settings;
        let old = self.state.load();
        if new.gateway.listen != self.listeners.0 {
            restart_required.push("gateway.listen".into());
        }
        if new.admin.listen != self.listeners.1 {
            restart_required.push("admin.listen".into());
        }
        if new.cookie_name != self.cookie_name {
            restart_required.push("sessions.cookie_name".into());
        }
        if new.cookie != self.cookie {
            restart_required.push("sessions.cookie_domain, cookie_secure, cookie_same_site".into());
        }
        if new.gateway.ticket_ttl != old.settings.ticket_ttl {
            restart_required.push("gateway.ticket_ttl".into());
        }
        self.limits.set_config(crate::limit_config(&new.gateway));
        self.sessions.set_verifier(reload.verifier);
        // Sockets whose token was signed by a key the new ring dropped (or whose secret it
        // changed) close now; every other live socket is kept.
        let retired = self.registry.close_retired(
            &self.sessions.verifier(),
            now_secs(),
            CloseReason::KeyRetired,
        );
        // A route that stays, with the same per-user rates, keeps its users' buckets: a reload
        // must not hand every user a second budget.
        for route in &mut state.routes {
            if let Some(before) = old.routes.iter().find(|r| r.path == route.path) {
                route.messages.keep_user_buckets(&before.messages);
            }
        }
        // Likewise the handshake buckets of every address, if the rate stays.
        if let (Some(new), Some(before)) = (&state.handshake_rate, &old.handshake_rate)
            && new.quota() == before.quota()
        {
            state.handshake_rate = Some(Arc::clone(before));
        }
        self.state.store(Arc::new(state));
        self.metrics.reloaded("applied");
        tracing::info!(
            event = "reloaded",
            routes = new.routes.len(),
            closed_retired_keys = retired,
            restart_required = %restart_required.join(", "),
            "configuration reloaded; sockets of retired keys closed, the others kept"
        );
        Ok(restart_required)
    }
}
