//! wsguard session tokens.
//!
//! This crate owns the session token: its wire format (`v1`, see `docs/TOKEN_FORMAT.md`), the
//! optional legacy format of the "SecureSession" tutorial, the key ring (one signing key and older
//! verify-only keys), issuing, and verification down to a typed [`Rejection`].
//!
//! It must not do I/O: no files, no network, no clock. Callers pass the current time (`now`, Unix
//! seconds) and the key file's *contents*; the only outside resource touched is the OS random
//! generator, for new session ids and keys. Whether a session is still alive in a store is not
//! decided here (see `wsguard-session`): this crate only proves that a token is authentic and
//! within its lifetime.
//!
//! ```
//! use wsguard_token::{Claims, KeyRing, SessionData, SessionId, TokenPolicy, UserId, Verifier};
//!
//! let ring = KeyRing::generate_for_tests();
//! let verifier = Verifier::new(ring.into(), TokenPolicy::default());
//! let now = 1_764_000_000;
//! let claims = Claims::new(SessionId::generate(), UserId::parse("alice").unwrap(), SessionData::empty(), now);
//! let token = verifier.issue(&claims);
//! let verified = verifier.verify(&token, now + 10).unwrap();
//! assert_eq!(verified.claims().uid.as_str(), "alice");
//! ```
#![warn(missing_docs)]

// Imports run one way; a module uses only those before it in this order:
// `ids`, `data`, `reject` (leaves) → `claims` → `mac` (HMAC, secrets) → `keyfile` (the TOML
// text) → `ring` (keys and their life) → `legacy`, `v1` (the formats) → `verify` (on top).
mod claims;
mod data;
mod ids;
mod keyfile;
mod legacy;
mod mac;
mod reject;
mod ring;
mod v1;
mod verify;

pub use claims::Claims;
pub use data::{DataError, SessionData};
pub use ids::{InvalidId, KeyId, SessionId, UserId};
pub use keyfile::{KeyFile, KeyFileEntry, KeyRingError, UnixTime};
pub use mac::Secret;
pub use reject::{Malformed, Rejection};
pub use ring::{Format, KeyRing};
pub use verify::{SignedToken, TokenPolicy, VerifiedToken, Verifier};

/// The longest token accepted, in bytes. Checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The latest timestamp accepted anywhere in a token: 9999-12-31T23:59:59Z. Anything later is
/// treated as malformed rather than as "far in the future".
pub const MAX_TIMESTAMP: u64 = 253_402_300_799;
