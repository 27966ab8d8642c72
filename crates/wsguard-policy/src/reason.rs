//! The one table of reasons.
//!
//! Every refused handshake has a [`Refusal`], every gateway-initiated close a [`CloseReason`].
//! This module is the only place that maps them to an HTTP status or a close code, to the reason
//! code written in logs, and to the metric label (they are the same string). `docs/REASONS.md`
//! documents this table; keep them in step. No I/O here.

use wsguard_token::{Malformed, Rejection};

/// Seconds a client is asked to wait (`Retry-After`) before retrying a refusal it may retry.
pub const RETRY_AFTER_SECS: &str = "5";

/// Why a handshake was refused. The client learns the status and a short fixed text, never
/// anything it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` missing, repeated or not `host[:port]`, or an absolute-form target naming another
    /// host (RFC 9112 §3.2).
    BadHost,
    /// A body on a request that takes none (an upgrade, the ticket endpoint): any
    /// `Transfer-Encoding` (with or without `Content-Length`, which the HTTP layer drops then:
    /// RFC 9112 §6.1), or a `Content-Length` other than 0. It is not read, and the connection
    /// is closed.
    RequestBody,
    /// The request target is not a path (`*`, authority-form, another scheme), holds a byte no
    /// target may (controls, space, non-ASCII), has a malformed percent-escape, or gives
    /// wsguard's `ticket` parameter twice or in another spelling.
    BadTarget,
    /// A path that backends could read differently (see `target::normalise` and
    /// `target::route`).
    AmbiguousPath,
    /// Method other than GET.
    NotGet,
    /// Method other than POST on the ticket endpoint.
    NotPost,
    /// Not HTTP/1.1.
    NotHttp11,
    /// No `Upgrade: websocket` (a plain request to a WebSocket route).
    NotWebSocket,
    /// An upgrade to something other than websocket (e.g. `h2c`).
    OtherUpgrade,
    /// `Connection` does not contain `upgrade`.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13.
    BadVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes.
    BadKey,
    /// `Sec-WebSocket-Protocol` present but empty, or not a list of distinct tokens (at most
    /// [`crate::handshake::MAX_PROTOCOLS`]).
    BadProtocol,
    /// Request headers too large or too many (the HTTP layer answers; counted and logged when
    /// its connection ends).
    HeadersTooLarge,
    /// The request head did not arrive within `gateway.handshake_timeout` (the HTTP layer drops
    /// the connection; counted and logged when it ends).
    HandshakeTimeout,
    /// A request the HTTP layer could not parse (it answers 400; counted and logged when its
    /// connection ends).
    MalformedRequest,
    /// No `Origin` header (and the route does not allow that).
    OriginMissing,
    /// Several `Origin` headers.
    OriginMultiple,
    /// `Origin` is not a valid serialized origin.
    OriginMalformed,
    /// `Origin` is valid but not allowed.
    OriginNotAllowed,
    /// No session cookie and no ticket.
    NoCredentials,
    /// Two session cookies, or a malformed `Cookie` header.
    CookieAmbiguous,
    /// The session cookie was rejected.
    Session(Rejection),
    /// The ticket is unknown, used or expired.
    TicketInvalid,
    /// The session store could not answer (fail closed).
    StoreUnavailable,
    /// The identity could not be put into the upstream's headers whole (session data too long
    /// for a header): refused rather than forwarded in part.
    IdentityUnforwardable,
    /// No route for this path.
    NoRoute,
    /// Too many connections on the whole gateway.
    TooManyConnections,
    /// Too many connections from this client address.
    TooManyFromClient,
    /// Too many connections of this user.
    TooManyForUser,
    /// Too many connections not yet upgraded on the whole gateway (refused unread).
    TooManyPending,
    /// Too many connections not yet upgraded from this TCP peer (refused unread).
    TooManyPendingFromClient,
    /// Connections from this TCP peer come faster than `gateway.handshake_rate_per_ip` allows
    /// (refused unread).
    HandshakeRateLimited,
    /// The gateway is shutting down.
    ShuttingDown,
    /// Every upstream of the route is draining (admin API): none takes new sockets.
    NoUpstream,
    /// The upstream refused the connection or did not answer 101.
    UpstreamFailed,
    /// The upstream did not complete its handshake in time.
    UpstreamTimeout,
}

