//! The legacy "SecureSession" tutorial token: `PAYLOAD "." hex(HMAC-SHA256(secret, PAYLOAD))`.
//!
//! Owns verification of tokens minted by the tutorial's Python code, where PAYLOAD is the session
//! JSON as written by `json.dumps(session, separators=(",", ":"))`. Accepted only when the
//! operator opts in (`accept_legacy_tokens`) and sets `legacy_secret`; wsguard never mints them.
//! The tutorial's shapes are honoured where they differ from v1: `uid` may be a JSON integer and
//! timestamps may be non-negative floats (`time.time()`), floored to whole seconds. Everything
//! else is as strict as v1: the tag is exactly 64 lowercase hex digits, checked in constant time
//! before the payload is parsed; unknown, missing or duplicate fields are refused.
//! Must not check lifetimes (see `verify`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::claims::{Claims, MAX_TIMESTAMP, Timestamp, check_timestamps};
use crate::data::SessionData;
use crate::ids::{SessionId, UserId};
use crate::mac::{Mac, verify_tag};
use crate::reject::{Malformed, Rejection};

/// Verifies a token that starts with `{` and is at most `MAX_TOKEN_LEN` bytes.
pub(crate) fn decode(key: &Mac, token: &str) -> Result<Claims, Rejection> {
    let (payload, tag_hex) = token
        .rsplit_once('.')
        .ok_or(Rejection::Malformed(Malformed::Structure))?;
    let tag = decode_hex_tag(tag_hex).ok_or(Rejection::Malformed(Malformed::Encoding))?;
    if !verify_tag(key, payload.as_bytes(), &tag) {
        return Err(Rejection::BadSignature);
    }

    let bad = Rejection::Malformed(Malformed::Payload);
    let w: Wire<'_> = serde_json::from_str(payload).map_err(|_| bad)?;
    let sid = SessionId::parse(&w.sid).map_err(|_| bad)?;
    let uid = match w.uid {
        LegacyUid::Text(s) => UserId::parse(&s),
        LegacyUid::Int(n) => UserId::parse(&n.to_string()),
    }
    .map_err(|_| bad)?;
    let data = SessionData::parse(w.data.get()).map_err(|_| bad)?;
    let (created, last_active) = check_timestamps(w.created.into(), w.last_active.into())?;
    Ok(Claims {
        sid,
        uid,
        data,
        created,
        last_active,
    })
}

fn decode_hex_tag(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    sid: Cow<'a, str>,
    #[serde(borrow)]
    uid: LegacyUid<'a>,
    #[serde(borrow)]
    data: &'a RawValue,
    created: LegacyTimestamp,
    last_active: LegacyTimestamp,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LegacyUid<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Int(u64),
}

/// Unix seconds as the tutorial wrote them: an integer, or a float from `time.time()`.
struct LegacyTimestamp(Timestamp);

impl From<LegacyTimestamp> for Timestamp {
    fn from(t: LegacyTimestamp) -> Timestamp {
        t.0
    }
}

impl<'de> Deserialize<'de> for LegacyTimestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        let t = match (n.as_u64(), n.as_f64()) {
            (Some(i), _) => Timestamp::Int(i),
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f <= MAX_TIMESTAMP as f64 => {
                // In range, so the cast is exact for the integer part.
                Timestamp::Int(f.floor() as u64)
            }
            _ => Timestamp::Invalid,
        };
        Ok(LegacyTimestamp(t))
    }
}
