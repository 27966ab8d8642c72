//! JSON messages: the depth bound (counted on the bytes, before anything is parsed), the
//! syntax check, sender stamping and the JSON Schema.
//!
//! Owns what a JSON text message must be and how the sender is stamped over what the client
//! wrote. It must not count rates or decide kinds (`judge.rs`); it copies a message only to
//! stamp it.

use super::MessageConfig;
use crate::reason::CloseReason;

/// Nesting depth of a JSON text, counting brackets outside strings; stops early past `limit`.
pub(super) fn json_depth_within(text: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Checks a JSON text message on a route with `cfg` and `schema`, from `user` (None on a
/// public route): `Ok(None)` to forward it as it is (no copy), `Ok(Some(_))` to forward a
/// rewritten one (sender stamped).
pub(super) fn check(
    cfg: &MessageConfig,
    schema: Option<&jsonschema::Validator>,
    user: Option<&str>,
    text: &[u8],
) -> Result<Option<Vec<u8>>, CloseReason> {
    if !json_depth_within(text, cfg.json_max_depth) {
        return Err(CloseReason::PolicyViolation);
    }
    let stamp = match (&cfg.stamp_sender, user) {
        (Some(field), Some(user)) => Some((field, user)),
        _ => None,
    };
    if stamp.is_none() && schema.is_none() {
        // Syntax only: nothing is built.
        serde_json::from_slice::<serde::de::IgnoredAny>(text)
            .map_err(|_| CloseReason::PolicyViolation)?;
        return Ok(None);
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(text).map_err(|_| CloseReason::PolicyViolation)?;
    let mut stamped = false;
    if let (Some((field, user)), serde_json::Value::Object(map)) = (stamp, &mut value) {
        map.insert(field.clone(), serde_json::Value::String(user.to_owned()));
        stamped = true;
    }
    if let Some(schema) = schema
        && !schema.is_valid(&value)
    {
        return Err(CloseReason::SchemaViolation);
    }
    if !stamped {
        return Ok(None);
    }
    // serde_json writes UTF-8.
    serde_json::to_vec(&value)
        .map(Some)
        .map_err(|_| CloseReason::PolicyViolation)
}