impl Refusal {
    /// HTTP status.
    pub fn status(self) -> u16 {
        use Refusal::*;
        match self {
            NotGet | NotPost => 405,
            BadHost | RequestBody | BadTarget | AmbiguousPath | BadProtocol => 400,
            NotHttp11 | OtherUpgrade | NoConnectionUpgrade | BadKey => 400,
            IdentityUnforwardable => 500,
            NotWebSocket | BadVersion => 426,
            HeadersTooLarge => 431,
            HandshakeTimeout => 408,
            MalformedRequest => 400,
            OriginMissing | OriginMultiple | OriginMalformed | OriginNotAllowed => 403,
            NoCredentials | CookieAmbiguous | Session(_) | TicketInvalid => 401,
            StoreUnavailable | ShuttingDown | TooManyConnections | TooManyPending | NoUpstream => {
                503
            }
            TooManyFromClient
            | TooManyForUser
            | TooManyPendingFromClient
            | HandshakeRateLimited => 429,
            NoRoute => 404,
            UpstreamFailed => 502,
            UpstreamTimeout => 504,
        }
    }

    /// Reason code for logs and metrics (stable, lowercase, no attacker data).
    pub fn code(self) -> &'static str {
        use Refusal::*;
        match self {
            BadHost => "bad_host",
            RequestBody => "request_body",
            BadTarget => "bad_target",
            AmbiguousPath => "ambiguous_path",
            BadProtocol => "bad_protocol",
            IdentityUnforwardable => "identity_unforwardable",
            NotGet => "not_get",
            NotPost => "not_post",
            NotHttp11 => "not_http11",
            NotWebSocket => "not_websocket",
            OtherUpgrade => "other_upgrade",
            NoConnectionUpgrade => "no_connection_upgrade",
            BadVersion => "bad_version",
            BadKey => "bad_key",
            HeadersTooLarge => "headers_too_large",
            HandshakeTimeout => "handshake_timeout",
            MalformedRequest => "malformed_request",
            OriginMissing => "origin_missing",
            OriginMultiple => "origin_multiple",
            OriginMalformed => "origin_malformed",
            OriginNotAllowed => "origin_not_allowed",
            NoCredentials => "no_credentials",
            CookieAmbiguous => "cookie_ambiguous",
            // One vocabulary: the token crate names its rejections as this table does.
            Session(r) => r.code(),
            TicketInvalid => "ticket_invalid",
            StoreUnavailable => "store_unavailable",
            NoRoute => "no_route",
            TooManyConnections => "too_many_connections",
            TooManyFromClient => "too_many_from_client",
            TooManyForUser => "too_many_for_user",
            TooManyPending => "too_many_pending",
            TooManyPendingFromClient => "too_many_pending_from_client",
            HandshakeRateLimited => "handshake_rate_limited",
            ShuttingDown => "shutting_down",
            NoUpstream => "no_upstream",
            UpstreamFailed => "upstream_failed",
            UpstreamTimeout => "upstream_timeout",
        }
    }

    /// Headers this refusal's answer carries besides the fixed ones (content type, no-store):
    /// what the client needs to do better (`Allow`, `Sec-WebSocket-Version`, `Retry-After`) and
    /// `Connection: close` where nothing else may be read from the connection.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        use Refusal::*;
        const RETRY: &[(&str, &str)] = &[("retry-after", RETRY_AFTER_SECS)];
        match self {
            BadVersion | NotWebSocket => {
                &[("sec-websocket-version", "13"), ("upgrade", "websocket")]
            }
            NotGet => &[("allow", "GET")],
            NotPost => &[("allow", "POST")],
            StoreUnavailable
            | NoUpstream
            | ShuttingDown
            | TooManyConnections
            | TooManyFromClient
            | TooManyForUser
            | TooManyPending
            | TooManyPendingFromClient
            | HandshakeRateLimited => RETRY,
            RequestBody => &[("connection", "close")],
            _ => &[],
        }
    }

    /// A detail for the log (never the client's bytes): why a token was refused, beyond its
    /// code (`malformed`: which part).
    pub fn detail(self) -> Option<&'static str> {
        match self {
            Refusal::Session(r) => Some(r.detail()),
            _ => None,
        }
    }

    /// What went wrong, in a few fixed words (the body's first part).
    pub fn text(self) -> &'static str {
        use Refusal::*;
        match self {
            BadHost | RequestBody | BadTarget | AmbiguousPath => "bad request",
            BadProtocol => "bad websocket handshake",
            IdentityUnforwardable => "cannot forward the session",
            NotGet | NotPost => "method not allowed",
            NotHttp11 | NoConnectionUpgrade | BadKey => "bad websocket handshake",
            OtherUpgrade => "only websocket upgrades are accepted",
            NotWebSocket | BadVersion => "websocket version 13 required",
            HeadersTooLarge => "request headers too large",
            HandshakeTimeout => "handshake timeout",
            MalformedRequest => "bad request",
            OriginMissing | OriginMultiple | OriginMalformed | OriginNotAllowed => {
                "origin not allowed"
            }
            NoCredentials | CookieAmbiguous | Session(_) | TicketInvalid => "unauthenticated",
            StoreUnavailable => "session store unavailable",
            NoRoute => "not found",
            TooManyConnections
            | TooManyFromClient
            | TooManyForUser
            | TooManyPending
            | TooManyPendingFromClient => "too many connections",
            HandshakeRateLimited => "too many handshakes",
            ShuttingDown => "shutting down",
            NoUpstream => "no upstream available",
            UpstreamFailed => "bad gateway",
            UpstreamTimeout => "gateway timeout",
        }
    }

    /// The response body: the fixed text and the reason code (`unauthenticated:
    /// session_expired`), never anything of the request. The code lets a client tell "log in
    /// again" (`session_expired`) from "fetch a new ticket" (`ticket_invalid`) or "the clocks
    /// disagree" (`session_issued_in_future`); it says nothing the client did not send.
    pub fn body(self) -> String {
        format!("{}: {}\n", self.text(), self.code())
    }

    /// Every refusal, for documentation and exhaustive tests.
    pub fn all() -> Vec<Refusal> {
        use Refusal::*;
        let mut v = vec![
            BadHost,
            RequestBody,
            BadTarget,
            AmbiguousPath,
            NotGet,
            NotPost,
            NotHttp11,
            NotWebSocket,
            OtherUpgrade,
            NoConnectionUpgrade,
            BadVersion,
            BadKey,
            BadProtocol,
            HeadersTooLarge,
            HandshakeTimeout,
            MalformedRequest,
            OriginMissing,
            OriginMultiple,
            OriginMalformed,
            OriginNotAllowed,
            NoCredentials,
            CookieAmbiguous,
        ];
        v.extend(
            [
                Rejection::Malformed(Malformed::Structure),
                Rejection::BadSignature,
                Rejection::UnknownKey,
                Rejection::Expired,
                Rejection::Idle,
                Rejection::IssuedInFuture,
                Rejection::Revoked,
                Rejection::UnknownSession,
            ]
            .map(Session),
        );
        v.extend([
            TicketInvalid,
            StoreUnavailable,
            IdentityUnforwardable,
            NoRoute,
            TooManyConnections,
            TooManyFromClient,
            TooManyForUser,
            TooManyPending,
            TooManyPendingFromClient,
            HandshakeRateLimited,
            ShuttingDown,
            NoUpstream,
            UpstreamFailed,
            UpstreamTimeout,
        ]);
        v
    }
}

