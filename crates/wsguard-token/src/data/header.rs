//! The header form of session data: what reaches a backend in `X-Wsguard-Data`.
//!
//! Owns [`SessionData::header_value`] (the same JSON value in visible ASCII, every other
//! character escaped as `\uXXXX`, at most [`SessionData::MAX_HEADER_LEN`] bytes) and
//! [`SessionData::parse_for_issue`], which refuses at issue data whose header form would not
//! fit. It must not change the JSON value: a backend's parser reads back exactly the data.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::{DataError, SessionData};

impl SessionData {
    /// The data as one HTTP header value: the same JSON value, with every character outside
    /// visible ASCII and space (DEL, and anything beyond U+007F; controls are already escaped in
    /// valid JSON) written as a `\uXXXX` escape (a UTF-16 surrogate pair beyond U+FFFF). Valid
    /// JSON holds such characters only inside strings, where the escape means the same
    /// character, so a backend's JSON parser reads exactly this data back, whatever its HTTP
    /// layer does with bytes outside ASCII. Borrowed when nothing needs escaping (the usual
    /// case). Refused when longer than [`SessionData::MAX_HEADER_LEN`].
    pub fn header_value(&self) -> Result<Cow<'_, str>, DataError> {
        let text = self.as_json();
        let plain = |c: char| (' '..='~').contains(&c);
        let value = if text.chars().all(plain) {
            Cow::Borrowed(text)
        } else {
            let mut out = String::with_capacity(text.len() + 32);
            let mut units = [0u16; 2];
            for c in text.chars() {
                if plain(c) {
                    out.push(c);
                } else {
                    for u in c.encode_utf16(&mut units) {
                        // Writing to a String cannot fail.
                        let _ = write!(out, "\\u{u:04x}");
                    }
                }
            }
            Cow::Owned(out)
        };
        if value.len() > Self::MAX_HEADER_LEN {
            return Err(DataError::TooLongToForward);
        }
        Ok(value)
    }

    /// Validates JSON text for a new session: [`SessionData::parse`], and its header form must
    /// fit ([`SessionData::header_value`]), so every session issued can reach a backend whole.
    pub fn parse_for_issue(json: &str) -> Result<Self, DataError> {
        let data = Self::parse(json)?;
        data.header_value()?;
        Ok(data)
    }
}
