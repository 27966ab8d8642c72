//! A guarded socket's life after the 101: every client message judged by the route's message
//! policy, the session followed for revocation and expiry, activity touched, and the close the
//! guard decides.
//!
//! Owns the I/O around `wsguard-policy`'s per-socket judge ([`ConnPolicy`]) and
//! `wsguard-session`'s revocation events, as the gateway's `socket.rs` and relay do: a refusal
//! closes with the reason table's code and text (a size over the route's limits is tungstenite's
//! to detect while it reads, and closes with 1009); a revocation of the session or its user
//! closes with 1008 `session revoked`; after missed events (a lag, or the store's `Resync`) the
//! session is re-checked with [`Sessions::still_live`](wsguard_session::Sessions::still_live),
//! and a store that cannot answer is asked again until it does, never taken as "live". It
//! decides nothing itself and never logs the token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio::sync::broadcast;
use tokio::time::Instant;
use wsguard_policy::policy::{ConnPolicy, Seen, Verdict};
use wsguard_policy::reason::CloseReason;
use wsguard_session::{AuthError, Session, Sessions};
use wsguard_store::Revocation;

use crate::checks::{Guard, Verified};
use crate::now_secs;

/// How long to wait for the store again after it could not answer a re-check: at first, and
/// at most (doubling in between), as the gateway's re-check does.
const RECHECK_RETRY_FIRST: Duration = Duration::from_millis(50);
const RECHECK_RETRY_MAX: Duration = Duration::from_secs(5);

/// How often the session is re-checked against the store once revocation events can no longer
/// arrive (their channel closed).
const RECHECK_POLL: Duration = Duration::from_secs(5);

/// How long a close the guard sent waits for the client's close frame (the closing handshake)
/// before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A WebSocket whose client messages meet the route's message policy and which closes when its
/// session is revoked or expires. Built by [`GuardedUpgrade::on_upgrade`](crate::GuardedUpgrade::on_upgrade).
///
/// [`GuardedSocket::recv`] returns only what the policy lets through (a stamped message in its
/// stamped form) and closes the socket itself when the policy, a revocation or the session's
/// expiry says so; [`GuardedSocket::send`] sends as axum's `WebSocket` does. `recv` is
/// cancel-safe: use it in `tokio::select!` beside the app's own sources (a broadcast channel,
/// …) so that revocations are seen while the client is quiet.
pub struct GuardedSocket {
    ws: WebSocket,
    session: Session,
    guard: Arc<Guard>,
    policy: ConnPolicy,
    /// Revocation events; `None` once their channel is closed (then the store is polled).
    events: Option<broadcast::Receiver<Revocation>>,
    /// A re-check against the store is due at this instant (missed events, a store that did
    /// not answer, or polling).
    recheck_at: Option<Instant>,
    /// The pause before asking a store that could not answer again.
    retry_pause: Duration,
    /// When the session reaches its absolute maximum age (`None`: beyond any instant).
    expires: Option<Instant>,
    next_touch: Instant,
    touch_every: Duration,
    /// Why the guard closes the socket, once it has decided to.
    closing: Option<CloseReason>,
    close_queued: bool,
    /// Nothing more can be read: the client closed, the connection failed, or it was drained.
    ended: bool,
}

impl std::fmt::Debug for GuardedSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedSocket")
            .field("user", &self.session.uid().as_str())
            .field("closing", &self.closing)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// What woke [`GuardedSocket::recv`].
enum Woken {
    Revocation(Result<Revocation, broadcast::error::RecvError>),
    Recheck,
    Expired,
    Message(Option<Result<Message, axum::Error>>),
}

/// What to do with a message the client sent.
enum Judged {
    Yield(Message),
    Skip,
    Close(CloseReason),
}

