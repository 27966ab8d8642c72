//! The v1 token format: `v1.<kid>.<payload>.<tag>`.
//!
//! Owns encoding and decoding of v1 tokens (see `docs/TOKEN_FORMAT.md`). `payload` is unpadded
//! base64url of a JSON object with exactly the fields `sid`, `uid`, `data`, `created`,
//! `last_active`; `tag` is unpadded base64url of HMAC-SHA256 over the bytes `v1.<kid>.`
//! followed by the payload JSON (decoded). The algorithm is fixed by the version prefix, never read from the token.
//! Must not check lifetimes (see `verify`), and must not parse the payload JSON before the
//! signature is verified (only the bounded, strict base64 decoding comes first).

use std::borrow::Cow;
use std::fmt::Write as _;

use base64_simd::{Out, URL_SAFE_NO_PAD};

use crate::claims::{Claims, Timestamp, check_timestamps};
use crate::data::SessionData;
use crate::ids::{KeyId, SessionId, UserId, valid_key_id};
use crate::mac::{Mac, sign_parts, verify_tag_parts};
use crate::reject::{Malformed, Rejection};
use crate::ring::{KeyLookup, KeyRing};

/// The version prefix, including its separator.
pub(crate) const PREFIX: &str = "v1.";
/// Length of the base64url tag (32 bytes, unpadded): 43 characters.
const TAG_B64_LEN: usize = 43;

pub(crate) fn encode(kid: &KeyId, key: &Mac, claims: &Claims) -> String {
    let mut payload =
        String::with_capacity(96 + claims.uid.as_str().len() + claims.data.as_json().len());
    payload.push_str("{\"sid\":\"");
    payload.push_str(claims.sid.as_str());
    payload.push_str("\",\"uid\":");
    // A UserId is printable ASCII; serde_json escapes `"` and `\`.
    payload.push_str(&serde_json::Value::from(claims.uid.as_str()).to_string());
    payload.push_str(",\"data\":");
    payload.push_str(claims.data.as_json());
    let _ = write!(
        payload,
        ",\"created\":{},\"last_active\":{}}}",
        claims.created, claims.last_active
    );

    let mut out = String::with_capacity(
        PREFIX.len() + kid.as_str().len() + 2 + payload.len().div_ceil(3) * 4 + TAG_B64_LEN,
    );
    out.push_str(PREFIX);
    out.push_str(kid.as_str());
    out.push('.');
    let tag = sign_parts(key, &[out.as_bytes(), payload.as_bytes()]);
    URL_SAFE_NO_PAD.encode_append(payload.as_bytes(), &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_append(tag, &mut out);
    out
}

/// Verifies a token that starts with [`PREFIX`] and is at most [`crate::MAX_TOKEN_LEN`] bytes.
pub(crate) fn decode(ring: &KeyRing, token: &str, now: u64) -> Result<(Claims, KeyId), Rejection> {
    let malformed = Rejection::Malformed;
    // The key id is short: look for its end only within its maximum length.
    let rest = &token[PREFIX.len()..];
    let kid_end = rest.bytes().take(33).position(|b| b == b'.');
    let (kid, rest) = match kid_end {
        Some(n) => (&rest[..n], &rest[n + 1..]),
        None if rest.contains('.') => return Err(malformed(Malformed::KeyId)),
        None => return Err(malformed(Malformed::Structure)),
    };
    if !valid_key_id(kid.as_bytes()) {
        return Err(malformed(Malformed::KeyId));
    }
    // The tag has a fixed length, so the last separator's place is known without scanning. A
    // stray '.' in the payload is not base64url and fails its decoding after the tag check.
    let split = rest.len().checked_sub(TAG_B64_LEN + 1);
    let (payload_b64, tag_b64) = match split {
        Some(at) if rest.as_bytes()[at] == b'.' => (&rest[..at], &rest[at + 1..]),
        _ if rest.contains('.') => return Err(malformed(Malformed::Encoding)),
        _ => return Err(malformed(Malformed::Structure)),
    };
    if payload_b64.is_empty() {
        return Err(malformed(Malformed::Structure));
    }
    let mut tag = [0u8; 32];
    decode_b64(tag_b64, &mut tag)?;
    let (kid, key) = match ring.lookup(kid.as_bytes(), now) {
        KeyLookup::Found(kid, key) => (kid, key),
        KeyLookup::Unknown => return Err(Rejection::UnknownKey),
    };
    // The MAC covers `v1.<kid>.` and the decoded payload JSON: the JSON is shorter than its
    // base64, so one SHA-256 block less for a typical token. Base64 decoding before the MAC check
    // is bounded (≤ 4096 bytes) and strict (canonical trailing bits), so every token has one
    // encoding; the JSON itself is parsed only after the tag matched. Typical payloads decode on
    // the stack; a large one (big session data) gets an exactly sized heap buffer.
    let head = &token.as_bytes()[..PREFIX.len() + kid.as_str().len() + 1];
    let authentic = |json: &[u8]| verify_tag_parts(key, &[head, json], &tag);
    let claims = if payload_b64.len() <= SMALL_PAYLOAD_B64 {
        let mut buf = [0u8; SMALL_PAYLOAD_B64 / 4 * 3];
        let json = decode_b64(payload_b64, &mut buf)?;
        if !authentic(json) {
            return Err(Rejection::BadSignature);
        }
        parse_payload(json)?
    } else {
        let mut buf = vec![0u8; payload_b64.len().div_ceil(4) * 3];
        let json = decode_b64(payload_b64, &mut buf)?;
        if !authentic(json) {
            return Err(Rejection::BadSignature);
        }
        parse_payload(json)?
    };
    Ok((claims, kid.clone()))
}

/// Payloads up to this many base64 characters decode on the stack.
const SMALL_PAYLOAD_B64: usize = 512;

/// Strict unpadded base64url (no padding, canonical trailing bits; SIMD where the CPU has it).
/// `out` must hold `b64.len() / 4 * 3 + 2` bytes; the length is checked first, so a short
/// buffer is an error, never a panic.
fn decode_b64<'o>(b64: &str, out: &'o mut [u8]) -> Result<&'o [u8], Rejection> {
    let bad = Rejection::Malformed(Malformed::Encoding);
    let needed = URL_SAFE_NO_PAD
        .decoded_length(b64.as_bytes())
        .map_err(|_| bad)?;
    let out = out.get_mut(..needed).ok_or(bad)?;
    match URL_SAFE_NO_PAD.decode(b64.as_bytes(), Out::from_slice(out)) {
        Ok(decoded) => Ok(decoded),
        Err(_) => Err(bad),
    }
}

