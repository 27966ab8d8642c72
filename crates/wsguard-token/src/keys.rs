//! Signing keys: the key file format and the key ring built from it.
//!
//! Owns [`KeyFile`] (the TOML text an operator keeps, mode 0600), [`KeyRing`] (one signing key,
//! older verify-only keys each with an end date, and the optional legacy secret) and [`Secret`].
//! Keys shorter than 32 bytes are refused by construction. It must not read files or the
//! environment (the binary does) and must never print a secret: `Debug` of every type here shows
//! key ids only, and error messages name keys by id, never by content.

use std::fmt;

use base64_simd::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::ids::fill_random;
use crate::verify::Format;

/// HMAC-SHA256 with the key already absorbed: cloning it skips the two key blocks per token.
pub(crate) type Mac = Hmac<Sha256>;

fn legacy_key(secret: &[u8]) -> (Mac, [u8; 32]) {
    let mac = mac_for(secret);
    let print = fingerprint(&mac);
    (mac, print)
}

pub(crate) fn mac_for(secret: &[u8]) -> Mac {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    <Mac as hmac::Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn sign_parts(mac: &Mac, parts: &[&[u8]]) -> [u8; 32] {
    let mut m = mac.clone();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Whether `tag` is HMAC-SHA256 of `msg`, compared in constant time with `subtle`, as four
/// 64-bit words (a quarter of the work of comparing 32 bytes one by one).
pub(crate) fn verify_tag(mac: &Mac, msg: &[u8], tag: &[u8; 32]) -> bool {
    verify_tag_parts(mac, &[msg], tag)
}

/// [`verify_tag`] over the concatenation of `parts`.
pub(crate) fn verify_tag_parts(mac: &Mac, parts: &[&[u8]], tag: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq as _;
    let words = |b: &[u8; 32]| -> [u64; 4] {
        std::array::from_fn(|i| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        })
    };
    let expected = sign_parts(mac, parts);
    bool::from(words(&expected)[..].ct_eq(&words(tag)[..]))
}

/// A key id: 1 to 32 characters of `[A-Za-z0-9_-]`. Not secret; it travels in every token.
/// Stored inline (`compact_str`), so copying one into a verified token costs no allocation.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(compact_str::CompactString);

impl KeyId {
    /// Validates a key id.
    pub fn parse(s: &str) -> Option<Self> {
        valid_key_id(s.as_bytes()).then(|| KeyId(compact_str::CompactString::new(s)))
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn valid_key_id(b: &[u8]) -> bool {
    (1..=32).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Secret key bytes, wiped on drop. `Debug` is redacted.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Minimum secret length in bytes.
    pub const MIN_LEN: usize = 32;

    /// 32 fresh bytes from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        fill_random(&mut bytes);
        Secret(bytes)
    }

    /// The secret as unpadded base64url, as stored in the key file.
    pub fn to_base64url(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode_to_string(&*self.0))
    }

    fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

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

    /// Adds a fresh signing key made `now`. The previous signing key (if any) becomes verify-only
    /// until `now + keep_previous_for`, so tokens it signed stay valid for their whole lifetime;
    /// keys whose end date has passed are dropped. Returns the new key's id.
    pub fn rotate(&mut self, now: u64, keep_previous_for: u64) -> String {
        self.keys
            .retain(|k| k.verify_until.is_none_or(|UnixTime(until)| until > now));
        for k in self.keys.iter_mut().filter(|k| k.verify_until.is_none()) {
            k.verify_until = Some(UnixTime(now.saturating_add(keep_previous_for)));
        }
        let id = new_key_id(now, |id| self.keys.iter().any(|k| k.id == id));
        self.keys.insert(
            0,
            KeyFileEntry {
                id: id.clone(),
                secret: Secret::generate().to_base64url().to_string(),
                verify_until: None,
            },
        );
        id
    }
}

fn new_key_id(now: u64, taken: impl Fn(&str) -> bool) -> String {
    let date = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(now),
    )
    .to_string();
    let ymd: String = date.chars().take(10).filter(|c| *c != '-').collect();
    loop {
        let mut r = [0u8; 2];
        fill_random(&mut r);
        let id = format!("k{ymd}-{:02x}{:02x}", r[0], r[1]);
        if !taken(&id) {
            return id;
        }
    }
}

