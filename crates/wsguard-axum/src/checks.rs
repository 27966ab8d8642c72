//! The gateway's handshake checks, in the gateway's order, for one guarded route.
//!
//! ```text
//! request ──► check_request (Host, no body) ──► target (normalise the path, split `ticket`)
//!         ──► strict handshake checks ──► origin ──► ticket | session cookie
//!         ──► Sessions::authenticate (a store error: 503 store_unavailable, never a pass)
//!         ──► the verified Session, into the request's extensions
//! ```
//!
//! Owns the order and what each phase hands the next ([`Guard::verify`]). Every decision is
//! `wsguard-policy`'s (`handshake`, `target`, `origin`, `cookie`, `tickets`) or
//! `wsguard-session`'s; each phase either passes or returns a [`Refusal`], answered by
//! `refused.rs`. There is no route table and no upstream: the app's router chose the route, and
//! the app is the backend. Nothing here logs a token, cookie or ticket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, Method, Request, Version, header};
use wsguard_policy::cookie::{self, CookieValues};
use wsguard_policy::origin::OriginPolicy;
use wsguard_policy::policy::RoutePolicy;
use wsguard_policy::reason::Refusal;
use wsguard_policy::tickets::Tickets;
use wsguard_policy::{handshake, target};
use wsguard_session::{AuthError, Session, Sessions};

use crate::{now_ms, now_secs};

/// How often expired tickets and full per-user rate buckets are dropped (as the gateway's
/// housekeeping), on the next request after it is due.
const HOUSEKEEPING_MS: u64 = 30_000;

/// One guarded route: what the checks need, shared by the layer, its services, the extractors
/// and the route's sockets.
pub(crate) struct Guard {
    pub(crate) sessions: Sessions,
    pub(crate) origins: OriginPolicy,
    pub(crate) cookie_name: String,
    pub(crate) tickets: Arc<Tickets>,
    /// The route's message policy (its per-user rate buckets are shared by the route's sockets).
    pub(crate) messages: Arc<RoutePolicy>,
    next_housekeeping_ms: AtomicU64,
}

impl Clone for Guard {
    fn clone(&self) -> Guard {
        Guard {
            sessions: self.sessions.clone(),
            origins: self.origins.clone(),
            cookie_name: self.cookie_name.clone(),
            tickets: Arc::clone(&self.tickets),
            messages: Arc::clone(&self.messages),
            next_housekeeping_ms: AtomicU64::new(self.next_housekeeping_ms.load(Ordering::Relaxed)),
        }
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("origins", &self.origins)
            .field("cookie_name", &self.cookie_name)
            .field("tickets", &self.tickets)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

/// What the layer established, for the extractors: the session, the revocation mark taken
/// before it was authenticated (`Sessions::still_live_after`), and the route.
#[derive(Clone)]
pub(crate) struct Verified {
    pub(crate) session: Session,
    pub(crate) mark: Option<u64>,
    pub(crate) guard: Arc<Guard>,
}

/// The credential a request carries (owned: the request moves on while it is checked).
enum Credential {
    Ticket(String),
    Cookie(zeroize::Zeroizing<String>),
}

/// Whether a request asks for a WebSocket (or any other) upgrade, and so meets the checks: any
/// `Upgrade` header, any `Sec-WebSocket-Key`, or `CONNECT` (HTTP/2's extended CONNECT carries no
/// `Upgrade`). Anything else is not an upgrade the app's `WebSocketUpgrade` would accept.
pub(crate) fn is_upgrade_attempt<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    req.method() == Method::CONNECT
        || h.contains_key(header::UPGRADE)
        || h.contains_key(header::SEC_WEBSOCKET_KEY)
}

impl Guard {
    pub(crate) fn new(
        sessions: Sessions,
        origins: OriginPolicy,
        cookie_name: String,
        tickets: Arc<Tickets>,
        messages: Arc<RoutePolicy>,
    ) -> Guard {
        Guard {
            sessions,
            origins,
            cookie_name,
            tickets,
            messages,
            next_housekeeping_ms: AtomicU64::new(0),
        }
    }

    /// Every check of an upgrade request, in the gateway's order; the verified session or why
    /// not.
    pub(crate) fn verify<B>(
        self: &Arc<Self>,
        req: &Request<B>,
    ) -> impl Future<Output = Result<Verified, Refusal>> + Send + 'static {
        self.housekeeping_if_due();
        let checked = self.check_request(req.method(), req.version(), req.uri(), req.headers());
        let guard = Arc::clone(self);
        async move { guard.authenticate_credential(checked?).await }
    }

    /// The synchronous phases: request rules, target, strict handshake, origin, and the
    /// credential to authenticate.
    fn check_request(
        &self,
        method: &Method,
        version: Version,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<Credential, Refusal> {
        let host = handshake::check_request(headers)?;
        let target = target::parse(uri, host)?;
        handshake::check(method, version, headers)?;
        self.origins
            .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))?;
        if let Some(ticket) = target.ticket {
            return Ok(Credential::Ticket(ticket));
        }
        let token = self.session_cookie(headers)?;
        Ok(Credential::Cookie(zeroize::Zeroizing::new(
            token.to_owned(),
        )))
    }

    /// The session cookie's value: exactly one, well formed.
    pub(crate) fn session_cookie<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, Refusal> {
        cookie::session_cookie(
            headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
            &self.cookie_name,
            self.cookie_values(),
        )
        .map_err(Refusal::from)?
        .ok_or(Refusal::NoCredentials)
    }

    /// Strict cookie values, unless legacy tutorial tokens (raw JSON) are accepted.
    fn cookie_values(&self) -> CookieValues {
        if self.sessions.verifier().policy().accept_legacy_tokens {
            CookieValues::LegacyJson
        } else {
            CookieValues::Strict
        }
    }

    async fn authenticate_credential(
        self: Arc<Self>,
        credential: Credential,
    ) -> Result<Verified, Refusal> {
        // Taken before the store is read: see `Sessions::still_live_after`.
        let mark = self.sessions.revocation_mark();
        let session = match credential {
            Credential::Ticket(ticket) => {
                let token = self
                    .tickets
                    .redeem(&ticket, now_ms())
                    .ok_or(Refusal::TicketInvalid)?;
                self.authenticate(&token).await?
            }
            Credential::Cookie(token) => self.authenticate(&token).await?,
        };
        Ok(Verified {
            session,
            mark,
            guard: self,
        })
    }

    /// [`Sessions::authenticate`] at now, its errors in the table; a store that cannot answer is
    /// a refusal (fail closed).
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

    /// Drops expired tickets and full per-user rate buckets, at most every
    /// [`HOUSEKEEPING_MS`], on whichever request finds it due (no task of its own).
    pub(crate) fn housekeeping_if_due(&self) {
        let now = now_ms();
        let due = self.next_housekeeping_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_housekeeping_ms
                .compare_exchange(
                    due,
                    now + HOUSEKEEPING_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.tickets.purge(now);
            self.messages.shrink();
        }
    }
}
