//! Session data: the application's JSON object carried in a session.
//!
//! Owns [`SessionData`], its bounds and [`DataError`]: a JSON object, at most
//! [`SessionData::MAX_LEN`] bytes and [`SessionData::MAX_DEPTH`] levels deep, with no duplicate
//! key at any level, stored as compact JSON text (no whitespace outside strings). The work is in
//! three files below, each importing only from this one:
//! - `data/validate.rs`: [`SessionData::parse`], and the general validator (serde_json walks the
//!   value, refusing duplicate keys and depth);
//! - `data/flat.rs`: the fast path for flat objects, which answers only for input it fully
//!   understands and otherwise leaves it to the general validator;
//! - `data/header.rs`: the data's one header form ([`SessionData::header_value`]), the same JSON
//!   value in visible ASCII, so every byte of it reaches a backend unchanged.
//!
//! It must not interpret the data: the meaning belongs to the application.

use std::fmt;

use compact_str::CompactString;

mod flat;
mod header;
#[cfg(test)]
mod tests;
mod validate;

/// A validated JSON object, kept as compact JSON text.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionData(CompactString);

/// Why session data was refused. Carries no input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Longer than [`SessionData::MAX_LEN`] bytes.
    #[error("session data is longer than {} bytes", SessionData::MAX_LEN)]
    TooLong,
    /// Not valid JSON.
    #[error("session data is not valid JSON")]
    Syntax,
    /// Valid JSON, but not an object.
    #[error("session data must be a JSON object")]
    NotObject,
    /// An object has the same key twice.
    #[error("session data has a duplicate key")]
    DuplicateKey,
    /// Nested deeper than [`SessionData::MAX_DEPTH`].
    #[error("session data is nested deeper than {} levels", SessionData::MAX_DEPTH)]
    TooDeep,
    /// Its header form ([`SessionData::header_value`]) is longer than
    /// [`SessionData::MAX_HEADER_LEN`] bytes: characters outside visible ASCII count six bytes
    /// each (twelve beyond U+FFFF), so the data could not reach a backend.
    #[error(
        "session data is too long to forward: over {} bytes once every character outside \
         visible ASCII is escaped as \\uXXXX",
        SessionData::MAX_HEADER_LEN
    )]
    TooLongToForward,
}

impl SessionData {
    /// Longest accepted data, in bytes of JSON text.
    pub const MAX_LEN: usize = 2048;
    /// Deepest accepted nesting (the top-level object is depth 1).
    pub const MAX_DEPTH: usize = 16;

    /// Longest header form ([`SessionData::header_value`]) in bytes: with the header's name,
    /// the line stays within 8 KiB, the most that common servers (nginx's default
    /// `large_client_header_buffers`) take in one header line.
    pub const MAX_HEADER_LEN: usize = 8000;

    /// `{}`.
    pub fn empty() -> Self {
        SessionData(CompactString::const_new("{}"))
    }

    /// The compact JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The data as a `serde_json::Value` (an object).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
    }
}

impl Default for SessionData {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionData({} bytes)", self.0.len())
    }
}
