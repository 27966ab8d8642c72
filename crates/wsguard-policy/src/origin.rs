//! Origin policy against Cross-Site WebSocket Hijacking.
//!
//! Owns parsing of `Origin` header values into a normalized [`Origin`] (scheme, lowercase host,
//! port with the scheme's default removed), parsing of allowlist rules ([`OriginRule`]: exact,
//! or `scheme://*.parent` for proper subdomains at a label boundary), and the decision
//! ([`OriginPolicy::check`]). Origins are compared as parsed values, never as substrings or
//! regexes. Pure: no I/O; errors carry no attacker input.

use std::fmt;

use crate::reason::Refusal;

/// Longest `Origin` value considered; anything longer is malformed.
pub const MAX_ORIGIN_LEN: usize = 1024;

/// A parsed, normalized serialized origin (RFC 6454 §6.2): `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    /// `None` for the scheme's default port.
    port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Parses `scheme://host[:port]` strictly. `allow_wildcard` lets the host start with `*.`.
fn parse(s: &str) -> Option<Origin> {
    if s.is_empty() || s.len() > MAX_ORIGIN_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let (scheme, rest) = s.split_once("://")?;
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else {
        return None;
    };
    // No path, query, fragment, userinfo or percent-encoding: an origin is only scheme/host/port.
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '%', '\\']) {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        addr.parse::<std::net::Ipv6Addr>().ok()?;
        let host = format!("[{}]", addr.to_ascii_lowercase());
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (rest.to_ascii_lowercase(), None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let p: u16 = p.parse().ok()?;
            if p == 0 {
                return None;
            }
            (p != scheme.default_port()).then_some(p)
        }
    };
    if !host.starts_with('[') && !valid_host(&host) {
        return None;
    }
    Some(Origin { scheme, host, port })
}

/// A DNS name or IPv4 address: labels of [a-z0-9-] (and `_`), 1..=63 long, no empty label,
/// no trailing dot, no leading/trailing hyphen.
fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    host.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    })
}

impl Origin {
    /// Whether `raw` is exactly this origin's serialisation (`Display`), compared without
    /// building it.
    pub fn is_written_as(&self, raw: &[u8]) -> bool {
        let scheme: &[u8] = match self.scheme {
            Scheme::Http => b"http://",
            Scheme::Https => b"https://",
        };
        let Some(rest) = raw.strip_prefix(scheme) else {
            return false;
        };
        let Some(rest) = rest.strip_prefix(self.host.as_bytes()) else {
            return false;
        };
        match self.port {
            None => rest.is_empty(),
            Some(p) => {
                let mut digits = [0u8; 5];
                let mut n = p;
                let mut i = digits.len();
                loop {
                    i -= 1;
                    // A digit: n % 10 < 10.
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                rest.first() == Some(&b':') && rest[1..] == digits[i..]
            }
        }
    }

    /// Parses an `Origin` header value (not `null`).
    pub fn parse(s: &str) -> Option<Origin> {
        parse(s)
    }
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// Exactly this origin.
    Exact(Origin),
    /// Any proper subdomain of `parent` with this scheme and port.
    Wildcard {
        /// The parent, e.g. `example.com` for `https://*.example.com`.
        parent: Origin,
    },
    /// The literal `null` origin (sandboxed iframes, `file:` pages). Only if listed.
    Null,
}

/// Why an allowlist rule is invalid. Rules are operator input: the message quotes them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginRuleError {
    /// Not `scheme://host[:port]`.
    #[error(
        "{0:?}: expected an origin like \"https://app.example.com\" or \"http://localhost:3000\" (scheme, host, optional port; no path)"
    )]
    Invalid(String),
    /// A misplaced or too broad wildcard.
    #[error(
        "{0:?}: a wildcard must be the whole leftmost label over a parent of at least two labels, e.g. \"https://*.example.com\""
    )]
    Wildcard(String),
}

impl OriginRule {
    /// Parses a rule from configuration.
    pub fn parse(s: &str) -> Result<OriginRule, OriginRuleError> {
        let s = s.trim();
        if s == "null" {
            return Ok(OriginRule::Null);
        }
        if let Some((scheme, rest)) = s.split_once("://")
            && let Some(parent) = rest.strip_prefix("*.")
        {
            let parent = parse(&format!("{scheme}://{parent}"))
                .ok_or_else(|| OriginRuleError::Wildcard(s.to_owned()))?;
            let labels = parent.host.split('.').count();
            if parent.host.starts_with('[') || (labels < 2 && parent.host != "localhost") {
                return Err(OriginRuleError::Wildcard(s.to_owned()));
            }
            return Ok(OriginRule::Wildcard { parent });
        }
        if s.contains('*') {
            return Err(OriginRuleError::Wildcard(s.to_owned()));
        }
        parse(s)
            .map(OriginRule::Exact)
            .ok_or_else(|| OriginRuleError::Invalid(s.to_owned()))
    }

