//! What the upstream is told: the headers of the upstream handshake, rebuilt from what the
//! gateway validated and decided, never the client's request copied as a whole.
//!
//! Owns:
//! - the allowlist of client headers passed through as they came (`gateway.forward_headers`);
//!   every other client header is dropped;
//! - the headers rebuilt from parsed values: `Origin`, `Cookie` (without wsguard's session
//!   cookie), `Sec-WebSocket-Protocol`;
//! - the identity headers (`X-Wsguard-User`, `-Session`, `-Data`): all of them or a refusal,
//!   never a part;
//! - the client's address as the gateway decided it ([`ClientChain`]: `X-Forwarded-For` is
//!   believed only from `gateway.trusted_proxies`), sent as `X-Forwarded-For`,
//!   `X-Forwarded-Proto`, `X-Forwarded-Host` and RFC 7239 `Forwarded` (names configurable in
//!   `[gateway.client_headers]`, optionally `X-Real-IP`).
//!
//! The upstream handshake's own headers (`Host`, `Upgrade`, `Connection`, `Sec-WebSocket-Key`,
//! `-Version`) are written by `crate::upstream`. Pure: no I/O, nothing logged.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use wsguard_token::{SessionData, SessionId, UserId};

use crate::limits::is_trusted;
use crate::reason::Refusal;

/// Header carrying the authenticated user id to the upstream.
pub const USER_HEADER: &str = "x-wsguard-user";
/// Header carrying the session id.
pub const SESSION_HEADER: &str = "x-wsguard-session";
/// Header carrying the session data: JSON in visible ASCII
/// ([`wsguard_token::SessionData::header_value`]).
pub const DATA_HEADER: &str = "x-wsguard-data";

/// Client headers passed through by default: harmless to any backend, useful to many.
pub const DEFAULT_FORWARD_HEADERS: [&str; 2] = ["user-agent", "accept-language"];

/// Most `X-Forwarded-For` entries read from a trusted proxy.
const MAX_CHAIN: usize = 64;

/// `[gateway.client_headers]`: the headers that tell the upstream who the client is. Each name
/// may be set to `""` to send no such header; client-sent headers of these names (and of every
/// other client-address header) never reach the upstream as the client wrote them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientHeadersConfig {
    /// The client address, then every proxy after it (`X-Forwarded-For`).
    pub for_header: String,
    /// `http` or `https`: how the client reached the first proxy (`X-Forwarded-Proto`).
    pub proto_header: String,
    /// The `Host` the client asked for (`X-Forwarded-Host`).
    pub host_header: String,
    /// RFC 7239 `Forwarded`: the same facts in the standard header.
    pub forwarded: bool,
    /// The client address alone (e.g. `X-Real-IP`); none unless set.
    pub real_ip_header: String,
}

impl Default for ClientHeadersConfig {
    fn default() -> Self {
        ClientHeadersConfig {
            for_header: "x-forwarded-for".into(),
            proto_header: "x-forwarded-proto".into(),
            host_header: "x-forwarded-host".into(),
            forwarded: true,
            real_ip_header: String::new(),
        }
    }
}

/// Headers that only wsguard may write upstream: the handshake's, hop-by-hop ones, identity,
/// client-address headers (any a backend might believe), and headers that override the path
/// (IIS, Symfony) and would undo the route decision.
fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "content-length"
            | "cookie"
            | "origin"
            | "forwarded"
            | "x-real-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "client-ip"
            | "x-original-url"
            | "x-rewrite-url"
    ) || name.starts_with("sec-websocket-")
        || name.starts_with("x-wsguard-")
        || name.starts_with("x-forwarded")
}

/// The forwarding settings, validated.
#[derive(Debug, Clone)]
pub struct Forwarding {
    pass: Vec<HeaderName>,
    for_header: Option<HeaderName>,
    proto_header: Option<HeaderName>,
    host_header: Option<HeaderName>,
    forwarded: bool,
    real_ip_header: Option<HeaderName>,
    forward_session_cookie: bool,
}

