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

fn text_response(status: u16, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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
            return self.ticket(&req).await;
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

    /// `POST /wsguard/ticket`: a valid cookie and an allowed Origin get a one-time ticket.
    async fn ticket(&self, req: &Request<Incoming>) -> Result<Response<Body>, Refusal> {
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
        let slot = self
            .limits
            .acquire(chain.client(), session.as_ref().map(Session::uid))?;

        // permessage-deflate, on routes that enable it: the client's offers answered; the
        // upstream is offered it only if the client agreed (else it would only cost inflating).
        let client_deflate = route
            .compression
            .then(|| {
                let offers = req.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS);
                crate::deflate::answer(offers.iter().map(|v| v.as_bytes()))
            })
            .flatten();

        // Dial the upstream only now that the client has passed every check; it is asked for
        // exactly the path that was matched.
        let upstream_target = route.upstream_target(&target.path, target.query.as_deref());
        let dial = crate::upstream::dial(
            &route.upstream,
            &upstream_target,
            &upstream_headers,
            route.tls.as_ref(),
            client_deflate.is_some(),
        );
        let (upstream, (protocol, upstream_deflate)) =
            match tokio::time::timeout(state.settings.upstream_timeout, dial).await {
                Err(_) => return Err(Refusal::UpstreamTimeout),
                Ok(Err(e)) => {
                    tracing::warn!(event = "upstream_failed", error = %e, route = %route.path);
                    return Err(Refusal::UpstreamFailed);
                }
                Ok(Ok(ok)) => ok,
            };
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
                    peer,
                    &route_path,
                    &messages,
                )
                .await;
            drop(slot);
        });
        Ok(resp)
    }

    async fn run_socket<C, U>(
        &self,
        client: crate::relay::Opened<'_, C>,
        upstream: crate::relay::Opened<'_, U>,
        (mut session, revocation_mark): (Option<Session>, Option<u64>),
        peer: SocketAddr,
        route: &str,
        messages: &Arc<crate::policy::RoutePolicy>,
    ) where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let now = now_secs();
        let (registration, stop) = self.registry.register(session.as_ref(), peer, route, now);
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
            &self.metrics,
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
        if let Ended::ByGateway(reason) = &ended {
            tracing::info!(
                event = "closed_by_gateway",
                reason = reason.code(),
                code = reason.close_code(),
                peer = %peer,
                user = uid.as_deref().unwrap_or("-"),
                conn = registration.id(),
            );
        }
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
        let outcome = loader().and_then(|reload| {
            let state = crate::build_state(&reload.settings)?;
            Ok((reload, state))
        });
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
