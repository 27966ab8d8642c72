//! The request target: normalised once, before routing, into the one path that is matched and
//! forwarded.
//!
//! Owns the decision "which path is this request for?". The target's bytes are checked, the
//! percent-encoding of unreserved characters is decoded, empty segments are merged and dot
//! segments removed (RFC 3986 §5.2.4), and whatever a common backend could read differently is
//! refused ([`Refusal::AmbiguousPath`]): encoded `/`, `\`, `;`, `%`, `?`, `#` or controls, a raw
//! `\` or `;`, escaped bytes that are not UTF-8, and a path that a case-insensitive backend (or
//! one that ignores trailing dots and spaces, as Windows does) would give to another route.
//! Routes are matched on the normalised path at segment boundaries, and the upstream receives
//! exactly that path, so what the gateway checked is what the backend reads. Also splits
//! wsguard's own query parameter (`ticket`) from the query that is forwarded.
//!
//! Pure: no I/O, nothing logged; errors carry no request bytes.

use crate::reason::Refusal;

/// A request target, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The normalised path (see [`normalise`]).
    pub path: String,
    /// The query to forward: the client's parameters in their order, minus wsguard's.
    pub query: Option<String>,
    /// The `ticket` parameter's value, if given.
    pub ticket: Option<String>,
}

/// Name of wsguard's one query parameter.
pub const TICKET_PARAM: &str = "ticket";

/// Checks and normalises a request target. `host` is the request's validated `Host`: an
/// absolute-form target (`GET http://host/path`) is taken for its path only, and only when its
/// authority is that host; any other form (`*`, authority-form) is refused.
pub fn parse(uri: &http::Uri, host: &str) -> Result<Target, Refusal> {
    if let Some(scheme) = uri.scheme_str() {
        if !["http", "https", "ws", "wss"]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(scheme))
        {
            return Err(Refusal::BadTarget);
        }
        match uri.authority() {
            Some(a) if a.as_str().eq_ignore_ascii_case(host) => {}
            _ => return Err(Refusal::BadHost),
        }
    }
    let path = normalise(uri.path())?;
    let (ticket, query) = split_query(uri.query())?;
    Ok(Target {
        path,
        query,
        ticket: ticket.map(str::to_owned),
    })
}