impl Forwarding {
    /// Validates `gateway.forward_headers`, `gateway.client_headers` and
    /// `gateway.forward_session_cookie`; every error names its key.
    pub fn new(
        forward_headers: &[String],
        client: &ClientHeadersConfig,
        forward_session_cookie: bool,
    ) -> Result<Forwarding, crate::config::ConfigErrors> {
        let mut errors = crate::config::ConfigErrors::default();
        let mut pass: Vec<HeaderName> = Vec::new();
        for (i, name) in forward_headers.iter().enumerate() {
            let key = format!("gateway.forward_headers[{i}]");
            match HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => errors.push(key.as_str(), format!("{name:?} is not a header name")),
                Ok(n) if is_reserved(n.as_str()) => errors.push(
                    key.as_str(),
                    format!(
                        "{n} is written by wsguard (handshake, identity, client address or \
                     a rebuilt header) and cannot be passed through as the client sent it"
                    ),
                ),
                Ok(n) if pass.contains(&n) => {
                    errors.push(key.as_str(), format!("{n} is listed twice"))
                }
                Ok(n) => pass.push(n),
            }
        }
        let mut own: Vec<HeaderName> = Vec::new();
        let mut name = |field: &str, value: &str| -> Option<HeaderName> {
            if value.is_empty() {
                return None;
            }
            let key = format!("gateway.client_headers.{field}");
            match HeaderName::from_bytes(value.as_bytes()) {
                Ok(n) if own.contains(&n) => {
                    errors.push(
                        key.as_str(),
                        format!("{n} is already another client header"),
                    );
                    None
                }
                Ok(n) if pass.contains(&n) => {
                    errors.push(
                        key.as_str(),
                        format!(
                            "{n} is also in gateway.forward_headers: the client's value would \
                         be forwarded beside wsguard's"
                        ),
                    );
                    None
                }
                Ok(n)
                    if is_reserved(n.as_str())
                        && !(n.as_str().starts_with("x-forwarded") || n == "x-real-ip") =>
                {
                    errors.push(
                        key.as_str(),
                        format!("{n} is written by wsguard for another purpose"),
                    );
                    None
                }
                Ok(n) => {
                    own.push(n.clone());
                    Some(n)
                }
                Err(_) => {
                    errors.push(key.as_str(), format!("{value:?} is not a header name"));
                    None
                }
            }
        };
        let for_header = name("for_header", &client.for_header);
        let proto_header = name("proto_header", &client.proto_header);
        let host_header = name("host_header", &client.host_header);
        let real_ip_header = name("real_ip_header", &client.real_ip_header);
        if errors.is_empty() {
            Ok(Forwarding {
                pass,
                for_header,
                proto_header,
                host_header,
                forwarded: client.forwarded,
                real_ip_header,
                forward_session_cookie,
            })
        } else {
            Err(errors)
        }
    }
}

/// The addresses a request came through, as far as the gateway believes them: the client
/// first, then each trusted proxy after it, the TCP peer last. Only a peer in
/// `gateway.trusted_proxies` is asked (through `X-Forwarded-For`) who it forwards for, and the
/// walk from the right stops at the first address that is not a trusted proxy (the client) or
/// at an entry that is not an address (the last trusted proxy is then the client). IPv4-mapped
/// IPv6 addresses are given as IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChain(Vec<IpAddr>);

impl ClientChain {
    /// The chain of a request from `peer` with these `X-Forwarded-For` values (every header, in
    /// order).
    pub fn new<'a>(
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a [u8]>,
        trusted: &[IpAddr],
    ) -> ClientChain {
        let peer = peer.to_canonical();
        let mut chain = vec![peer];
        if is_trusted(peer, trusted) {
            let mut entries: Vec<&[u8]> = Vec::new();
            for h in forwarded_for {
                entries.extend(h.split(|b| *b == b',').map(<[u8]>::trim_ascii));
                if entries.len() > MAX_CHAIN {
                    break;
                }
            }
            for e in entries.iter().rev().take(MAX_CHAIN) {
                let Some(ip) = std::str::from_utf8(e)
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                else {
                    break;
                };
                let ip = ip.to_canonical();
                chain.push(ip);
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
        }
        chain.reverse();
        ClientChain(chain)
    }

    /// The client's address.
    pub fn client(&self) -> IpAddr {
        self.0[0]
    }

    /// Every address, the client first, the TCP peer last.
    pub fn hops(&self) -> &[IpAddr] {
        &self.0
    }

    /// Whether the TCP peer is a trusted proxy.
    fn via_trusted_proxy(&self, trusted: &[IpAddr]) -> bool {
        self.0.last().is_some_and(|peer| is_trusted(*peer, trusted))
    }
}