    fn matches(&self, origin: &Origin) -> bool {
        match self {
            OriginRule::Exact(o) => o == origin,
            OriginRule::Wildcard { parent } => {
                parent.scheme == origin.scheme
                    && parent.port == origin.port
                    && origin.host.len() > parent.host.len() + 1
                    && origin.host.ends_with(parent.host.as_str())
                    && origin.host.as_bytes()[origin.host.len() - parent.host.len() - 1] == b'.'
            }
            OriginRule::Null => false,
        }
    }
}

/// The origin of a request the policy accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// No `Origin` header (the policy admits that).
    Missing,
    /// `Origin: null` (listed in the allowlist).
    Null,
    /// An allowed origin, parsed.
    Origin(Origin),
}

impl Allowed {
    /// The `Origin` header to forward: the client's own value when it is already the parsed
    /// origin's serialisation byte for byte (as browsers send it; a cheap clone), else that
    /// serialisation. Never anything that differs from what was checked.
    pub fn forwarded(&self, sent: Option<&http::HeaderValue>) -> Option<http::HeaderValue> {
        match (self, sent) {
            (Allowed::Origin(o), Some(v)) if o.is_written_as(v.as_bytes()) => Some(v.clone()),
            _ => self.header_value(),
        }
    }

    /// The `Origin` header to forward, re-serialised from the parsed value (lower-case host,
    /// no default port), never the client's bytes.
    pub fn header_value(&self) -> Option<http::HeaderValue> {
        match self {
            Allowed::Missing => None,
            Allowed::Null => Some(http::HeaderValue::from_static("null")),
            // A parsed origin is visible ASCII.
            Allowed::Origin(o) => http::HeaderValue::from_str(&o.to_string()).ok(),
        }
    }
}

/// The allowlist of a route.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    rules: Vec<OriginRule>,
    allow_null: bool,
    allow_missing: bool,
}

