//! Issuing and verifying tokens, and the proof types that come out of verification.
//!
//! Owns [`Verifier`] (key ring + [`TokenPolicy`]), the dispatch between formats, and the lifetime
//! rules. Verification runs in a fixed order, cheapest and most hostile-input-facing first:
//! length bound ([`MAX_TOKEN_LEN`]) → format prefix → key id → tag (constant time) → strict
//! payload parse → lifetime.
//! Proof types ([`SignedToken`], [`VerifiedToken`]) can only be built here.
//!
//! Lifetime rules (all in whole Unix seconds, `now` passed in):
//! - issued in the future: `created > now + future_leeway` or `last_active > now + future_leeway`;
//! - expired: `now >= created + max_age` (valid through `created + max_age - 1`);
//! - idle: `now >= last_active + idle_timeout`, where `last_active` is the later of the token's
//!   and the one the caller knows (e.g. from the session store).

use std::sync::Arc;

use crate::claims::Claims;
use crate::legacy;
use crate::reject::{Malformed, Rejection};
use crate::ring::{Format, KeyRing};
use crate::v1;

/// The longest token accepted, in bytes. Checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Lifetime rules and format options. Validated by the configuration layer (all durations > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Absolute maximum session age, seconds.
    pub max_age: u64,
    /// Idle timeout, seconds.
    pub idle_timeout: u64,
    /// How far in the future a timestamp may be (clock skew between minters), seconds.
    pub future_leeway: u64,
    /// Accept the tutorial's legacy tokens (needs a `legacy_secret` in the key ring).
    pub accept_legacy_tokens: bool,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            max_age: 12 * 3600,
            idle_timeout: 3600,
            future_leeway: 5,
            accept_legacy_tokens: false,
        }
    }
}

/// Proof that a token is authentic (signature valid, payload well formed). Its lifetime is not
/// checked yet: call [`SignedToken::check_lifetime`]. Only [`Verifier`] builds one.
#[derive(Debug)]
pub struct SignedToken {
    claims: Claims,
    format: Format,
    policy: TokenPolicy,
}

/// Proof that a token is authentic and within its lifetime at the time given. Only
/// [`SignedToken::check_lifetime`] builds one.
#[derive(Debug)]
pub struct VerifiedToken {
    claims: Claims,
    format: Format,
    last_active: u64,
}

impl SignedToken {
    /// The authenticated claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The token's format.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// The claims, giving up the proof (e.g. to revoke a session named by an expired token).
    pub fn into_claims(self) -> Claims {
        self.claims
    }

    /// Checks the rules that need nothing but the token: issued in the future, and the absolute
    /// maximum age. Callers that must consult a store for the idle rule run this first, so an
    /// expired token is reported as expired even after its session was purged.
    pub fn check_age(&self, now: u64) -> Result<(), Rejection> {
        let p = &self.policy;
        let c = &self.claims;
        let horizon = now.saturating_add(p.future_leeway);
        if c.created > horizon || c.last_active > horizon {
            return Err(Rejection::IssuedInFuture);
        }
        if now >= c.created.saturating_add(p.max_age) {
            return Err(Rejection::Expired);
        }
        Ok(())
    }

    /// Checks the lifetime rules at `now`. `last_active` is the latest activity the caller knows
    /// of (the store's, in stateful mode); the token's own is used if it is later.
    pub fn check_lifetime(self, last_active: u64, now: u64) -> Result<VerifiedToken, Rejection> {
        self.check_age(now)?;
        let p = &self.policy;
        let c = &self.claims;
        let last_active = last_active.max(c.last_active);
        if now >= last_active.saturating_add(p.idle_timeout) {
            return Err(Rejection::Idle);
        }
        Ok(VerifiedToken {
            claims: self.claims,
            format: self.format,
            last_active,
        })
    }
}

impl VerifiedToken {
    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The token's format.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// The last activity used for the idle check.
    pub fn last_active(&self) -> u64 {
        self.last_active
    }

    /// The claims.
    pub fn into_claims(self) -> Claims {
        self.claims
    }
}

/// Issues and verifies tokens with one key ring and policy.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Arc<KeyRing>,
    policy: TokenPolicy,
}

impl Verifier {
    /// A verifier for this ring and policy.
    pub fn new(keys: Arc<KeyRing>, policy: TokenPolicy) -> Self {
        Verifier { keys, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Whether a token that `earlier` accepted as `format` is still accepted by this verifier at
    /// `now`, as far as keys go: see [`KeyRing::still_accepts`]; a legacy token also needs this
    /// policy to accept legacy tokens. Lifetimes are not looked at.
    pub fn still_accepts(&self, earlier: &Verifier, format: &Format, now: u64) -> bool {
        if *format == Format::Legacy && !self.policy.accept_legacy_tokens {
            return false;
        }
        self.keys.still_accepts(&earlier.keys, format, now)
    }

    /// A v1 token for these claims, signed with the ring's signing key.
    pub fn issue(&self, claims: &Claims) -> String {
        let (kid, key) = self.keys.signing();
        v1::encode(kid, key, claims)
    }

    /// Checks everything but the lifetime: bounds, format, key, signature, payload.
    pub fn verify_signature(&self, token: &str, now: u64) -> Result<SignedToken, Rejection> {
        if token.is_empty() {
            return Err(Rejection::Malformed(Malformed::Empty));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Rejection::Malformed(Malformed::TooLong));
        }
        let (claims, format) = if token.starts_with(v1::PREFIX) {
            let (claims, key_id) = v1::decode(&self.keys, token, now)?;
            (claims, Format::V1 { key_id })
        } else if token.starts_with('{') {
            match self.keys.legacy() {
                Some(key) if self.policy.accept_legacy_tokens => {
                    (legacy::decode(key, token)?, Format::Legacy)
                }
                _ => return Err(Rejection::Malformed(Malformed::LegacyNotAccepted)),
            }
        } else {
            return Err(Rejection::Malformed(Malformed::Structure));
        };
        Ok(SignedToken {
            claims,
            format,
            policy: self.policy,
        })
    }

    /// Full stateless verification: signature, then lifetime using the token's own
    /// `last_active`. (Stateful callers use [`Verifier::verify_signature`] and pass the store's.)
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, Rejection> {
        let signed = self.verify_signature(token, now)?;
        let last_active = signed.claims.last_active;
        signed.check_lifetime(last_active, now)
    }
}

#[cfg(test)]
mod tests;
