//! The cryptography of the crate: secret key bytes, HMAC-SHA256 tags, constant-time checks.
//!
//! Owns [`Secret`] (key bytes, wiped on drop, redacted `Debug`), the [`Mac`] type (a key already
//! absorbed), signing a message given in parts, checking a tag in constant time, and a key's
//! fingerprint. Everything that signs or checks a tag (the ring, the v1 and legacy formats) goes
//! through here, so there is one comparison to audit. It must not know about key ids, files or
//! token formats, and must never print or return a secret in any form but the one the key file
//! stores ([`Secret::to_base64url`]).

use std::fmt;

use base64_simd::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ids::fill_random;

/// HMAC-SHA256 with the key already absorbed: cloning it skips the two key blocks per token.
pub(crate) type Mac = Hmac<Sha256>;

/// An HMAC-SHA256 key from `secret` bytes.
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

/// Names a secret without revealing it: the HMAC of a fixed label under the key. Two keys with
/// the same fingerprint have the same secret (a reload can tell a key id whose secret changed).
pub(crate) fn fingerprint(mac: &Mac) -> [u8; 32] {
    sign_parts(mac, &[b"wsguard key fingerprint"])
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

    /// The HMAC key of this secret.
    pub(crate) fn mac(&self) -> Mac {
        mac_for(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
