//! Session, user and key identifiers, and the crate's one source of randomness.
//!
//! Owns [`SessionId`] (≥ 128 random bits, cookie- and header-safe), [`UserId`] and [`KeyId`].
//! All are validated on construction, so a value of these types is always safe to put in a
//! header, a log field or an SQL parameter. Must not expose a mutable inner string. All are
//! stored inline up to 24 bytes (`compact_str`), so a typical id costs no allocation. Also owns
//! `fill_random`, the OS random generator that new session ids and keys come from.

use std::fmt;

use compact_str::CompactString;

/// A session id: 16 to 128 characters of `[A-Za-z0-9_-]`. Ids minted here are 16 bytes
/// (128 bits) from the OS CSPRNG, base64url-encoded (22 characters).
///
/// `Debug` shows only a prefix, so a stray `{:?}` does not copy whole ids into logs; use
/// [`SessionId::as_str`] (or `Display`) where the full id is meant, e.g. the CLI's output.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(CompactString);

/// A user id: 1 to 128 printable ASCII characters (`!` to `~`, no spaces or controls), so it is
/// always a valid HTTP header value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(CompactString);

/// A key id: 1 to 32 characters of `[A-Za-z0-9_-]`. Not secret; it travels in every token.
/// Stored inline (`compact_str`), so copying one into a verified token costs no allocation.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(CompactString);

/// An identifier failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// Session id of the wrong length or with characters outside `[A-Za-z0-9_-]`.
    #[error("a session id is 16 to 128 characters of A-Z a-z 0-9 _ -")]
    Session,
    /// User id empty, too long or with characters outside printable ASCII.
    #[error("a user id is 1 to 128 printable ASCII characters (no spaces)")]
    User,
}

/// Membership table for `[A-Za-z0-9_-]`: one load per byte on the verify path.
pub(crate) static BASE64URL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        c += 1;
    }
    t
};

pub(crate) fn fill_random(buf: &mut [u8]) {
    // Invariant: the OS CSPRNG is available. A process that cannot get randomness must not mint
    // credentials, and there is no safe fallback, so this is the one place we stop.
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the OS random generator failed");
}

impl SessionId {
    /// A new random session id: 128 bits from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        SessionId(base64_simd::URL_SAFE_NO_PAD.encode_to_string(bytes).into())
    }

    /// Validates an id received from elsewhere (a token, the CLI, the store).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = (16..=128).contains(&s.len()) && s.bytes().all(|b| BASE64URL[usize::from(b)]);
        if ok {
            Ok(SessionId(CompactString::new(s)))
        } else {
            Err(InvalidId::Session)
        }
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl UserId {
    /// Validates a user id.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if ok {
            Ok(UserId(CompactString::new(s)))
        } else {
            Err(InvalidId::User)
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl KeyId {
    /// Validates a key id.
    pub fn parse(s: &str) -> Option<Self> {
        valid_key_id(s.as_bytes()).then(|| KeyId(CompactString::new(s)))
    }

    /// A key id known to be valid when written (a literal in this crate).
    pub(crate) const fn from_static(id: &'static str) -> Self {
        KeyId(CompactString::const_new(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Whether `b` is a valid key id: 1 to 32 characters of `[A-Za-z0-9_-]`.
pub(crate) fn valid_key_id(b: &[u8]) -> bool {
    (1..=32).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.0.get(..6).unwrap_or(&self.0);
        write!(f, "SessionId({prefix}…)")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", &*self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_22_chars_of_base64url_and_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.as_str().len(), 22);
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn session_id_bounds() {
        assert!(SessionId::parse(&"a".repeat(15)).is_err());
        assert!(SessionId::parse(&"a".repeat(16)).is_ok());
        assert!(SessionId::parse(&"a".repeat(128)).is_ok());
        assert!(SessionId::parse(&"a".repeat(129)).is_err());
        assert!(SessionId::parse("aaaaaaaaaaaaaaa=").is_err());
        assert!(SessionId::parse("aaaaaaaaaaaaaaa.").is_err());
        assert!(SessionId::parse("aaaaaaaaaaaaaaa\n").is_err());
    }

    #[test]
    fn user_id_bounds() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a").is_ok());
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse(&"u".repeat(128)).is_ok());
        assert!(UserId::parse(&"u".repeat(129)).is_err());
        assert!(UserId::parse("has space").is_err());
        assert!(UserId::parse("new\nline").is_err());
        assert!(UserId::parse("é").is_err());
    }

    #[test]
    fn debug_does_not_print_the_whole_session_id() {
        let id = SessionId::parse("abcdefghijklmnopqrstuv").unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains("abcdefghijklmnop"), "{shown}");
        assert_eq!(id.to_string(), "abcdefghijklmnopqrstuv");
    }
}