/// The identity a verified session carries: what the identity headers say.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// The user.
    pub user: &'a UserId,
    /// The session.
    pub session: &'a SessionId,
    /// The session's data.
    pub data: &'a SessionData,
}

/// What the gateway decided about one handshake, for the upstream's headers.
#[derive(Debug)]
pub struct Decided<'a> {
    /// Who the authenticated session says the client is (`None` on a public route).
    pub identity: Option<Identity<'a>>,
    /// The client's `Origin`, re-serialised from its parsed form (`None` if it sent none).
    pub origin: Option<HeaderValue>,
    /// The subprotocols the client offered (validated).
    pub protocols: &'a [String],
    /// Who the client is.
    pub chain: &'a ClientChain,
    /// `gateway.trusted_proxies`.
    pub trusted: &'a [IpAddr],
    /// The request's `Host` (validated).
    pub host: &'a str,
    /// Whether the client reached the gateway over TLS.
    pub tls: bool,
    /// The name of wsguard's session cookie.
    pub cookie_name: &'a str,
}

impl Forwarding {
    /// The headers for the upstream handshake, after its own, rendered as header lines.
    /// Refused ([`Refusal::IdentityUnforwardable`]) if the session cannot be carried whole.
    pub fn headers(&self, client: &HeaderMap, d: &Decided<'_>) -> Result<HeadLines, Refusal> {
        let mut out = HeadLines(Vec::with_capacity(512));
        for name in &self.pass {
            for v in client.get_all(name) {
                out.push(name.as_str(), v.as_bytes());
            }
        }
        if let Some(origin) = &d.origin {
            out.push("origin", origin.as_bytes());
        }
        for v in client.get_all(header::COOKIE) {
            if self.forward_session_cookie {
                out.push("cookie", v.as_bytes());
            } else if let Some(rest) = v
                .to_str()
                .ok()
                .and_then(|v| crate::cookie::strip_cookie(v, d.cookie_name))
            {
                out.push("cookie", rest.as_bytes());
            }
        }
        if !d.protocols.is_empty() {
            // Tokens are visible ASCII (checked by `handshake`).
            out.open("sec-websocket-protocol");
            for (i, p) in d.protocols.iter().enumerate() {
                if i > 0 {
                    out.0.extend_from_slice(b", ");
                }
                out.0.extend_from_slice(p.as_bytes());
            }
            out.close();
        }
        if let Some(id) = &d.identity {
            identity(&mut out, id)?;
        }
        self.client_headers(&mut out, client, d);
        Ok(out)
    }