/// Why the gateway closed an established socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The session was revoked (by id or user).
    SessionRevoked,
    /// The session reached its absolute max age.
    SessionExpired,
    /// The upstream went away without a close frame.
    UpstreamLost,
    /// The gateway is shutting down.
    Shutdown,
    /// Protocol violation by the peer.
    ProtocolError,
    /// Text that is not UTF-8.
    InvalidPayload,
    /// Message or frame over the limit.
    MessageTooBig,
    /// Message refused by the route's policy (JSON, depth).
    PolicyViolation,
    /// Message of a kind the route does not accept (text on a binary route, …).
    UnsupportedData,
    /// Rate limit exceeded.
    RateLimited,
    /// No data message within the idle timeout.
    Idle,
    /// A peer did not answer a keepalive ping in time (half-open connection).
    NoPong,
    /// The peer could not keep up (buffers full).
    Overloaded,
    /// A message spanned more frames than the route allows.
    TooManyFragments,
    /// A fragmented message was not completed within the route's assembly timeout.
    AssemblyTimeout,
    /// More control frames (pings, pongs) than the route allows per second.
    ControlFlood,
    /// A message failed the route's JSON Schema.
    SchemaViolation,
    /// A reload dropped the key that signed the socket's session token, or changed its secret.
    KeyRetired,
    /// A compressed message inflated past the route's ratio of inflated to compressed bytes
    /// (a deflate bomb).
    InflateRatio,
    /// A compressed message that is not a valid deflate stream (or refers to an earlier
    /// message, which the agreed no-context-takeover forbids).
    BadCompression,
    /// The client vanished without a close frame (said to the upstream).
    ClientGone,
}

