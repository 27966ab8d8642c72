//! The session cookie: strict extraction from `Cookie` request headers (RFC 6265 §4.2, §5.4),
//! and the `Set-Cookie` that sets it.
//!
//! Owns finding the one cookie named like wsguard's session cookie, across every `Cookie`
//! header, refusing two of them (an attacker who can set a cookie on a sibling domain could
//! otherwise shadow the victim's), and removing it from what is forwarded upstream. Hand-written
//! (about 40 lines, zero allocation) rather than `cookie::Cookie::split_parse`, which parses
//! every cookie into an owned value and does not report duplicates. The `Set-Cookie` value
//! ([`set_cookie`], with the attributes of [`CookieAttributes`]) is built by the `cookie` crate.
//! Pure: no I/O.

/// `SameSite` of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// Sent only with requests from the same site.
    Strict,
    /// Also with top-level navigations from other sites (the default).
    #[default]
    Lax,
    /// With every request, cross-site ones included (needs `Secure`).
    None,
}

/// How the session cookie is set: the attributes of the admin API's and the CLI's
/// `Set-Cookie` (`sessions.cookie_domain`, `cookie_secure`, `cookie_same_site`). It is always
/// `HttpOnly` and `Path=/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttributes {
    /// `Domain`: the cookie also goes to this domain's subdomains (a gateway on
    /// `ws.example.com` in front of an app on `app.example.com`: `example.com`). `None`: only
    /// the host that set it.
    pub domain: Option<String>,
    /// `Secure`: never over plain HTTP (on by default).
    pub secure: bool,
    /// `SameSite`.
    pub same_site: SameSite,
}

impl Default for CookieAttributes {
    fn default() -> Self {
        CookieAttributes {
            domain: None,
            secure: true,
            same_site: SameSite::Lax,
        }
    }
}

/// The `Set-Cookie` value that sets session cookie `name` to `value` for `max_age` seconds.
pub fn set_cookie(name: &str, value: &str, max_age: u64, attrs: &CookieAttributes) -> String {
    let same_site = match attrs.same_site {
        SameSite::Strict => cookie::SameSite::Strict,
        SameSite::Lax => cookie::SameSite::Lax,
        SameSite::None => cookie::SameSite::None,
    };
    let mut c = cookie::Cookie::build((name.to_owned(), value.to_owned()))
        .path("/")
        .http_only(true)
        .secure(attrs.secure)
        .same_site(same_site)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ));
    if let Some(d) = &attrs.domain {
        c = c.domain(d.clone());
    }
    c.build().to_string()
}

/// Why the session cookie is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// The session cookie appears more than once.
    #[error("the session cookie appears more than once")]
    Duplicate,
    /// The session cookie's value is empty or not made of cookie-octets.
    #[error("the session cookie's value is invalid")]
    Invalid,
}

/// Which bytes a session cookie value may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieValues {
    /// RFC 6265 cookie-octets only (every v1 token is made of them). The default.
    Strict,
    /// Also the raw JSON of the "SecureSession" tutorial's legacy tokens (quotes, commas,
    /// backslashes, inner spaces), as browsers send them. Only while `accept_legacy_tokens` is
    /// on; still printable ASCII only, and `;` still ends the value.
    LegacyJson,
}

/// Which bytes each [`CookieValues`] allows, as tables (one load per byte: the check runs over
/// every authenticated handshake's token).
const fn table(legacy: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        // RFC 6265 cookie-octet: visible ASCII except `"`, `,`, `;` and `\`.
        t[b] = legacy || !matches!(b, 0x20 | 0x22 | 0x2c | 0x3b | 0x5c);
        b += 1;
    }
    t
}

const STRICT: [bool; 256] = table(false);
const LEGACY_JSON: [bool; 256] = table(true);

/// RFC 6265 cookie-octet.
#[cfg(test)]
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

impl CookieValues {
    fn table(self) -> &'static [bool; 256] {
        match self {
            CookieValues::Strict => &STRICT,
            CookieValues::LegacyJson => &LEGACY_JSON,
        }
    }
}

/// Pairs of one header value: (name, value) with surrounding spaces trimmed.
fn pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|b| *b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// The value of the cookie `name`, if present exactly once.
pub fn session_cookie<'a>(
    headers: impl Iterator<Item = &'a [u8]>,
    name: &str,
    values: CookieValues,
) -> Result<Option<&'a str>, CookieError> {
    let mut found: Option<&'a [u8]> = None;
    for header in headers {
        for (n, v) in pairs(header) {
            if n != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(CookieError::Duplicate);
            }
            found = Some(v);
        }
    }
    let Some(v) = found else { return Ok(None) };
    let v = match (values, v) {
        (CookieValues::Strict, [b'"', inner @ .., b'"']) => inner,
        (_, v) => v,
    };
    let allowed = values.table();
    if v.is_empty() || !v.iter().all(|b| allowed[usize::from(*b)]) {
        return Err(CookieError::Invalid);
    }
    // Both sets are ASCII, so this cannot fail.
    std::str::from_utf8(v)
        .map(Some)
        .map_err(|_| CookieError::Invalid)
}

