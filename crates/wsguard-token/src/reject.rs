//! Why a token was refused.
//!
//! Owns the [`Rejection`] enum and its stable string codes. It must not decide HTTP statuses or
//! close codes: the gateway maps reasons to the wire in one place. Variants carry no attacker
//! bytes, so a rejection can always be logged.

use std::fmt;

/// Why a session token was refused. Every refusal is exactly one of these.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The token is not a well-formed token of an accepted format.
    Malformed(Malformed),
    /// The token is well formed but its tag does not match: forged or tampered.
    BadSignature,
    /// The token names a key the ring does not have, or a verify-only key past its end date.
    UnknownKey,
    /// The session is older than the absolute maximum age.
    Expired,
    /// The session has not been active within the idle timeout.
    Idle,
    /// The token claims to be issued (or active) later than now plus the allowed leeway.
    IssuedInFuture,
    /// The session (or all of its user's sessions) was revoked.
    Revoked,
    /// Stateful mode: the store does not know this session.
    UnknownSession,
}

/// What exactly is wrong with a malformed token. For logs; the peer only learns "malformed".
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Empty token.
    Empty,
    /// Longer than [`crate::MAX_TOKEN_LEN`].
    TooLong,
    /// Wrong number of parts, or an unknown version prefix.
    Structure,
    /// The key id is not 1–32 characters of `[A-Za-z0-9_-]`.
    KeyId,
    /// A part is not canonical unpadded base64url (or, legacy, lowercase hex).
    Encoding,
    /// The payload is not exactly the expected JSON object (unknown, missing, duplicate or
    /// mistyped field, bad id, bad data).
    Payload,
    /// A timestamp is not an integer in range, or `last_active` precedes `created`.
    Timestamp,
    /// A legacy (tutorial) token while `accept_legacy_tokens` is off, or no legacy secret is set.
    LegacyNotAccepted,
}

impl Rejection {
    /// The stable machine-readable code: used in CLI output, logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::BadSignature => "bad_signature",
            Rejection::UnknownKey => "unknown_key",
            Rejection::Expired => "expired",
            Rejection::Idle => "idle",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::Revoked => "revoked",
            Rejection::UnknownSession => "unknown_session",
        }
    }

    /// A longer human-readable explanation, still free of attacker bytes.
    pub fn detail(&self) -> &'static str {
        match self {
            Rejection::Malformed(m) => m.detail(),
            Rejection::BadSignature => "signature does not match",
            Rejection::UnknownKey => "key id unknown or retired",
            Rejection::Expired => "session older than its maximum age",
            Rejection::Idle => "session idle longer than the idle timeout",
            Rejection::IssuedInFuture => "token timestamps are in the future",
            Rejection::Revoked => "session revoked",
            Rejection::UnknownSession => "session not found in the store",
        }
    }
}

impl Malformed {
    /// A short explanation of the defect.
    pub fn detail(&self) -> &'static str {
        match self {
            Malformed::Empty => "empty token",
            Malformed::TooLong => "token too long",
            Malformed::Structure => "not a v1 token",
            Malformed::KeyId => "invalid key id",
            Malformed::Encoding => "invalid encoding",
            Malformed::Payload => "invalid payload",
            Malformed::Timestamp => "invalid timestamp",
            Malformed::LegacyNotAccepted => "legacy token format not accepted",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.detail())
    }
}

impl std::error::Error for Rejection {}