impl CloseReason {
    /// WebSocket close code (RFC 6455 §7.4).
    pub fn close_code(self) -> u16 {
        use CloseReason::*;
        match self {
            SessionRevoked | SessionExpired | PolicyViolation | RateLimited | Idle | NoPong
            | TooManyFragments | AssemblyTimeout | ControlFlood | SchemaViolation | KeyRetired => {
                1008
            }
            UpstreamLost => 1011,
            Shutdown | ClientGone => 1001,
            ProtocolError => 1002,
            InvalidPayload | BadCompression => 1007,
            MessageTooBig | InflateRatio => 1009,
            UnsupportedData => 1003,
            Overloaded => 1013,
        }
    }

    /// Close reason text sent to the peer (≤ 123 bytes).
    pub fn text(self) -> &'static str {
        use CloseReason::*;
        match self {
            SessionRevoked => "session revoked",
            SessionExpired => "session expired",
            UpstreamLost => "upstream unavailable",
            Shutdown => "gateway shutting down",
            ProtocolError => "protocol error",
            InvalidPayload => "invalid utf-8",
            MessageTooBig => "message too big",
            PolicyViolation => "message refused",
            UnsupportedData => "unsupported data",
            RateLimited => "rate limited",
            Idle => "idle timeout",
            NoPong => "pong timeout",
            Overloaded => "try again later",
            TooManyFragments => "too many fragments",
            AssemblyTimeout => "message not completed in time",
            ControlFlood => "too many control frames",
            SchemaViolation => "message does not match the schema",
            KeyRetired => "session key retired",
            InflateRatio => "compression ratio too high",
            BadCompression => "invalid compressed data",
            ClientGone => "client gone",
        }
    }

    /// Reason code for logs and metrics.
    pub fn code(self) -> &'static str {
        use CloseReason::*;
        match self {
            SessionRevoked => "session_revoked",
            SessionExpired => "session_expired",
            UpstreamLost => "upstream_lost",
            Shutdown => "shutdown",
            ProtocolError => "protocol_error",
            InvalidPayload => "invalid_payload",
            MessageTooBig => "message_too_big",
            PolicyViolation => "policy_violation",
            UnsupportedData => "unsupported_data",
            RateLimited => "rate_limited",
            Idle => "idle",
            NoPong => "pong_timeout",
            Overloaded => "overloaded",
            TooManyFragments => "too_many_fragments",
            AssemblyTimeout => "assembly_timeout",
            ControlFlood => "control_flood",
            SchemaViolation => "schema_violation",
            KeyRetired => "key_retired",
            InflateRatio => "inflate_ratio",
            BadCompression => "bad_compression",
            ClientGone => "client_gone",
        }
    }

    /// Every close reason.
    pub fn all() -> [CloseReason; 21] {
        use CloseReason::*;
        [
            SessionRevoked,
            SessionExpired,
            UpstreamLost,
            Shutdown,
            ProtocolError,
            InvalidPayload,
            MessageTooBig,
            PolicyViolation,
            UnsupportedData,
            RateLimited,
            Idle,
            NoPong,
            Overloaded,
            TooManyFragments,
            AssemblyTimeout,
            ControlFlood,
            SchemaViolation,
            KeyRetired,
            InflateRatio,
            BadCompression,
            ClientGone,
        ]
    }
}