/// Strict parse of the canonical payload
/// `{"sid":"<sid>","uid":<string>,"data":<object>,"created":<uint>,"last_active":<uint>}`:
/// exactly these members, in this order, without whitespace between them, so unknown, missing,
/// duplicate or reordered members all fail to match. `uid` is a JSON string (unescaped by
/// serde_json when it holds an escape), `data` a JSON object validated by [`SessionData`], the
/// timestamps unsigned integers without sign, fraction, exponent or leading zero.
///
/// Matching the fixed shape instead of running serde's generic struct visitor cuts verification
/// from ~840 ns to ~400 ns on this machine (BENCHMARKS.md); serde_json still parses every piece
/// of free-form JSON (an escaped `uid`, the `data` object).
pub(crate) fn parse_payload(json: &[u8]) -> Result<Claims, Rejection> {
    let bad = Rejection::Malformed(Malformed::Payload);
    let text = std::str::from_utf8(json).map_err(|_| bad)?;

    // Head: {"sid":"<sid>","uid":
    let rest = text.strip_prefix(r#"{"sid":""#).ok_or(bad)?;
    let end = rest.find('"').ok_or(bad)?;
    let sid = SessionId::parse(&rest[..end]).map_err(|_| bad)?;
    let rest = rest[end..].strip_prefix(r#"","uid":""#).ok_or(bad)?;
    let (uid, rest) = json_string(rest).ok_or(bad)?;
    let uid = UserId::parse(&uid).map_err(|_| bad)?;
    let data = rest.strip_prefix(r#","data":"#).ok_or(bad)?;

    // Tail, from the end: ,"created":<uint>,"last_active":<uint>}
    let data = data.strip_suffix('}').ok_or(bad)?;
    let (data, last_active) = split_last_member(data, r#","last_active":"#)?;
    let (data, created) = split_last_member(data, r#","created":"#)?;
    // What is left must be exactly one JSON object.
    let data = SessionData::parse(data).map_err(|_| bad)?;
    let (created, last_active) = check_timestamps(uint(created)?, uint(last_active)?)?;
    Ok(Claims {
        sid,
        uid,
        data,
        created,
        last_active,
    })
}

/// Splits `…<name><value>` into `(…, value)`. The value of a valid token is all digits, so the
/// fast path walks back over digits and compares the name once; anything else falls back to a
/// substring search, so that the error names the real defect.
fn split_last_member<'a>(s: &'a str, name: &str) -> Result<(&'a str, &'a str), Rejection> {
    let digits = s.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (head, value) = s.split_at(s.len() - digits);
    if digits > 0
        && let Some(head) = head.strip_suffix(name)
    {
        return Ok((head, value));
    }
    s.rsplit_once(name)
        .ok_or(Rejection::Malformed(Malformed::Payload))
}

/// The JSON string at the start of `s` (after its opening quote), unescaped, and what follows
/// its closing quote.
fn json_string(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'"' => break,
            b'\\' => {
                escaped = true;
                i += 2;
            }
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    if i >= b.len() {
        return None;
    }
    let (inner, rest) = (&s[..i], &s[i + 1..]);
    if !escaped {
        return Some((Cow::Borrowed(inner), rest));
    }
    // Rare: let serde_json do the unescaping, on the quoted slice.
    let quoted = &s.get(..i + 1)?;
    let unescaped: String = serde_json::from_str(&format!("\"{quoted}")).ok()?;
    Some((Cow::Owned(unescaped), rest))
}

/// A canonical unsigned integer: `0`, or digits without a leading zero. More than 12 digits
/// exceeds [`MAX_TIMESTAMP`](crate::claims::MAX_TIMESTAMP) anyway, so at most 12 are read (no
/// overflow possible). A slot holding JSON structure (not a single scalar) is a payload error,
/// any other scalar an invalid timestamp.
fn uint(s: &str) -> Result<Timestamp, Rejection> {
    let b = s.as_bytes();
    if matches!(b.len(), 1..=12) && (b[0] != b'0' || b.len() == 1) {
        let mut v = 0u64;
        for &c in b {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return invalid_slot(b);
            }
            v = v * 10 + u64::from(d);
        }
        return Ok(Timestamp::Int(v));
    }
    invalid_slot(b)
}

#[cold]
fn invalid_slot(b: &[u8]) -> Result<Timestamp, Rejection> {
    if b.iter()
        .any(|c| matches!(c, b'{' | b'}' | b'[' | b']' | b':' | b','))
    {
        return Err(Rejection::Malformed(Malformed::Payload));
    }
    Ok(Timestamp::Invalid)
}
