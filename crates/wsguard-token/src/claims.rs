//! The fields a session token carries.
//!
//! Owns [`Claims`]: plain data, already validated field by field. Holding `Claims` proves nothing
//! about authenticity; only the verifier's proof types (`SignedToken`, `VerifiedToken`) do.

use crate::{SessionData, SessionId, UserId};

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