/// An unusable session cookie, in the table: a duplicate is ambiguous (which one would the app
/// read?), an unusable value is a malformed token.
impl From<crate::cookie::CookieError> for Refusal {
    fn from(e: crate::cookie::CookieError) -> Refusal {
        match e {
            crate::cookie::CookieError::Duplicate => Refusal::CookieAmbiguous,
            crate::cookie::CookieError::Invalid => {
                Refusal::Session(Rejection::Malformed(Malformed::Encoding))
            }
        }
    }
}

/// A ticket the table would not issue, in the table: it is a place like a connection's.
impl From<crate::tickets::TicketError> for Refusal {
    fn from(e: crate::tickets::TicketError) -> Refusal {
        match e {
            crate::tickets::TicketError::UserFull => Refusal::TooManyForUser,
            crate::tickets::TicketError::Full => Refusal::TooManyConnections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_label_safe() {
        let mut seen = std::collections::HashSet::new();
        for r in Refusal::all() {
            assert!(seen.insert(r.code()), "duplicate {}", r.code());
            assert!(
                r.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
            );
            assert!((400..600).contains(&r.status()));
        }
        let mut seen = std::collections::HashSet::new();
        for c in CloseReason::all() {
            assert!(seen.insert(c.code()));
            assert!(c.text().len() <= 123);
            assert!(
                (1000..5000).contains(&c.close_code())
                    && c.close_code() != 1005
                    && c.close_code() != 1006
            );
        }
    }

    #[test]
    fn cookie_and_ticket_errors_map_into_the_table() {
        use crate::cookie::CookieError;
        use crate::tickets::TicketError;
        assert_eq!(
            Refusal::from(CookieError::Duplicate),
            Refusal::CookieAmbiguous
        );
        assert_eq!(
            Refusal::from(CookieError::Invalid).code(),
            "session_malformed"
        );
        assert_eq!(
            Refusal::from(TicketError::UserFull),
            Refusal::TooManyForUser
        );
        assert_eq!(
            Refusal::from(TicketError::Full),
            Refusal::TooManyConnections
        );
    }

    #[test]
    fn issue_table() {
        assert_eq!(Refusal::BadVersion.status(), 426);
        assert_eq!(Refusal::HeadersTooLarge.status(), 431);
        assert_eq!(Refusal::OriginNotAllowed.status(), 403);
        assert_eq!(Refusal::Session(Rejection::Revoked).status(), 401);
        assert_eq!(Refusal::StoreUnavailable.status(), 503);
        assert_eq!(Refusal::UpstreamFailed.status(), 502);
        assert_eq!(Refusal::UpstreamTimeout.status(), 504);
        assert_eq!(CloseReason::SessionRevoked.close_code(), 1008);
        assert_eq!(CloseReason::SessionRevoked.text(), "session revoked");
        assert_eq!(CloseReason::SessionExpired.text(), "session expired");
        assert_eq!(CloseReason::Shutdown.close_code(), 1001);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn reasons_doc_lists_every_code() {
        let doc = include_str!("../../../docs/REASONS.md");
        for r in Refusal::all() {
            assert!(
                doc.contains(&format!("| `{}` | {}", r.code(), r.status())),
                "{} missing",
                r.code()
            );
        }
        for c in CloseReason::all() {
            assert!(
                doc.contains(&format!(
                    "| `{}` | {} | `{}`",
                    c.code(),
                    c.close_code(),
                    c.text()
                )),
                "{} missing",
                c.code()
            );
        }
    }
}