impl GuardedSocket {
    /// Starts following revocations, then re-checks the session: a revocation committed between
    /// the layer's authentication and now is seen either by the re-check or as an event.
    pub(crate) async fn open(ws: WebSocket, verified: Verified) -> GuardedSocket {
        let Verified {
            session,
            mark,
            guard,
        } = verified;
        let events = guard.sessions.subscribe();
        let now = now_secs();
        let mut closing = None;
        // Without a store round trip when no revocation was announced since the mark. A store
        // that cannot answer closes the socket (fail closed, as the gateway does).
        if let Err(e) = guard.sessions.still_live_after(&session, mark, now).await {
            tracing::info!(
                event = "closed_by_guard",
                reason = CloseReason::SessionRevoked.code(),
                user = session.uid().as_str(),
                detail = %e,
            );
            closing = Some(CloseReason::SessionRevoked);
        }
        let expires = Instant::now().checked_add(Duration::from_secs(
            session.expires_at().saturating_sub(now),
        ));
        let policy = guard.messages.connection(Some(session.uid().as_str()));
        let touch_every = Duration::from_secs(guard.sessions.touch_interval().max(1));
        GuardedSocket {
            ws,
            policy,
            events: Some(events),
            recheck_at: None,
            retry_pause: RECHECK_RETRY_FIRST,
            expires,
            next_touch: Instant::now() + touch_every,
            touch_every,
            closing,
            close_queued: false,
            ended: false,
            session,
            guard,
        }
    }

