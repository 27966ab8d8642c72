//! Strict checks of a client's WebSocket upgrade request (RFC 6455 §4.2.1).
//!
//! Owns the decision "is this a well-formed WebSocket opening handshake?" over the request line
//! and headers, and the computation of `Sec-WebSocket-Accept`. It runs before authentication and
//! long before any upstream is dialled. Pure: no I/O; it reads headers, never logs them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, Method, Version, header};
use sha1::{Digest, Sha1};

use crate::reason::Refusal;

/// What a valid upgrade request carries that the proxy needs later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The client's `Sec-WebSocket-Key` (validated: base64 of 16 bytes).
    pub key: String,
    /// Subprotocols the client offered, in order (comma-separated tokens, possibly over several
    /// headers), bounded.
    pub protocols: Vec<String>,
}

/// Most subprotocols accepted in one offer.
pub const MAX_PROTOCOLS: usize = 16;

/// Whether one of a header's values, read as a comma-separated list, holds `token` (any case).
/// A value that is not visible ASCII (what `HeaderValue::to_str` accepts) holds nothing. Used for
/// the client's request here and for the upstream's answer in `upstream.rs`.
pub(crate) fn has_token<'a>(values: impl IntoIterator<Item = &'a [u8]>, token: &str) -> bool {
    values.into_iter().any(|v| {
        v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            && v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Checks the opening handshake.
pub fn check(method: &Method, version: Version, headers: &HeaderMap) -> Result<Upgrade, Refusal> {
    let upgrades: Vec<&[u8]> = headers
        .get_all(header::UPGRADE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if upgrades.is_empty() {
        return Err(Refusal::NotWebSocket);
    }
    let is_websocket =
        upgrades.len() == 1 && upgrades[0].trim_ascii().eq_ignore_ascii_case(b"websocket");
    if !is_websocket {
        return Err(Refusal::OtherUpgrade);
    }
    if method != Method::GET {
        return Err(Refusal::NotGet);
    }
    if version != Version::HTTP_11 {
        return Err(Refusal::NotHttp11);
    }
    if !has_token(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
        "upgrade",
    ) {
        return Err(Refusal::NoConnectionUpgrade);
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(Refusal::BadVersion),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.as_bytes().trim_ascii(),
        _ => return Err(Refusal::BadKey),
    };
    // base64 of exactly 16 bytes is 24 characters ending in "==".
    let mut decoded = [0u8; 18];
    if key.len() != 24 || STANDARD.decode_slice(key, &mut decoded) != Ok(16) {
        return Err(Refusal::BadKey);
    }
    let key = String::from_utf8_lossy(key).into_owned();
    let mut protocols = Vec::new();
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(s) = v.to_str() else {
            return Err(Refusal::BadKey);
        };
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if protocols.len() == MAX_PROTOCOLS || !is_token(p) {
                return Err(Refusal::BadKey);
            }
            protocols.push(p.to_owned());
        }
    }
    Ok(Upgrade { key, protocols })
}

/// RFC 7230 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn good() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    fn run(h: &HeaderMap) -> Result<Upgrade, Refusal> {
        check(&Method::GET, Version::HTTP_11, h)
    }

    #[test]
    fn accepts_the_rfc_example() {
        let up = run(&good()).unwrap();
        assert_eq!(accept_key(&up.key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(up.protocols.is_empty());
    }

    #[test]
    fn refusals() {
        assert_eq!(
            check(&Method::POST, Version::HTTP_11, &good()),
            Err(Refusal::NotGet)
        );
        assert_eq!(
            check(&Method::GET, Version::HTTP_10, &good()),
            Err(Refusal::NotHttp11)
        );
        type Case = (fn(&mut HeaderMap), Refusal);
        let cases: Vec<Case> = vec![
            (
                |h| {
                    h.remove(header::UPGRADE);
                },
                Refusal::NotWebSocket,
            ),
            (
                |h| {
                    h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
                },
                Refusal::OtherUpgrade,
            ),
            (
                |h| {
                    h.append(header::UPGRADE, HeaderValue::from_static("h2c"));
                },
                Refusal::OtherUpgrade,
            ),
            (
                |h| {
                    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
                },
                Refusal::NoConnectionUpgrade,
            ),
            (
                |h| {
                    h.remove(header::CONNECTION);
                },
                Refusal::NoConnectionUpgrade,
            ),
            (
                |h| {
                    h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
                },
                Refusal::BadVersion,
            ),
            (
                |h| {
                    h.remove(header::SEC_WEBSOCKET_VERSION);
                },
                Refusal::BadVersion,
            ),
            (
                |h| {
                    h.append(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static("13"),
                    );
                },
                Refusal::BadVersion,
            ),
            (
                |h| {
                    h.remove(header::SEC_WEBSOCKET_KEY);
                },
                Refusal::BadKey,
            ),
            (
                |h| {
                    h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
                },
                Refusal::BadKey,
            ),
            // 24 characters but 17 bytes / not padded right.
            (
                |h| {
                    h.insert(
                        header::SEC_WEBSOCKET_KEY,
                        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=A"),
                    );
                },
                Refusal::BadKey,
            ),
            (
                |h| {
                    h.insert(
                        header::SEC_WEBSOCKET_KEY,
                        HeaderValue::from_static("!!!!!!!!!!!!!!!!!!!!!!=="),
                    );
                },
                Refusal::BadKey,
            ),
            (
                |h| {
                    h.append(
                        header::SEC_WEBSOCKET_KEY,
                        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
                    );
                },
                Refusal::BadKey,
            ),
            (
                |h| {
                    h.insert(
                        header::SEC_WEBSOCKET_PROTOCOL,
                        HeaderValue::from_static("a b"),
                    );
                },
                Refusal::BadKey,
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut h = good();
            edit(&mut h);
            assert_eq!(run(&h), Err(want), "case {i}");
        }
    }

    #[test]
    fn protocols_in_order_across_headers() {
        let mut h = good();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat.v2, chat"),
        );
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("mqtt"),
        );
        assert_eq!(run(&h).unwrap().protocols, vec!["chat.v2", "chat", "mqtt"]);
        let mut h = good();
        let many = (0..=MAX_PROTOCOLS)
            .map(|i| format!("p{i}"))
            .collect::<Vec<_>>()
            .join(",");
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&many).unwrap(),
        );
        assert_eq!(run(&h), Err(Refusal::BadKey));
    }
}
