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
// Visibility is minimal: an item is `pub` only if it is part of the crate's API.
#![warn(unreachable_pub)]

// Imports run one way; a module uses only those before it in this order:
// `ids`, `data`, `reject` (leaves) → `claims` → `mac` (HMAC, secrets) → `keyfile` (the TOML
// text) → `ring` (keys and their life) → `legacy`, `v1` (the formats) → `verify` (on top).
// Modules name the module that defines what they use, never these re-exports, so this file
// stays on top: it only declares and re-exports.
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

pub use claims::{Claims, MAX_TIMESTAMP};
pub use data::{DataError, SessionData};
pub use ids::{InvalidId, KeyId, SessionId, UserId};
pub use keyfile::{KeyFile, KeyFileEntry, KeyRingError, UnixTime};
pub use mac::Secret;
pub use reject::{Malformed, Rejection};
pub use ring::{Format, KeyRing};
pub use verify::{MAX_TOKEN_LEN, SignedToken, TokenPolicy, VerifiedToken, Verifier};