/// `ALPHA / DIGIT / "-" / "." / "_" / "~"`: decoded wherever they are escaped.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The rest of RFC 3986's `pchar` but `;`: kept raw.
fn is_plain(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

/// Characters whose escaped form is refused: decoded, they would change the path's structure
/// for a backend that decodes before it splits (`/`, `\`, `;`, `?`, `#`), be decoded twice
/// (`%`), or are controls.
fn is_structural(b: u8) -> bool {
    b < 0x20 || b == 0x7f || matches!(b, b'/' | b'\\' | b';' | b'%' | b'?' | b'#')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

/// Normalises an origin-form path:
///
/// - it starts with `/` and holds only visible ASCII ([`Refusal::BadTarget`] otherwise, as for a
///   `%` not followed by two hex digits);
/// - escaped unreserved characters are decoded (`%2e` is `.`, `%7E` is `~`); other escapes are
///   kept, in upper-case hex; raw characters outside RFC 3986's `pchar` (`"`, `<`, `>`, `[`, `]`,
///   `^`, `` ` ``, `{`, `|`, `}`) are escaped;
/// - empty segments are merged (`//` is `/`), then dot segments removed (`/a/./b/../c` is
///   `/a/c`; `..` never climbs above the root); a trailing `/` is kept;
/// - refused as [`Refusal::AmbiguousPath`]: a raw `\` or `;`, an escaped `/`, `\`, `;`, `%`,
///   `?`, `#` or control, and escaped bytes beyond ASCII that are not UTF-8 (overlong forms
///   such as `%C0%AE` for `.`).
///
/// The result is its own normal form: normalising it again changes nothing.
pub fn normalise(raw: &str) -> Result<String, Refusal> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Refusal::BadTarget);
    }
    let mut out = String::with_capacity(raw.len());
    // Escaped bytes beyond ASCII since the last other character: one UTF-8 sequence or more.
    let mut high = Vec::new();
    let mut trailing_slash = false;
    for segment in raw[1..].split('/') {
        let start = out.len();
        out.push('/');
        let mut i = 0;
        let s = segment.as_bytes();
        while i < s.len() {
            let b = s[i];
            if b == b'%' {
                let (Some(h), Some(l)) = (
                    s.get(i + 1).copied().and_then(hex_value),
                    s.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(Refusal::BadTarget);
                };
                let v = h << 4 | l;
                i += 3;
                if v >= 0x80 {
                    high.push(v);
                    push_escape(&mut out, v);
                    continue;
                }
                check_utf8(&mut high)?;
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else if is_structural(v) {
                    return Err(Refusal::AmbiguousPath);
                } else {
                    push_escape(&mut out, v);
                }
                continue;
            }
            check_utf8(&mut high)?;
            i += 1;
            if is_unreserved(b) || is_plain(b) {
                out.push(char::from(b));
            } else if b == b'\\' || b == b';' {
                return Err(Refusal::AmbiguousPath);
            } else if b.is_ascii_graphic() && b != b'#' && b != b'?' {
                push_escape(&mut out, b);
            } else {
                return Err(Refusal::BadTarget);
            }
        }
        check_utf8(&mut high)?;
        let written = &out[start + 1..];
        trailing_slash = matches!(written, "" | "." | "..");
        if written == ".." {
            // Drop this segment and the one before it (none above the root).
            out.truncate(start);
            let parent = out.rfind('/').unwrap_or(0);
            out.truncate(parent);
        } else if trailing_slash {
            out.truncate(start);
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Refuses escaped bytes beyond ASCII that do not form UTF-8, then forgets them.
fn check_utf8(high: &mut Vec<u8>) -> Result<(), Refusal> {
    if high.is_empty() {
        return Ok(());
    }
    let ok = std::str::from_utf8(high).is_ok();
    high.clear();
    if ok {
        Ok(())
    } else {
        Err(Refusal::AmbiguousPath)
    }
}

/// The path as a case-insensitive backend that also ignores trailing dots and spaces in a
/// segment (Windows, IIS) reads it: ASCII lower case, each segment without its trailing `.`
/// and `%20`, segments left empty dropped. Used only to compare route decisions.
pub fn fold(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let mut s = segment;
        loop {
            if let Some(rest) = s.strip_suffix('.') {
                s = rest;
            } else if s.len() >= 3 && s.as_bytes()[s.len() - 3..].eq_ignore_ascii_case(b"%20") {
                // The last three bytes are ASCII, so this is a character boundary.
                s = &s[..s.len() - 3];
            } else {
                break;
            }
        }
        if !s.is_empty() {
            out.push('/');
            out.extend(s.chars().map(|c| c.to_ascii_lowercase()));
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether `path` is `prefix` or lies under it at a segment boundary (`/ws` covers `/ws` and
/// `/ws/x`, never `/wsx`; `/` covers everything).
pub fn is_under(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// What routing needs of a route: its path prefix in normal form, and that path [`fold`]ed.
/// Routes are given longest prefix first.
pub trait RoutePath {
    /// The prefix, in normal form.
    fn path(&self) -> &str;
    /// The prefix as [`fold`] reads it.
    fn folded_path(&self) -> &str;
}

/// The route for a normalised path: the longest route prefix it lies under. Refused as
/// [`Refusal::AmbiguousPath`] when the same path, [`fold`]ed, lies under a different longest
/// route (`/WS` with a public `/` and a private `/ws`: a case-insensitive backend would serve
/// the private endpoint).
pub fn route<'r, R: RoutePath>(routes: &'r [R], path: &str) -> Result<&'r R, Refusal> {
    // Longest first (config::routes sorts them).
    let chosen = routes
        .iter()
        .find(|r| is_under(r.path(), path))
        .ok_or(Refusal::NoRoute)?;
    let folded = fold(path);
    let by_fold = routes
        .iter()
        .filter(|r| is_under(r.folded_path(), &folded))
        .max_by_key(|r| r.folded_path().len());
    match by_fold {
        Some(r) if std::ptr::eq(r, chosen) => Ok(chosen),
        _ => Err(Refusal::AmbiguousPath),
    }
}

/// Splits a query into wsguard's `ticket` and the query to forward. The query must be visible
/// ASCII without `#` ([`Refusal::BadTarget`]). A parameter whose name is `ticket` in any spelling
/// (`Ticket`, `%74icket`, as a backend might decode it) is never forwarded; it is redeemed only
/// when it is given once, spelt `ticket`, and a second one or another spelling is refused
/// ([`Refusal::BadTarget`]): the client meant one ticket, and the gateway takes no guess.
pub fn split_query(query: Option<&str>) -> Result<(Option<&str>, Option<String>), Refusal> {
    let Some(q) = query else {
        return Ok((None, None));
    };
    if !q.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(Refusal::BadTarget);
    }
    let mut ticket = None;
    let mut seen_ticket = false;
    let mut rest = String::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if names_ticket(name) {
            if seen_ticket || name != TICKET_PARAM {
                return Err(Refusal::BadTarget);
            }
            seen_ticket = true;
            ticket = Some(value);
            continue;
        }
        if !rest.is_empty() {
            rest.push('&');
        }
        rest.push_str(pair);
    }
    Ok((ticket, (!rest.is_empty()).then_some(rest)))
}

/// Whether a parameter name, percent-decoded (`+` as a space), is `ticket` in any case.
fn names_ticket(name: &str) -> bool {
    let b = name.as_bytes();
    let mut decoded = Vec::with_capacity(TICKET_PARAM.len());
    let mut i = 0;
    while i < b.len() {
        if decoded.len() > TICKET_PARAM.len() {
            return false;
        }
        let escaped = (b[i] == b'%')
            .then(|| Some(hex_value(*b.get(i + 1)?)? << 4 | hex_value(*b.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(v) => {
                decoded.push(v);
                i += 3;
            }
            None => {
                decoded.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
    }
    decoded.eq_ignore_ascii_case(TICKET_PARAM.as_bytes())
}

#[cfg(test)]
mod tests;
