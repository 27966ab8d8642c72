//! The fields a session token carries.
//!
//! Owns [`Claims`]: plain data, already validated field by field, and the rules its timestamps
//! share in every format (integers up to [`MAX_TIMESTAMP`], `created <= last_active`),
//! which the v1 and legacy parsers both apply. Holding `Claims` proves nothing about
//! authenticity; only the verifier's proof types (`SignedToken`, `VerifiedToken`) do. It must
//! not check lifetimes against a clock (`verify.rs` does).

use crate::data::SessionData;
use crate::ids::{SessionId, UserId};
use crate::reject::{Malformed, Rejection};

/// The latest timestamp accepted anywhere in a token: 9999-12-31T23:59:59Z. Anything later is
/// treated as malformed rather than as "far in the future".
pub const MAX_TIMESTAMP: u64 = 253_402_300_799;

/// The payload of a session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Session id.
    pub sid: SessionId,
    /// User id.
    pub uid: UserId,
    /// Application data (a JSON object).
    pub data: SessionData,
    /// When the session was created, Unix seconds.
    pub created: u64,
    /// When the session was last active as of issuing this token, Unix seconds.
    pub last_active: u64,
}

impl Claims {
    /// Claims for a session that starts `now`.
    pub fn new(sid: SessionId, uid: UserId, data: SessionData, now: u64) -> Self {
        Claims {
            sid,
            uid,
            data,
            created: now,
            last_active: now,
        }
    }
}

/// A timestamp field as found: an unsigned integer, or anything else (negative, fractional,
/// exponent, out of range, string…), which is reported as [`Malformed::Timestamp`] rather than
/// as a generic payload error.
pub(crate) enum Timestamp {
    Int(u64),
    Invalid,
}

/// Both timestamps integers within [`MAX_TIMESTAMP`], and `created <= last_active`.
pub(crate) fn check_timestamps(
    created: Timestamp,
    last_active: Timestamp,
) -> Result<(u64, u64), Rejection> {
    match (created, last_active) {
        (Timestamp::Int(c), Timestamp::Int(l))
            if c <= MAX_TIMESTAMP && l <= MAX_TIMESTAMP && c <= l =>
        {
            Ok((c, l))
        }
        _ => Err(Rejection::Malformed(Malformed::Timestamp)),
    }
}