impl OriginPolicy {
    /// Every rule that does not parse, by its position in the list.
    pub fn problems(rules: &[String]) -> Vec<(usize, OriginRuleError)> {
        rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| OriginRule::parse(r).err().map(|e| (i, e)))
            .collect()
    }

    /// Builds a policy from configuration strings. `allow_missing` admits requests without an
    /// `Origin` header (non-browser clients; browsers always send one on WebSocket upgrades).
    pub fn new(rules: &[String], allow_missing: bool) -> Result<OriginPolicy, OriginRuleError> {
        let rules = rules
            .iter()
            .map(|r| OriginRule::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_null = rules.contains(&OriginRule::Null);
        Ok(OriginPolicy {
            rules,
            allow_null,
            allow_missing,
        })
    }

    /// Decides on the values of every `Origin` header of a request.
    pub fn check<'a>(
        &self,
        mut values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Allowed, Refusal> {
        let Some(first) = values.next() else {
            return if self.allow_missing {
                Ok(Allowed::Missing)
            } else {
                Err(Refusal::OriginMissing)
            };
        };
        if values.next().is_some() {
            return Err(Refusal::OriginMultiple);
        }
        let Ok(value) = std::str::from_utf8(first) else {
            return Err(Refusal::OriginMalformed);
        };
        if value == "null" {
            return if self.allow_null {
                Ok(Allowed::Null)
            } else {
                Err(Refusal::OriginNotAllowed)
            };
        }
        let origin = parse(value).ok_or(Refusal::OriginMalformed)?;
        if self.rules.iter().any(|r| r.matches(&origin)) {
            Ok(Allowed::Origin(origin))
        } else {
            Err(Refusal::OriginNotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(rules: &[&str]) -> OriginPolicy {
        OriginPolicy::new(
            &rules.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            false,
        )
        .unwrap()
    }

    fn one(p: &OriginPolicy, v: &str) -> Result<(), Refusal> {
        p.check(std::iter::once(v.as_bytes())).map(|_| ())
    }

    #[test]
    fn the_forwarded_origin_is_what_was_checked() {
        let p = policy(&["https://app.example.com", "http://localhost:3000"]);
        for (sent, want, reused) in [
            ("https://app.example.com", "https://app.example.com", true),
            ("http://localhost:3000", "http://localhost:3000", true),
            (
                "HTTPS://App.Example.com:443",
                "https://app.example.com",
                false,
            ),
            (
                "https://app.example.com:443",
                "https://app.example.com",
                false,
            ),
            ("http://localhost:03000", "http://localhost:3000", false),
        ] {
            let v = http::HeaderValue::from_static(sent);
            let allowed = p.check(std::iter::once(v.as_bytes())).unwrap();
            let got = allowed.forwarded(Some(&v)).unwrap();
            assert_eq!(got, want, "{sent}");
            let Allowed::Origin(o) = &allowed else {
                panic!("an origin")
            };
            assert_eq!(o.is_written_as(sent.as_bytes()), reused, "{sent}");
            assert!(o.is_written_as(o.to_string().as_bytes()));
        }
    }

    #[test]
    fn exact_and_wildcard_table() {
        let p = policy(&[
            "https://app.example.com",
            "http://localhost:3000",
            "https://*.example.org",
            "http://[::1]:3000",
        ]);
        let allowed = [
            "https://app.example.com",
            "https://app.example.com:443",
            "https://APP.Example.com",
            "HTTPS://app.example.com",
            "http://localhost:3000",
            "http://[::1]:3000",
            "https://a.example.org",
            "https://a.b.example.org",
        ];
        for v in allowed {
            assert_eq!(one(&p, v), Ok(()), "{v}");
        }
        let refused = [
            ("http://app.example.com", Refusal::OriginNotAllowed),
            ("https://app.example.com:8443", Refusal::OriginNotAllowed),
            (
                "https://app.example.com.evil.net",
                Refusal::OriginNotAllowed,
            ),
            ("https://evilexample.com", Refusal::OriginNotAllowed),
            ("https://xapp.example.com", Refusal::OriginNotAllowed),
            ("https://example.org", Refusal::OriginNotAllowed),
            ("https://example.org.evil.net", Refusal::OriginNotAllowed),
            ("https://evilexample.org", Refusal::OriginNotAllowed),
            ("http://a.example.org", Refusal::OriginNotAllowed),
            ("https://a.example.org:8443", Refusal::OriginNotAllowed),
            ("http://localhost:3001", Refusal::OriginNotAllowed),
            ("http://localhost", Refusal::OriginNotAllowed),
            ("null", Refusal::OriginNotAllowed),
            ("https://app.example.com.", Refusal::OriginMalformed),
            ("https://app.example.com/", Refusal::OriginMalformed),
            ("https://user@app.example.com", Refusal::OriginMalformed),
            ("https://app.example.com?x", Refusal::OriginMalformed),
            ("https://app.example.com#x", Refusal::OriginMalformed),
            ("https://%61pp.example.com", Refusal::OriginMalformed),
            ("https://äpp.example.com", Refusal::OriginMalformed),
            (" https://app.example.com", Refusal::OriginMalformed),
            ("https://app.example.com ", Refusal::OriginMalformed),
            ("https://app.example.com:", Refusal::OriginMalformed),
            ("https://app.example.com:0", Refusal::OriginMalformed),
            ("https://app.example.com:99999", Refusal::OriginMalformed),
            ("ws://app.example.com", Refusal::OriginMalformed),
            ("file://", Refusal::OriginMalformed),
            ("", Refusal::OriginMalformed),
            ("https://", Refusal::OriginMalformed),
            ("https://a..example.org", Refusal::OriginMalformed),
        ];
        for (v, want) in refused {
            assert_eq!(one(&p, v), Err(want), "{v:?}");
        }
        assert_eq!(one(&p, &"a".repeat(5000)), Err(Refusal::OriginMalformed));
        assert_eq!(
            p.check(std::iter::once(&b"https://\xff.example.org"[..])),
            Err(Refusal::OriginMalformed)
        );
    }

    #[test]
    fn missing_several_and_null() {
        let p = policy(&["https://app.example.com"]);
        assert_eq!(p.check(std::iter::empty()), Err(Refusal::OriginMissing));
        let open = OriginPolicy::new(&["https://app.example.com".into()], true).unwrap();
        assert_eq!(open.check(std::iter::empty()), Ok(Allowed::Missing));
        let two = [
            &b"https://app.example.com"[..],
            &b"https://app.example.com"[..],
        ];
        assert_eq!(p.check(two.into_iter()), Err(Refusal::OriginMultiple));
        assert_eq!(open.check(two.into_iter()), Err(Refusal::OriginMultiple));
        let with_null = policy(&["null"]);
        assert_eq!(one(&with_null, "null"), Ok(()));
        assert_eq!(
            one(&with_null, "https://app.example.com"),
            Err(Refusal::OriginNotAllowed)
        );
    }

    #[test]
    fn bad_rules_are_explained() {
        for bad in [
            "https://*",
            "https://*.com",
            "https://a.*.example.com",
            "*.example.com",
            "https://*example.com",
            "https://app.example.com/path",
            "app.example.com",
            "https://*.[::1]",
        ] {
            let e = OriginRule::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(OriginRule::parse("http://*.localhost:3000").is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = policy(&["https://app.example.com", "https://*.example.com"]);
            let _ = p.check(std::iter::once(bytes.as_slice()));
        }

        #[test]
        fn wildcard_only_matches_subdomains(host in "[a-z0-9.-]{1,40}") {
            let p = policy(&["https://*.example.com"]);
            let v = format!("https://{host}");
            if one(&p, &v).is_ok() {
                prop_assert!(host.ends_with(".example.com") && host.len() > ".example.com".len());
            }
        }
    }
}
