//! The key ring: which keys sign and verify, and how keys come and go.
//!
//! Owns [`KeyRing`] (one signing key, older verify-only keys each with an end date, and the
//! optional legacy secret), built only from a validated [`KeyFile`] (one signing key, unique
//! valid ids, secrets of at least 32 bytes), and the rules of a key's life: looking a token's key
//! id up (a verify-only key past its end date is unknown), rotating a key file
//! ([`KeyFile::rotate`]) and deciding whether a newer ring still accepts what an older one did
//! ([`KeyRing::still_accepts`], by id and fingerprint). Also owns [`Format`], which names the key
//! that accepted a token. It must not parse tokens (`v1.rs`, `legacy.rs`) or check lifetimes
//! (`verify.rs`), and must never print a secret: `Debug` shows key ids only.

use std::fmt;

use base64_simd::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::ids::{KeyId, fill_random};
use crate::keyfile::{KeyFile, KeyFileEntry, KeyRingError, UnixTime};
use crate::mac::{Mac, Secret, fingerprint, mac_for};

/// Which format a token was in, which names the key that accepted it: a v1 key of the ring by
/// its id, or the legacy secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// v1, signed by this key.
    V1 {
        /// Key that signed it.
        key_id: KeyId,
    },
    /// The tutorial's legacy format.
    Legacy,
}

/// The legacy (tutorial) secret's key and fingerprint. Any length: the old system chose it.
fn legacy_key(secret: &[u8]) -> (Mac, [u8; 32]) {
    let mac = mac_for(secret);
    let print = fingerprint(&mac);
    (mac, print)
}

/// One key of the ring, with the fingerprint a reload compares.
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
        let mac = Secret::generate().mac();
        KeyRing {
            signing: RingKey {
                id: KeyId::from_static("ephemeral"),
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

impl KeyFile {
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
}