    fn client_headers(&self, out: &mut HeadLines, client: &HeaderMap, d: &Decided<'_>) {
        let trusted = d.chain.via_trusted_proxy(d.trusted);
        // A trusted proxy says how the client reached it; otherwise the gateway knows.
        let proto = trusted
            .then(|| single(client, "x-forwarded-proto"))
            .flatten()
            .and_then(|p| {
                ["http", "https"]
                    .into_iter()
                    .find(|s| p.eq_ignore_ascii_case(s))
            })
            .unwrap_or(if d.tls { "https" } else { "http" });
        let host = trusted
            .then(|| single(client, "x-forwarded-host"))
            .flatten()
            .filter(|h| crate::handshake::valid_host(h))
            .unwrap_or(d.host);
        let hops = d.chain.hops();
        // Written straight into the head: no header map, no value allocated per header, and
        // addresses without the formatting machinery (callgrind: a few thousand instructions
        // per handshake otherwise). Every byte here is an address, a validated host or a fixed
        // word.
        if let Some(name) = &self.for_header {
            out.open(name.as_str());
            for (i, ip) in hops.iter().enumerate() {
                if i > 0 {
                    out.0.extend_from_slice(b", ");
                }
                push_ip(&mut out.0, ip);
            }
            out.close();
        }
        if let Some(name) = &self.proto_header {
            out.push(name.as_str(), proto.as_bytes());
        }
        if let Some(name) = &self.host_header {
            out.push(name.as_str(), host.as_bytes());
        }
        if let Some(name) = &self.real_ip_header {
            out.open(name.as_str());
            push_ip(&mut out.0, &d.chain.client());
            out.close();
        }
        if self.forwarded {
            // One element per hop (RFC 7239 §4): the first also says how and for which host
            // the client asked. IPv6 addresses are quoted in brackets (§6); the host is quoted
            // because of its port's colon.
            out.open("forwarded");
            for (i, ip) in hops.iter().enumerate() {
                if i > 0 {
                    out.0.extend_from_slice(b", ");
                }
                out.0.extend_from_slice(b"for=");
                match ip {
                    IpAddr::V4(_) => push_ip(&mut out.0, ip),
                    IpAddr::V6(_) => {
                        out.0.extend_from_slice(b"\"[");
                        push_ip(&mut out.0, ip);
                        out.0.extend_from_slice(b"]\"");
                    }
                }
                if i == 0 {
                    out.0.extend_from_slice(b";host=\"");
                    out.0.extend_from_slice(host.as_bytes());
                    out.0.extend_from_slice(b"\";proto=");
                    out.0.extend_from_slice(proto.as_bytes());
                }
            }
            out.close();
        }
    }
}

/// Header lines for the upstream's request head, rendered (`name: value\r\n`). Only this
/// module builds them; no value holds a byte that could end a line or the head (CR, LF, NUL):
/// values from the client come from `http`'s checked `HeaderValue`s, the others are built here
/// from validated parts, and [`HeadLines::push`] checks again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeadLines(Vec<u8>);

impl HeadLines {
    /// The rendered lines.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Every `(name, value)`, in order (for tests and inspection).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        std::str::from_utf8(&self.0)
            .unwrap_or("")
            .split_terminator("\r\n")
            .filter_map(|l| l.split_once(": "))
    }

    /// Every value of header `name` (lower case), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Lines of these pairs (a value that could end its line is left out).
    pub fn of(pairs: &[(&str, &str)]) -> HeadLines {
        let mut h = HeadLines::default();
        for (n, v) in pairs {
            h.push(n, v.as_bytes());
        }
        h
    }

    /// Adds one line; a value that could end the line is left out (and says so: `false`).
    fn push(&mut self, name: &str, value: &[u8]) -> bool {
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            return false;
        }
        self.open(name);
        self.0.extend_from_slice(value);
        self.close();
        true
    }

    fn open(&mut self, name: &str) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
    }

    fn close(&mut self) {
        self.0.extend_from_slice(b"\r\n");
    }
}

/// Appends an address as `Display` writes it; IPv4 (the usual case) without the formatting
/// machinery.
fn push_ip(buf: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                if octet >= 100 {
                    buf.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    buf.push(b'0' + octet / 10 % 10);
                }
                buf.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(buf, "{v6}");
        }
    }
}

/// The one value of a header sent once, as text.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v.to_str().ok().map(str::trim),
        _ => None,
    }
}

/// Adds the identity headers, all three or none: every byte visible ASCII (or space, in the
/// data), or the upgrade is refused.
fn identity(out: &mut HeadLines, id: &Identity<'_>) -> Result<(), Refusal> {
    let data = id
        .data
        .header_value()
        .map_err(|_| Refusal::IdentityUnforwardable)?;
    let fields = [
        (USER_HEADER, id.user.as_str()),
        (SESSION_HEADER, id.session.as_str()),
        (DATA_HEADER, &*data),
    ];
    if fields
        .iter()
        .any(|(_, v)| !v.bytes().all(|b| (0x20..0x7f).contains(&b)))
    {
        return Err(Refusal::IdentityUnforwardable);
    }
    for (name, value) in fields {
        out.push(name, value.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