/// The header value without the cookie `name`; `None` if nothing is left.
pub fn strip_cookie(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').is_none_or(|(n, _)| n.trim() != name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NAME: &str = "wsguard_session";

    fn get<'a>(headers: &[&'a str]) -> Result<Option<&'a str>, CookieError> {
        session_cookie(
            headers.iter().map(|h| h.as_bytes()),
            NAME,
            CookieValues::Strict,
        )
    }

    #[test]
    fn set_cookie_says_every_attribute() {
        let c = set_cookie(NAME, "v1.k.t", 3600, &CookieAttributes::default());
        assert!(c.starts_with("wsguard_session=v1.k.t;"), "{c}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Domain"), "host-only by default: {c}");
        let c = set_cookie(
            NAME,
            "t",
            60,
            &CookieAttributes {
                domain: Some("example.com".into()),
                secure: true,
                same_site: SameSite::None,
            },
        );
        assert!(
            c.contains("Domain=example.com") && c.contains("SameSite=None"),
            "{c}"
        );
        let c = set_cookie(
            NAME,
            "t",
            60,
            &CookieAttributes {
                domain: None,
                secure: false,
                same_site: SameSite::Strict,
            },
        );
        assert!(
            !c.contains("Secure") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }

    #[test]
    fn the_tables_are_the_definitions() {
        for b in 0..=255u8 {
            assert_eq!(STRICT[usize::from(b)], is_cookie_octet(b), "{b:#x}");
            assert_eq!(
                LEGACY_JSON[usize::from(b)],
                (0x20..=0x7e).contains(&b),
                "{b:#x}"
            );
        }
    }

    #[test]
    fn finds_the_cookie() {
        assert_eq!(get(&["wsguard_session=v1.a.b.c"]), Ok(Some("v1.a.b.c")));
        assert_eq!(get(&["a=1; wsguard_session=tok;b=2"]), Ok(Some("tok")));
        assert_eq!(get(&["a=1", "wsguard_session=tok"]), Ok(Some("tok")));
        assert_eq!(get(&["wsguard_session=\"tok\""]), Ok(Some("tok")));
        assert_eq!(get(&["wsguard_session = tok"]), Ok(Some("tok")));
        assert_eq!(get(&[]), Ok(None));
        assert_eq!(
            get(&["a=1; wsguard_session2=x; Wsguard_session=y; xwsguard_session=z"]),
            Ok(None)
        );
    }

    #[test]
    fn duplicates_and_bad_values() {
        assert_eq!(
            get(&["wsguard_session=a; wsguard_session=a"]),
            Err(CookieError::Duplicate)
        );
        assert_eq!(
            get(&["wsguard_session=a", "wsguard_session=b"]),
            Err(CookieError::Duplicate)
        );
        assert_eq!(get(&["wsguard_session="]), Err(CookieError::Invalid));
        assert_eq!(get(&["wsguard_session=\"\""]), Err(CookieError::Invalid));
        assert_eq!(get(&["wsguard_session=a,b"]), Err(CookieError::Invalid));
        assert_eq!(get(&["wsguard_session=a\\b"]), Err(CookieError::Invalid));
        assert_eq!(
            get(&["wsguard_session={\"sid\":1}"]),
            Err(CookieError::Invalid)
        );
        // Junk in other cookies is not our business.
        let junk = [&b"other=\xff\xfe; x; ;;; wsguard_session=tok"[..]];
        assert_eq!(
            session_cookie(junk.into_iter(), NAME, CookieValues::Strict),
            Ok(Some("tok"))
        );
    }

    #[test]
    fn legacy_json_values_only_when_asked() {
        let legacy = r#"wsguard_session={"sid":"a b","uid":"u,1"}.00ff; other=1"#;
        let get = |values| session_cookie([legacy.as_bytes()].into_iter(), NAME, values);
        assert_eq!(get(CookieValues::Strict), Err(CookieError::Invalid));
        assert_eq!(
            get(CookieValues::LegacyJson),
            Ok(Some(r#"{"sid":"a b","uid":"u,1"}.00ff"#))
        );
        // Still no control bytes or non-ASCII, and duplicates are still refused.
        let bad = [&b"wsguard_session={\"a\":\"\x01\"}"[..]];
        assert_eq!(
            session_cookie(bad.into_iter(), NAME, CookieValues::LegacyJson),
            Err(CookieError::Invalid)
        );
        let two = [&b"wsguard_session={}; wsguard_session={}"[..]];
        assert_eq!(
            session_cookie(two.into_iter(), NAME, CookieValues::LegacyJson),
            Err(CookieError::Duplicate)
        );
    }

    #[test]
    fn strips_only_ours() {
        assert_eq!(
            strip_cookie("a=1; wsguard_session=t; b=2", NAME).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookie("wsguard_session=t", NAME), None);
        assert_eq!(
            strip_cookie("wsguard_session2=t", NAME).as_deref(),
            Some("wsguard_session2=t")
        );
    }

    proptest! {
        #[test]
        fn never_panics(a in proptest::collection::vec(any::<u8>(), 0..200), b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = session_cookie([a.as_slice(), b.as_slice()].into_iter(), NAME, CookieValues::Strict);
            let _ = session_cookie([a.as_slice(), b.as_slice()].into_iter(), NAME, CookieValues::LegacyJson);
            let _ = strip_cookie(&String::from_utf8_lossy(&a), NAME);
        }
    }
}
