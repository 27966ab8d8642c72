//! Why a token was refused.
//!
//! Owns the [`Rejection`] enum and its stable string codes, which are the gateway's reason codes
//! for refused tokens (`docs/REASONS.md`: `session_expired`, …), so the CLI, logs and metrics
//! name a refusal with one word everywhere; and [`Malformed`], the detail of a malformed token,
//! for logs. It must not decide HTTP statuses or close codes: the gateway maps reasons to the
//! wire in one place. Variants carry no attacker bytes, so a rejection can always be logged.

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
    /// The stable machine-readable code, the gateway's reason code for this refusal
    /// (`docs/REASONS.md`): used in CLI output, logs and metrics labels. Every code starts with
    /// `session_`; a malformed token's detail is [`Malformed::detail`].
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "session_malformed",
            Rejection::BadSignature => "session_bad_signature",
            Rejection::UnknownKey => "session_unknown_key",
            Rejection::Expired => "session_expired",
            Rejection::Idle => "session_idle",
            Rejection::IssuedInFuture => "session_issued_in_future",
            Rejection::Revoked => "session_revoked",
            Rejection::UnknownSession => "session_unknown",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are the gateway's reason codes (`crates/wsguard-gateway/src/reason.rs`,
    /// `docs/REASONS.md`), one per variant, so the gateway can use them as they are.
    #[test]
    fn codes_are_the_gateways_reason_codes() {
        let all = [
            (Rejection::Malformed(Malformed::Empty), "session_malformed"),
            (Rejection::BadSignature, "session_bad_signature"),
            (Rejection::UnknownKey, "session_unknown_key"),
            (Rejection::Expired, "session_expired"),
            (Rejection::Idle, "session_idle"),
            (Rejection::IssuedInFuture, "session_issued_in_future"),
            (Rejection::Revoked, "session_revoked"),
            (Rejection::UnknownSession, "session_unknown"),
        ];
        for (rejection, code) in all {
            assert_eq!(rejection.code(), code);
            assert_eq!(
                rejection.to_string(),
                format!("{code}: {}", rejection.detail())
            );
        }
        // Every malformed token has one code; what is wrong stays in its detail.
        assert_eq!(
            Rejection::Malformed(Malformed::TooLong).code(),
            "session_malformed"
        );
        assert_eq!(
            Rejection::Malformed(Malformed::TooLong).detail(),
            "token too long"
        );
    }
}
