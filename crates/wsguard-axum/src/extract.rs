//! The extractors a handler takes: [`GuardedSession`] (the session the layer verified) and
//! [`GuardedUpgrade`] (the WebSocket upgrade, whose socket is a [`GuardedSocket`]).
//!
//! Owns reading what the layer left in the request's extensions, and refusing when it left
//! nothing (the layer did not run, or the request was not an upgrade): 401 through the reason
//! table, never a handler run without a verified session. It checks nothing itself.

use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use wsguard_policy::reason::Refusal;
use wsguard_session::Session;

use crate::checks::Verified;
use crate::refused::Refused;
use crate::socket::GuardedSocket;

/// The session that [`WsGuardLayer`](crate::WsGuardLayer) verified for this request.
///
/// Rejects with `401 unauthenticated: no_credentials` when there is none: the layer did not
/// run on this route, or the request was not an upgrade (the layer verifies upgrades only).
#[derive(Debug, Clone)]
pub struct GuardedSession(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for GuardedSession {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Refused> {
        parts
            .extensions
            .get::<Verified>()
            .map(|v| GuardedSession(v.session.clone()))
            .ok_or(Refused(Refusal::NoCredentials))
    }
}

/// A WebSocket upgrade that [`WsGuardLayer`](crate::WsGuardLayer) verified: axum's
/// [`WebSocketUpgrade`] with the route's message and frame size limits set, the session, and
/// the route's message policy for the socket ([`GuardedUpgrade::on_upgrade`]).
#[derive(Debug)]
pub struct GuardedUpgrade {
    upgrade: WebSocketUpgrade,
    verified: Verified,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Why a [`GuardedUpgrade`] could not be extracted.
#[derive(Debug)]
pub enum UpgradeRejection {
    /// The layer verified no session for this request (401, through the reason table).
    Unauthenticated(Refused),
    /// axum's own upgrade checks refused it (after the layer's stricter ones, only a connection
    /// that cannot be upgraded is left, e.g. a request served without hyper's upgrade support).
    WebSocket(WebSocketUpgradeRejection),
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        match self {
            UpgradeRejection::Unauthenticated(r) => r.into_response(),
            UpgradeRejection::WebSocket(r) => r.into_response(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for GuardedUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, UpgradeRejection> {
        let verified = parts.extensions.get::<Verified>().cloned().ok_or(
            UpgradeRejection::Unauthenticated(Refused(Refusal::NoCredentials)),
        )?;
        let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(UpgradeRejection::WebSocket)?;
        // The sizes are checked by tungstenite as it reads: a frame on its declared length
        // before its payload is read, a message as its fragments arrive.
        let policy = &verified.guard.messages;
        let upgrade = upgrade
            .max_message_size(policy.config().max_message_bytes)
            .max_frame_size(policy.max_frame_bytes());
        Ok(GuardedUpgrade { upgrade, verified })
    }
}

impl GuardedUpgrade {
    /// The verified session.
    pub fn session(&self) -> &Session {
        &self.verified.session
    }

    /// The subprotocols the app speaks, in its order of preference: the first the client also
    /// offered is chosen, as [`WebSocketUpgrade::protocols`] does (the layer has checked that
    /// the client's offers are well formed).
    pub fn protocols<I>(mut self, protocols: I) -> GuardedUpgrade
    where
        I: IntoIterator,
        I::Item: Into<std::borrow::Cow<'static, str>>,
    {
        self.upgrade = self.upgrade.protocols(protocols);
        self
    }

    /// Answers the upgrade (101) and runs `callback` with the socket once the connection is
    /// upgraded, as [`WebSocketUpgrade::on_upgrade`] does. Before `callback` runs, the socket
    /// starts following revocations and re-checks the session (a revocation between the
    /// handshake and now closes it at once).
    #[must_use = "to set up the WebSocket connection, this response must be returned"]
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(GuardedSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let verified = self.verified;
        self.upgrade.on_upgrade(move |ws| async move {
            let socket = GuardedSocket::open(ws, verified).await;
            callback(socket).await;
        })
    }
}