/// Names a secret without revealing it: the HMAC of a fixed label under the key. Two keys with
/// the same fingerprint have the same secret (a reload can tell a key id whose secret changed).
fn fingerprint(mac: &Mac) -> [u8; 32] {
    sign_parts(mac, &[b"wsguard key fingerprint"])
}

struct RingKey {
    id: KeyId,
    mac: Mac,
    fingerprint: [u8; 32],
    /// `None` for the signing key. A verify-only key is accepted while `now < verify_until`.
    verify_until: Option<u64>,
}

/// The keys a verifier holds: one signing key, older verify-only keys, and the optional legacy
/// secret. Built only from validated input.
pub struct KeyRing {
    signing: RingKey,
    verify_only: Vec<RingKey>,
    legacy: Option<(Mac, [u8; 32])>,
}

/// How a key id resolved.
pub(crate) enum KeyLookup<'a> {
    Found(&'a KeyId, &'a Mac),
    Unknown,
}

impl KeyRing {
    /// Validates a key file into a ring.
    pub fn from_file(file: &KeyFile) -> Result<KeyRing, KeyRingError> {
        if file.keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        let mut signing = Vec::new();
        let mut verify_only = Vec::new();
        for (i, entry) in file.keys.iter().enumerate() {
            let id = KeyId::parse(&entry.id).ok_or(KeyRingError::BadKeyId(i + 1))?;
            if file.keys[..i].iter().any(|k| k.id == entry.id) {
                return Err(KeyRingError::DuplicateKeyId(entry.id.clone()));
            }
            let bytes = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode_to_vec(entry.secret.trim())
                    .map_err(|_| KeyRingError::SecretEncoding(entry.id.clone()))?,
            );
            if bytes.len() < Secret::MIN_LEN {
                return Err(KeyRingError::SecretTooShort {
                    id: entry.id.clone(),
                    len: bytes.len(),
                });
            }
            let mac = mac_for(&bytes);
            let key = RingKey {
                id,
                fingerprint: fingerprint(&mac),
                mac,
                verify_until: entry.verify_until.map(|UnixTime(t)| t),
            };
            match key.verify_until {
                None => signing.push(key),
                Some(_) => verify_only.push(key),
            }
        }
        let signing = match signing.len() {
            0 => return Err(KeyRingError::NoSigningKey),
            1 => signing.remove(0),
            _ => {
                let ids: Vec<&str> = signing.iter().map(|k| k.id.as_str()).collect();
                return Err(KeyRingError::SeveralSigningKeys(ids.join(", ")));
            }
        };
        let legacy = match &file.legacy_secret {
            None => None,
            Some(s) if s.is_empty() => return Err(KeyRingError::EmptyLegacySecret),
            Some(s) => Some(legacy_key(s.as_bytes())),
        };
        Ok(KeyRing {
            signing,
            verify_only,
            legacy,
        })
    }

    /// A ring holding one fresh random signing key (id `ephemeral`): for tests and demos.
    pub fn ephemeral() -> KeyRing {
        let secret = Secret::generate();
        let mac = mac_for(secret.expose());
        KeyRing {
            signing: RingKey {
                id: KeyId(compact_str::CompactString::const_new("ephemeral")),
                fingerprint: fingerprint(&mac),
                mac,
                verify_until: None,
            },
            verify_only: Vec::new(),
            legacy: None,
        }
    }

    /// Same as [`KeyRing::ephemeral`]; the name used in examples.
    pub fn generate_for_tests() -> KeyRing {
        Self::ephemeral()
    }

    /// Adds the legacy (tutorial) secret to a ring.
    pub fn with_legacy_secret(mut self, secret: &[u8]) -> KeyRing {
        self.legacy = Some(legacy_key(secret));
        self
    }

    /// The id of the key that signs new tokens.
    pub fn signing_key_id(&self) -> &KeyId {
        &self.signing.id
    }

    /// Every key id with its verify-only end date (`None` for the signing key).
    pub fn key_ids(&self) -> Vec<(KeyId, Option<u64>)> {
        std::iter::once(&self.signing)
            .chain(&self.verify_only)
            .map(|k| (k.id.clone(), k.verify_until))
            .collect()
    }

    pub(crate) fn signing(&self) -> (&KeyId, &Mac) {
        (&self.signing.id, &self.signing.mac)
    }

    pub(crate) fn legacy(&self) -> Option<&Mac> {
        self.legacy.as_ref().map(|(mac, _)| mac)
    }

    /// Whether a token that the ring `earlier` accepted as `format` is still accepted by this
    /// ring at `now`: its key id is here with the same secret and not past its end date (for a
    /// legacy token: the same legacy secret). A reload closes the live sockets of the tokens for
    /// which this is false.
    pub fn still_accepts(&self, earlier: &KeyRing, format: &Format, now: u64) -> bool {
        match format {
            Format::V1 { key_id } => {
                let kid = key_id.as_bytes();
                match (earlier.key(kid, None), self.key(kid, Some(now))) {
                    (Some(old), Some(new)) => old.fingerprint == new.fingerprint,
                    _ => false,
                }
            }
            Format::Legacy => match (&earlier.legacy, &self.legacy) {
                (Some((_, old)), Some((_, new))) => old == new,
                _ => false,
            },
        }
    }

    /// The key with this id; with `now`, only if it is not past its end date.
    fn key(&self, kid: &[u8], now: Option<u64>) -> Option<&RingKey> {
        std::iter::once(&self.signing)
            .chain(&self.verify_only)
            .find(|k| k.id.as_bytes() == kid)
            .filter(|k| match (k.verify_until, now) {
                (Some(until), Some(now)) => now < until,
                _ => true,
            })
    }

    /// Finds the key a token names. A verify-only key past its end date is unknown.
    pub(crate) fn lookup(&self, kid: &[u8], now: u64) -> KeyLookup<'_> {
        match self.key(kid, Some(now)) {
            Some(k) => KeyLookup::Found(&k.id, &k.mac),
            None => KeyLookup::Unknown,
        }
    }
}

