//! Strict checks of a client's request: the HTTP rules every request must meet (RFC 9112:
//! one valid `Host`, no body, no ambiguous framing), then the WebSocket opening handshake
//! (RFC 6455 §4.2.1).
//!
//! Owns the decisions "may this request be read further?" ([`check_request`]) and "is this a
//! well-formed WebSocket opening handshake?" ([`check`]), and the computation of
//! `Sec-WebSocket-Accept`. Both run before authentication and long before any upstream is
//! dialled. The target's path is `crate::target`'s. Pure: no I/O; it reads headers, never logs
//! them.

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
    /// headers), distinct, bounded. The upstream is offered exactly these.
    pub protocols: Vec<String>,
}

/// Checks what every request must meet before anything else is read of it, and returns its
/// `Host`:
/// - exactly one `Host`, `host[:port]` with a DNS name, IPv4 or bracketed IPv6 address
///   ([`Refusal::BadHost`]);
/// - no body: no `Transfer-Encoding`, and `Content-Length` only as `0` ([`Refusal::RequestBody`]).
///   With both (RFC 9112 §6.1: a smuggling attempt or a broken client), hyper has already
///   dropped `Content-Length`, and `Transfer-Encoding` alone is refused the same way.
pub fn check_request(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().ok().filter(|h| valid_host(h)),
        _ => None,
    }
    .ok_or(Refusal::BadHost)?;
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    let cl = headers.get_all(header::CONTENT_LENGTH);
    if te || cl.iter().any(|v| v.as_bytes().trim_ascii() != b"0") {
        return Err(Refusal::RequestBody);
    }
    Ok(host)
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2), strictly: a DNS name or IPv4 address (letters,
/// digits, `-`, `.`, `_`), or an IPv6 address in brackets; a port of 1 to 5 digits up to 65535.
/// No userinfo, no percent-encoding, no empty host.
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let name_ok = host.starts_with('[')
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    port_ok && name_ok
}

/// Most subprotocols accepted in one offer.
pub const MAX_PROTOCOLS: usize = 16;

/// Whether one of a header's values, read as a comma-separated list, holds `token` (any case).
/// A value that is not visible ASCII (what `HeaderValue::to_str` accepts) holds nothing. Used for
/// the client's request here and for the upstream's answer in `upstream.rs`.
pub fn has_token<'a>(values: impl IntoIterator<Item = &'a [u8]>, token: &str) -> bool {
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
    let protocols = protocols(headers)?;
    Ok(Upgrade { key, protocols })
}

/// The subprotocols offered: tokens separated by commas, over every `Sec-WebSocket-Protocol`
/// header. Empty list elements between tokens are ignored (RFC 9110 §5.6.1), but a header that
/// names no protocol at all (empty, or only commas) is refused, as are a non-token, a repeated
/// protocol (RFC 6455 §4.1: they must be unique) and more than [`MAX_PROTOCOLS`].
fn protocols(headers: &HeaderMap) -> Result<Vec<String>, Refusal> {
    let mut protocols: Vec<String> = Vec::new();
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let s = v.to_str().map_err(|_| Refusal::BadProtocol)?;
        let mut named = false;
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if protocols.len() == MAX_PROTOCOLS || !is_token(p) || protocols.iter().any(|o| o == p)
            {
                return Err(Refusal::BadProtocol);
            }
            named = true;
            protocols.push(p.to_owned());
        }
        if !named {
            return Err(Refusal::BadProtocol);
        }
    }
    Ok(protocols)
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
                Refusal::BadProtocol,
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
        assert_eq!(run(&h), Err(Refusal::BadProtocol));
    }

    #[test]
    fn protocol_lists_that_name_nothing_or_repeat_are_refused() {
        for (values, want) in [
            (&[""][..], Err(Refusal::BadProtocol)),
            (&[","][..], Err(Refusal::BadProtocol)),
            (&[" , ,, "][..], Err(Refusal::BadProtocol)),
            (&["chat", ""][..], Err(Refusal::BadProtocol)),
            (&["chat, chat"][..], Err(Refusal::BadProtocol)),
            (&["chat", "chat"][..], Err(Refusal::BadProtocol)),
            (&["chat;v=1"][..], Err(Refusal::BadProtocol)),
            (&["chat,,mqtt"][..], Ok(vec!["chat", "mqtt"])),
            (&[" chat , "][..], Ok(vec!["chat"])),
            (&["Chat, chat"][..], Ok(vec!["Chat", "chat"])),
        ] {
            let mut h = good();
            for v in values {
                h.append(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let got = run(&h).map(|u| u.protocols);
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{values:?}");
        }
    }

    fn request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn host_must_be_one_valid_host() {
        for host in [
            "example.com",
            "EXAMPLE.com:8080",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[2001:db8::1]:65535",
            "a_b-c.d",
            "localhost",
        ] {
            assert_eq!(
                check_request(&request(&[("host", host)])),
                Ok(host),
                "{host}"
            );
        }
        for host in [
            "",
            " ",
            "a b",
            "user@example.com",
            "example.com:",
            "example.com:0x50",
            "example.com:65536",
            "example.com:123456",
            "exa%6dple.com",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[v1.x]",
            "[fe80::1%eth0]",
            "::1",
            "example.com/x",
            "example.com\\x",
            "ex\u{e9}.com",
        ] {
            let h = HeaderMap::from_iter(
                HeaderValue::from_bytes(host.as_bytes())
                    .ok()
                    .map(|v| (header::HOST, v)),
            );
            assert_eq!(check_request(&h), Err(Refusal::BadHost), "{host:?}");
        }
        assert_eq!(check_request(&request(&[])), Err(Refusal::BadHost));
        assert_eq!(
            check_request(&request(&[("host", "a"), ("host", "a")])),
            Err(Refusal::BadHost)
        );
    }

    #[test]
    fn requests_carry_no_body_and_no_ambiguous_framing() {
        let h = |extra: &[(&str, &str)]| {
            let mut all = vec![("host", "example.com")];
            all.extend_from_slice(extra);
            check_request(&request(&all)).map(str::to_owned)
        };
        let ok = Ok("example.com".to_owned());
        assert_eq!(h(&[("content-length", "0")]), ok);
        assert_eq!(h(&[("content-length", "0"), ("content-length", "0")]), ok);
        for extra in [
            &[("transfer-encoding", "chunked"), ("content-length", "5")][..],
            &[("content-length", "0"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "gzip"), ("content-length", "0")][..],
            &[("transfer-encoding", "chunked")][..],
            &[("content-length", "5")][..],
            &[("content-length", "0"), ("content-length", "5")][..],
            &[("content-length", "00x")][..],
        ] {
            assert_eq!(h(extra), Err(Refusal::RequestBody), "{extra:?}");
        }
    }
}