    /// The verified session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Why the guard closed the socket, if it did (a message refused by the policy, a
    /// revocation, the session's expiry).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closing
    }

    /// Sends a message to the client (not judged: the policy is for what clients send).
    pub async fn send(&mut self, message: Message) -> Result<(), axum::Error> {
        self.ws.send(message).await
    }

    /// The next client message the route's policy lets through, with the sender stamped where
    /// the policy says so; `None` once the socket is closed (by the client, or by the guard,
    /// which then sends the close frame itself). Pings, pongs and the client's close are
    /// returned as axum returns them (pings are answered already); a ping flood closes.
    ///
    /// Cancel-safe: dropping the future loses no message and no decision to close.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(reason) = self.closing {
                self.finish_close(reason).await;
                return None;
            }
            if self.ended {
                return None;
            }
            match self.wait().await {
                Woken::Message(None) => {
                    self.ended = true;
                    return None;
                }
                Woken::Message(Some(Err(e))) => {
                    // The stream is over after an error; some errors are the client's fault
                    // and are said to it.
                    self.ended = true;
                    match close_for(&e) {
                        Some(reason) => self.closing = Some(reason),
                        None => return None,
                    }
                }
                Woken::Message(Some(Ok(message))) => match self.judge(message) {
                    Judged::Yield(m) => return Some(m),
                    Judged::Skip => {}
                    Judged::Close(reason) => self.closing = Some(reason),
                },
                Woken::Revocation(event) => self.revocation(event),
                Woken::Recheck => self.recheck().await,
                Woken::Expired => self.closing = Some(CloseReason::SessionExpired),
            }
        }
    }

    /// Waits for whatever comes first. Every branch is cancel-safe.
    async fn wait(&mut self) -> Woken {
        let events = self.events.as_mut();
        let recheck_at = self.recheck_at;
        let expires = self.expires;
        tokio::select! {
            biased;
            e = async { match events { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                Woken::Revocation(e)
            }
            () = sleep_until(recheck_at) => Woken::Recheck,
            () = sleep_until(expires) => Woken::Expired,
            m = self.ws.recv() => Woken::Message(m),
        }
    }

    /// Applies one revocation event, or arranges a re-check after missed ones.
    fn revocation(&mut self, event: Result<Revocation, broadcast::error::RecvError>) {
        match event {
            Ok(Revocation::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.recheck_at = Some(Instant::now());
            }
            Ok(event) => {
                if Sessions::is_revoked_by(&self.session, &event) {
                    self.closing = Some(CloseReason::SessionRevoked);
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                // The store announces no more revocations: ask it instead, now and then.
                self.events = None;
                self.recheck_at = Some(Instant::now());
            }
        }
    }

    /// Asks the store whether the session is still live. A store that cannot answer is asked
    /// again later, never taken as an answer.
    async fn recheck(&mut self) {
        match self
            .guard
            .sessions
            .still_live(&self.session, now_secs())
            .await
        {
            Ok(()) => {
                self.retry_pause = RECHECK_RETRY_FIRST;
                self.recheck_at = self.events.is_none().then(|| Instant::now() + RECHECK_POLL);
            }
            Err(AuthError::Rejected(r)) => {
                tracing::info!(
                    event = "closed_by_guard",
                    reason = CloseReason::SessionRevoked.code(),
                    user = self.session.uid().as_str(),
                    detail = r.code(),
                );
                self.closing = Some(CloseReason::SessionRevoked);
            }
            Err(AuthError::Store(e)) => {
                tracing::warn!(error = %e, "session store unavailable; re-checking the socket's session again shortly");
                self.recheck_at = Some(Instant::now() + self.retry_pause);
                self.retry_pause = (self.retry_pause * 2).min(RECHECK_RETRY_MAX);
            }
        }
    }

    /// Judges one client message against the route's policy.
    fn judge(&mut self, message: Message) -> Judged {
        let verdict = match &message {
            Message::Text(t) => self.policy.judge(Seen::Text(t.as_str().as_bytes())),
            Message::Binary(b) => self.policy.judge(Seen::Binary(b)),
            Message::Ping(_) | Message::Pong(_) => self.policy.judge(Seen::Control),
            Message::Close(_) => return Judged::Yield(message),
        };
        match verdict {
            Verdict::Forward => {
                self.touch_if_due();
                Judged::Yield(message)
            }
            // Pings and pongs: counted, and answered already.
            Verdict::Drop if matches!(message, Message::Ping(_) | Message::Pong(_)) => {
                Judged::Yield(message)
            }
            Verdict::Drop => Judged::Skip,
            Verdict::Rewrite(text) => match Utf8Bytes::try_from(text) {
                Ok(text) => {
                    self.touch_if_due();
                    Judged::Yield(Message::Text(text))
                }
                // serde_json writes UTF-8; were it not so, the message would not pass.
                Err(_) => Judged::Close(CloseReason::PolicyViolation),
            },
            Verdict::Close(reason) => Judged::Close(reason),
        }
    }

    /// Records the session's activity in the store, at most every `touch_interval` (in the
    /// background: a slow store does not hold the socket).
    fn touch_if_due(&mut self) {
        let now = Instant::now();
        if now < self.next_touch {
            return;
        }
        self.next_touch = now + self.touch_every;
        let sessions = self.guard.sessions.clone();
        let mut session = self.session.clone();
        tokio::spawn(async move {
            if let Err(e) = sessions.touch_if_due(&mut session, now_secs()).await {
                tracing::warn!(error = %e, "cannot record session activity");
            }
        });
    }

    /// Sends the guard's close frame (once), then waits a little for the client's.
    async fn finish_close(&mut self, reason: CloseReason) {
        if !self.close_queued {
            tracing::info!(
                event = "closed_by_guard",
                reason = reason.code(),
                code = reason.close_code(),
                user = self.session.uid().as_str(),
            );
            let frame = CloseFrame {
                code: reason.close_code(),
                reason: Utf8Bytes::from_static(reason.text()),
            };
            // Queued whole or not at all (`feed` is one `start_send` once ready).
            let _ = self.ws.feed(Message::Close(Some(frame))).await;
            self.close_queued = true;
        }
        let _ = self.ws.flush().await;
        if !self.ended {
            let ws = &mut self.ws;
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Some(Ok(_)) = ws.recv().await {}
            })
            .await;
            self.ended = true;
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The close a read error calls for: the client's fault is said to it (a message or frame over
/// the route's limits, text that is not UTF-8, a protocol violation); a connection that is gone
/// gets nothing.
fn close_for(e: &axum::Error) -> Option<CloseReason> {
    use std::error::Error as _;
    use tungstenite::error::ProtocolError;
    // axum's `ws` feature wraps the error of its tungstenite, the version this crate names.
    let Some(e) = e
        .source()
        .and_then(|s| s.downcast_ref::<tungstenite::Error>())
    else {
        return Some(CloseReason::ProtocolError);
    };
    match e {
        tungstenite::Error::Capacity(_) => Some(CloseReason::MessageTooBig),
        tungstenite::Error::Utf8(_) => Some(CloseReason::InvalidPayload),
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(_) => Some(CloseReason::ProtocolError),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_errors_map_to_the_tables_closes() {
        let err = |e: tungstenite::Error| axum::Error::new(e);
        let too_big = tungstenite::error::CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        };
        assert_eq!(
            close_for(&err(tungstenite::Error::Capacity(too_big))),
            Some(CloseReason::MessageTooBig)
        );
        assert_eq!(
            close_for(&err(tungstenite::Error::Utf8("x".into()))),
            Some(CloseReason::InvalidPayload)
        );
        assert_eq!(
            close_for(&err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::NonZeroReservedBits
            ))),
            Some(CloseReason::ProtocolError)
        );
        assert_eq!(close_for(&err(tungstenite::Error::ConnectionClosed)), None);
    }
}