impl KeyId {
    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing", &self.signing.id)
            .field(
                "verify_only",
                &self
                    .verify_only
                    .iter()
                    .map(|k| (&k.id, k.verify_until))
                    .collect::<Vec<_>>(),
            )
            .field("legacy", &self.legacy.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_b64(len: usize) -> String {
        URL_SAFE_NO_PAD.encode_to_string(vec![7u8; len])
    }

    fn file(entries: &[(&str, usize, Option<u64>)]) -> KeyFile {
        KeyFile {
            legacy_secret: None,
            keys: entries
                .iter()
                .map(|(id, len, until)| KeyFileEntry {
                    id: id.to_string(),
                    secret: secret_b64(*len),
                    verify_until: until.map(UnixTime),
                })
                .collect(),
        }
    }

    #[test]
    fn refuses_short_keys() {
        assert_eq!(
            KeyRing::from_file(&file(&[("a", 31, None)])).unwrap_err(),
            KeyRingError::SecretTooShort {
                id: "a".into(),
                len: 31
            }
        );
        assert!(KeyRing::from_file(&file(&[("a", 32, None)])).is_ok());
    }

    #[test]
    fn needs_exactly_one_signing_key() {
        assert_eq!(
            KeyRing::from_file(&file(&[])).unwrap_err(),
            KeyRingError::Empty
        );
        assert_eq!(
            KeyRing::from_file(&file(&[("a", 32, Some(5))])).unwrap_err(),
            KeyRingError::NoSigningKey
        );
        assert!(matches!(
            KeyRing::from_file(&file(&[("a", 32, None), ("b", 32, None)])).unwrap_err(),
            KeyRingError::SeveralSigningKeys(_)
        ));
    }

    #[test]
    fn refuses_duplicate_and_bad_ids() {
        assert_eq!(
            KeyRing::from_file(&file(&[("a", 32, None), ("a", 32, Some(9))])).unwrap_err(),
            KeyRingError::DuplicateKeyId("a".into())
        );
        assert_eq!(
            KeyRing::from_file(&file(&[("a.b", 32, None)])).unwrap_err(),
            KeyRingError::BadKeyId(1)
        );
        assert_eq!(
            KeyRing::from_file(&file(&[("a", 32, None), (&"x".repeat(33), 32, Some(1))]))
                .unwrap_err(),
            KeyRingError::BadKeyId(2)
        );
    }

    #[test]
    fn a_ring_still_accepts_the_same_key_and_secret_only() {
        let v1 = |id: &str| Format::V1 {
            key_id: KeyId::parse(id).unwrap(),
        };
        let entry = |id: &str, byte: u8, until: Option<u64>| KeyFileEntry {
            id: id.into(),
            secret: URL_SAFE_NO_PAD.encode_to_string(vec![byte; 32]),
            verify_until: until.map(UnixTime),
        };
        let ring = |entries: Vec<KeyFileEntry>, legacy: Option<&str>| {
            KeyRing::from_file(&KeyFile {
                legacy_secret: legacy.map(str::to_owned),
                keys: entries,
            })
            .unwrap()
        };
        let before = ring(
            vec![entry("a", 1, None), entry("b", 2, Some(1000))],
            Some("s"),
        );
        // Rotated: `a` became verify-only, `b` kept.
        let rotated = ring(
            vec![
                entry("c", 3, None),
                entry("a", 1, Some(2000)),
                entry("b", 2, Some(1000)),
            ],
            Some("s"),
        );
        assert!(rotated.still_accepts(&before, &v1("a"), 999));
        assert!(rotated.still_accepts(&before, &v1("b"), 999));
        // Past its end date, a key no longer holds its tokens.
        assert!(!rotated.still_accepts(&before, &v1("b"), 1000));
        // Dropped.
        let dropped = ring(vec![entry("c", 3, None)], Some("s"));
        assert!(!dropped.still_accepts(&before, &v1("a"), 0));
        // Same id, another secret: the tokens it signed are no longer authentic.
        let replaced = ring(
            vec![entry("a", 9, None), entry("b", 2, Some(1000))],
            Some("s"),
        );
        assert!(!replaced.still_accepts(&before, &v1("a"), 0));
        assert!(replaced.still_accepts(&before, &v1("b"), 0));
        // A key the earlier ring did not have never accepted anything.
        assert!(!before.still_accepts(&rotated, &v1("c"), 0));
        // Legacy: the same secret, present in both.
        assert!(dropped.still_accepts(&before, &Format::Legacy, 0));
        assert!(!ring(vec![entry("c", 3, None)], Some("t")).still_accepts(
            &before,
            &Format::Legacy,
            0
        ));
        assert!(!ring(vec![entry("c", 3, None)], None).still_accepts(&before, &Format::Legacy, 0));
    }

    #[test]
    fn verify_only_key_ends_at_its_date() {
        let ring =
            KeyRing::from_file(&file(&[("new", 32, None), ("old", 32, Some(1000))])).unwrap();
        assert!(matches!(ring.lookup(b"old", 999), KeyLookup::Found(..)));
        assert!(matches!(ring.lookup(b"old", 1000), KeyLookup::Unknown));
        assert!(matches!(
            ring.lookup(b"new", u64::MAX),
            KeyLookup::Found(..)
        ));
        assert!(matches!(ring.lookup(b"nope", 0), KeyLookup::Unknown));
    }

    #[test]
    fn parse_and_print_round_trip_without_leaking_secrets_in_debug() {
        let mut f = KeyFile::default();
        let first = f.rotate(1_764_000_000, 3600);
        let second = f.rotate(1_764_000_100, 3600);
        assert_ne!(first, second);
        let text = f.to_toml();
        let back = KeyFile::parse(&text).unwrap();
        assert_eq!(back.keys.len(), 2);
        assert_eq!(back.keys[0].id, second);
        assert_eq!(back.keys[0].verify_until, None);
        assert_eq!(back.keys[1].verify_until, Some(UnixTime(1_764_003_700)));
        let ring = KeyRing::from_file(&back).unwrap();
        assert_eq!(ring.signing_key_id().as_str(), second);
        for shown in [format!("{back:?}"), format!("{ring:?}")] {
            for k in &back.keys {
                assert!(!shown.contains(&k.secret), "secret in Debug: {shown}");
            }
        }
    }

    #[test]
    fn rotation_drops_keys_past_their_end() {
        let mut f = KeyFile::default();
        f.rotate(1000, 10);
        f.rotate(1001, 10); // first key verify-only until 1011
        f.rotate(1020, 10); // first key retired and dropped; second until 1030
        assert_eq!(f.keys.len(), 2);
        assert_eq!(f.keys[1].verify_until, Some(UnixTime(1030)));
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
