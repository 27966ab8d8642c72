//! The upgrade pipeline: every request's phases, in order, one function each.
//!
//! ```text
//! request ──► check_request (Host, no body) ──► target (normalise the path, split wsguard's
//!             query) ──► /wsguard/ticket? ──► ticket_endpoint.rs
//!         ──► strict handshake checks ──► route ──► origin ──► authenticate (cookie | ticket)
//!         ──► what the upstream is told (forward.rs) ──► connection limits ──► dial an upstream
//!             (pool order, passive health) ──► 101 ──► socket.rs (registry, relay, access log)
//! ```
//!
//! Every phase either passes what it established to the next or returns a [`Refusal`], which
//! `handle` answers, logs and counts in one place (`refusal.rs`). Nothing is dialled before every
//! check has passed. Tokens, cookies and keys are never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use wsguard_session::{AuthError, Session};

use crate::forward::{ClientChain, Decided};
use crate::reason::Refusal;
use crate::refusal::{Body, refuse};
use crate::state::{Gateway, now_ms, now_secs};
use crate::{cookie, handshake};

/// Path of the ticket endpoint on the public listener.
pub const TICKET_PATH: &str = "/wsguard/ticket";

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
    pub(crate) async fn handle(
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
            Err(refusal) => refuse(&self.metrics, refusal, peer, &path),
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
                Err(refusal) => refuse(&self.metrics, refusal, peer, TICKET_PATH),
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

    pub(crate) async fn authenticate(&self, token: &str) -> Result<Session, Refusal> {
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
            .map_err(Refusal::from)?
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
                identity: session.as_ref().map(|s| crate::forward::Identity {
                    user: s.uid(),
                    session: s.sid(),
                    data: s.data(),
                }),
                origin: origin.forwarded(headers.get(header::ORIGIN)),
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
                state.upstream_tls.get(&route.index),
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
        headers: &crate::forward::HeadLines,
        settings: &crate::config::GatewayConfig,
        tls: Option<&Arc<rustls::ClientConfig>>,
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
            let dial =
                crate::upstream::dial(&member.url, &upstream_target, headers, tls, compression);
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

    /// Strict cookie values, unless legacy tutorial tokens (raw JSON) are accepted.
    pub(crate) fn cookie_values(&self) -> cookie::CookieValues {
        if self.sessions.verifier().policy().accept_legacy_tokens {
            cookie::CookieValues::LegacyJson
        } else {
            cookie::CookieValues::Strict
        }
    }
}
