//! The key file: the TOML text an operator keeps (mode 0600), parsed and printed.
//!
//! Owns [`KeyFile`] and [`KeyFileEntry`] (the file's shape, as serde reads and writes it),
//! [`UnixTime`] (an instant written as Unix seconds or RFC 3339) and [`KeyRingError`] (what can
//! be wrong with a file, down to the key ring's rules). It only reads and writes text: the rules
//! a file must meet (one signing key, secrets of 32 bytes or more, unique ids) are checked when a
//! `KeyRing` is built from it (`ring.rs`, which also rotates a file's keys). It must not read
//! files or the environment (the binary does), and must never print a secret: `Debug` shows key
//! ids only, errors name keys by id or position, and a syntax error never quotes the file.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// The key file as written on disk (TOML):
///
/// ```toml
/// # legacy_secret = "..."     # only with accept_legacy_tokens
/// [[key]]
/// id = "k20261124-3fa1"
/// secret = "<43 characters of base64url: 32 random bytes>"
///
/// [[key]]
/// id = "k20260601-09bc"
/// secret = "..."
/// verify_until = "2026-12-24T00:00:00Z"   # verify-only until then (or Unix seconds)
/// ```
///
/// Exactly one key has no `verify_until`: it signs new tokens.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// The tutorial's shared secret, for `accept_legacy_tokens`. Any length (it was chosen by the
    /// old system); never used to sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_secret: Option<String>,
    /// The keys.
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyFileEntry>,
}

/// One `[[key]]` of the key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFileEntry {
    /// Key id.
    pub id: String,
    /// Secret, unpadded base64url of at least 32 bytes.
    pub secret: String,
    /// Verify-only until this instant (RFC 3339, or Unix seconds); absent for the signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<UnixTime>,
}

/// An instant in the key file: Unix seconds or an RFC 3339 UTC string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixTime(pub u64);

impl Serialize for UnixTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.0);
        s.serialize_str(&humantime::format_rfc3339_seconds(t).to_string())
    }
}

impl<'de> Deserialize<'de> for UnixTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(UnixTime(s)),
            Raw::Text(t) => humantime::parse_rfc3339(&t)
                .ok()
                .and_then(|st| st.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| UnixTime(d.as_secs()))
                .ok_or_else(|| {
                    serde::de::Error::custom(
                        "expected Unix seconds or an RFC 3339 UTC time like 2026-12-24T00:00:00Z",
                    )
                }),
        }
    }
}

impl Drop for KeyFileEntry {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        if let Some(s) = self.legacy_secret.as_mut() {
            s.zeroize();
        }
    }
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field(
                "legacy_secret",
                &self.legacy_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("keys", &self.keys)
            .finish()
    }
}

impl fmt::Debug for KeyFileEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFileEntry")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("verify_until", &self.verify_until)
            .finish()
    }
}

/// What is wrong with a key file. Names keys by id or position, never by content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// Not valid TOML or not the expected shape.
    #[error("key file: {0}")]
    Syntax(String),
    /// No `[[key]]` at all.
    #[error("key file has no [[key]] entries: run `wsguard keygen` to create one")]
    Empty,
    /// Every key has `verify_until`.
    #[error("key file has no signing key: exactly one [[key]] must have no verify_until")]
    NoSigningKey,
    /// More than one key without `verify_until`.
    #[error("key file has several signing keys ({0}): exactly one [[key]] may lack verify_until")]
    SeveralSigningKeys(String),
    /// A key id is invalid.
    #[error("key #{0} in the key file: id must be 1-32 characters of A-Z a-z 0-9 _ -")]
    BadKeyId(usize),
    /// Two keys share an id.
    #[error("key file: key id {0:?} appears twice")]
    DuplicateKeyId(String),
    /// A secret is not base64url.
    #[error("key {0:?}: secret must be unpadded base64url (as written by `wsguard keygen`)")]
    SecretEncoding(String),
    /// A secret is shorter than 32 bytes.
    #[error("key {id:?}: secret is {len} bytes; at least 32 random bytes are required")]
    SecretTooShort {
        /// Key id.
        id: String,
        /// Decoded length.
        len: usize,
    },
    /// `legacy_secret` is empty.
    #[error("key file: legacy_secret is empty")]
    EmptyLegacySecret,
}

impl KeyFile {
    /// Parses key file text.
    pub fn parse(text: &str) -> Result<KeyFile, KeyRingError> {
        // toml's Display quotes the offending source line, which may hold a secret: keep only the
        // message and the line number.
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().to_owned();
            KeyRingError::Syntax(match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            })
        })
    }

    /// The file as TOML text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# wsguard signing keys. Keep this file secret (mode 0600); never commit it.\n\
             # The [[key]] without verify_until signs new tokens; the others only verify, until\n\
             # their verify_until. Rotate with `wsguard keygen`.\n\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use base64_simd::URL_SAFE_NO_PAD;

    use super::*;

    fn secret_b64(len: usize) -> String {
        URL_SAFE_NO_PAD.encode_to_string(vec![7u8; len])
    }

    #[test]
    fn syntax_errors_do_not_quote_the_file() {
        let text = "[[key]]\nid = \"a\"\nsecret = \"TOPSECRETVALUE\nverify_until = 3\n";
        let err = KeyFile::parse(text).unwrap_err().to_string();
        assert!(!err.contains("TOPSECRETVALUE"), "{err}");
        assert!(err.contains("line"), "{err}");
        let unknown = KeyFile::parse("[[key]]\nid=\"a\"\nsecret=\"x\"\nsecrt=\"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("secrt"), "{unknown}");
    }

    #[test]
    fn verify_until_accepts_unix_seconds_and_rfc3339() {
        let f = KeyFile::parse(&format!(
            "[[key]]\nid=\"a\"\nsecret=\"{s}\"\n[[key]]\nid=\"b\"\nsecret=\"{s}\"\nverify_until=\"2026-12-24T00:00:00Z\"\n[[key]]\nid=\"c\"\nsecret=\"{s}\"\nverify_until=1800000000\n",
            s = secret_b64(32)
        ))
        .unwrap();
        assert_eq!(f.keys[1].verify_until, Some(UnixTime(1_798_070_400)));
        assert_eq!(f.keys[2].verify_until, Some(UnixTime(1_800_000_000)));
        assert!(
            KeyFile::parse("[[key]]\nid=\"a\"\nsecret=\"x\"\nverify_until=\"tomorrow\"\n").is_err()
        );
    }
}
