//! Tests of the request target: normal form, refusals, route choice, wsguard's query parameter,
//! and the properties that tie them together.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;
use crate::config::{GatewayConfig, Route, RouteConfig, routes as build_routes};

fn norm(p: &str) -> Result<String, Refusal> {
    normalise(p)
}

#[test]
fn normal_form() {
    let cases = [
        ("/", "/"),
        ("/ws", "/ws"),
        ("/ws/", "/ws/"),
        ("//ws//x//", "/ws/x/"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../../ws", "/ws"),
        ("/pub/../ws", "/ws"),
        ("/pub/%2e%2e/ws", "/ws"),
        ("/pub/.%2E/ws", "/ws"),
        ("/pub/%2E./ws", "/ws"),
        ("/pub//../ws", "/ws"),
        ("/pub/%2e/ws", "/pub/ws"),
        ("/%77%73", "/ws"),
        ("/%7euser/%5F", "/~user/_"),
        ("/a%20b", "/a%20b"),
        ("/a%2bb", "/a%2Bb"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/%F0%9F%94%92", "/%F0%9F%94%92"),
        ("/a|b^c[d]{e}", "/a%7Cb%5Ec%5Bd%5D%7Be%7D"),
        ("/a\"b<c>`", "/a%22b%3Cc%3E%60"),
        ("/x:y@z!$&'()*+,=", "/x:y@z!$&'()*+,="),
        ("/...", "/..."),
        ("/.../x", "/.../x"),
        ("/a..", "/a.."),
    ];
    for (raw, want) in cases {
        assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        assert_eq!(
            norm(want).as_deref(),
            Ok(want),
            "{want} is not its own normal form"
        );
    }
}

#[test]
fn refusals() {
    let ambiguous = [
        "/pub/..;/ws",
        "/ws;jsessionid=1",
        "/pub\\..\\ws",
        "/pub%5c..%5cws",
        "/pub%2f..%2fws",
        "/pub%2F..%2Fws",
        "/ws%3b",
        "/ws%3F",
        "/ws%23",
        "/%252e%252e/ws",
        "/ws%00",
        "/ws%0a",
        "/ws%7f",
        "/pub/%c0%ae%c0%ae/ws",
        "/%e0%80%ae",
        "/%C3",
        "/%C3x",
        "/%A9",
        "/%ff",
        "/%ed%a0%80",
    ];
    for p in ambiguous {
        assert_eq!(norm(p), Err(Refusal::AmbiguousPath), "{p}");
    }
    let bad = [
        "",
        "*",
        "ws",
        "/ws%",
        "/ws%2",
        "/ws%zz",
        "/ws%u002e",
        "/a b",
        "/a\tb",
        "/a\u{1}",
        "/a\u{7f}",
        "/é",
        "/ws#x",
    ];
    for p in bad {
        assert_eq!(norm(p), Err(Refusal::BadTarget), "{p:?}");
    }
}

fn routes(spec: &[(&str, bool)]) -> Vec<Route> {
    let configs: Vec<RouteConfig> = spec
        .iter()
        .map(|(path, public)| RouteConfig {
            public: *public,
            ..RouteConfig::new(*path, "ws://127.0.0.1:1")
        })
        .collect();
    build_routes(&GatewayConfig::default(), &configs).unwrap()
}

fn chosen<'r>(rs: &'r [Route], raw: &str) -> Result<&'r str, Refusal> {
    route(rs, &normalise(raw)?).map(|r| r.path.as_str())
}

#[test]
fn routes_match_at_segment_boundaries_on_the_normal_form() {
    let rs = routes(&[("/pub", true), ("/ws", false), ("/ws/admin", false)]);
    assert_eq!(chosen(&rs, "/ws"), Ok("/ws"));
    assert_eq!(chosen(&rs, "/ws/"), Ok("/ws"));
    assert_eq!(chosen(&rs, "/ws/x"), Ok("/ws"));
    assert_eq!(chosen(&rs, "/ws/admin/x"), Ok("/ws/admin"));
    assert_eq!(chosen(&rs, "/wsx"), Err(Refusal::NoRoute));
    assert_eq!(chosen(&rs, "/pubx"), Err(Refusal::NoRoute));
    assert_eq!(chosen(&rs, "/pub/../ws"), Ok("/ws"));
    assert_eq!(chosen(&rs, "/pub/%2e%2e/ws/admin"), Ok("/ws/admin"));
    assert_eq!(chosen(&rs, "/ws/x/../../pub"), Ok("/pub"));
}

#[test]
fn a_path_another_backend_would_route_elsewhere_is_refused() {
    let rs = routes(&[("/", true), ("/ws", false)]);
    for p in [
        "/WS",
        "/Ws/x",
        "/ws.",
        "/ws./x",
        "/ws%20",
        "/ws%20./x",
        "/W%53",
    ] {
        assert_eq!(chosen(&rs, p), Err(Refusal::AmbiguousPath), "{p}");
    }
    // Folded or not, these reach the same route.
    assert_eq!(chosen(&rs, "/ws"), Ok("/ws"));
    assert_eq!(chosen(&rs, "/wsx"), Ok("/"));
    assert_eq!(chosen(&rs, "/chat"), Ok("/"));
    assert_eq!(chosen(&rs, "/ws/A."), Ok("/ws"));
    // Without a route for the upper-case spelling, it is simply not found.
    let only = routes(&[("/ws", false)]);
    assert_eq!(chosen(&only, "/WS"), Err(Refusal::NoRoute));
}

#[test]
fn routes_are_written_in_normal_form_and_differ_when_folded() {
    let build = |paths: &[&str]| {
        let configs: Vec<RouteConfig> = paths
            .iter()
            .map(|p| RouteConfig::new(*p, "ws://127.0.0.1:1"))
            .collect();
        build_routes(&GatewayConfig::default(), &configs)
    };
    assert!(build(&["/ws/", "/", "/a/b", "/caf%C3%A9"]).is_ok());
    for (paths, needle) in [
        (&["/a/../b"][..], "write it as \"/b\""),
        (&["//ws"][..], "write it as \"/ws\""),
        (&["/%7Eu"][..], "write it as \"/~u\""),
        (&["/caf%c3%a9"][..], "write it as \"/caf%C3%A9\""),
        (&["/ws;x"][..], "holds what no request path may"),
        (
            &["/ws", "/WS"][..],
            "same path to a backend that ignores case",
        ),
        (
            &["/ws", "/ws."][..],
            "same path to a backend that ignores case",
        ),
    ] {
        let e = build(paths).unwrap_err().to_string();
        assert!(e.contains(needle), "{paths:?}: {e}");
    }
}

#[test]
fn wsguards_ticket_parameter() {
    fn t(q: &str) -> Result<(Option<&str>, Option<String>), Refusal> {
        split_query(Some(q))
    }
    assert_eq!(t("ticket=abc"), Ok((Some("abc"), None)));
    assert_eq!(
        t("a=1&ticket=abc&b=2"),
        Ok((Some("abc"), Some("a=1&b=2".into())))
    );
    assert_eq!(t("a=1&&b"), Ok((None, Some("a=1&b".into()))));
    assert_eq!(t("tickets=1"), Ok((None, Some("tickets=1".into()))));
    assert_eq!(t("x=ticket"), Ok((None, Some("x=ticket".into()))));
    for q in [
        "ticket=a&ticket=b",
        "Ticket=a",
        "TICKET=a",
        "%74icket=a",
        "ticket=a&%74icket=b",
        "tick%65t",
        "a=1#frag",
        "a=\u{e9}",
        "a= b",
    ] {
        assert_eq!(t(q), Err(Refusal::BadTarget), "{q}");
    }
    assert_eq!(split_query(None), Ok((None, None)));
}

#[test]
fn target_forms() {
    let uri = |s: &str| s.parse::<http::Uri>().unwrap();
    let u = uri("/a/../ws?ticket=t&x=1");
    let t = parse(&u, "example.com").unwrap();
    assert_eq!(
        (t.path.as_str(), t.ticket.as_deref(), t.query.as_deref()),
        ("/ws", Some("t"), Some("x=1"))
    );
    let u = uri("http://example.com:8080/ws?x=1");
    let t = parse(&u, "EXAMPLE.com:8080").unwrap();
    assert_eq!((t.path.as_str(), t.query.as_deref()), ("/ws", Some("x=1")));
    let u = uri("http://evil.example/ws");
    assert_eq!(parse(&u, "example.com"), Err(Refusal::BadHost));
    let u = uri("ftp://example.com/ws");
    assert_eq!(parse(&u, "example.com"), Err(Refusal::BadTarget));
    let u = uri("*");
    assert_eq!(parse(&u, "example.com"), Err(Refusal::BadTarget));
    let u = uri("example.com:443");
    assert_eq!(parse(&u, "example.com:443"), Err(Refusal::BadTarget));
}

/// How a lenient backend reads a path: every escape decoded, `\` as `/`, `;` parameters cut
/// from each segment (servlet containers), `//` merged, dot segments resolved, case ignored.
fn lenient_backend_view(path: &str) -> String {
    let mut bytes = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| Some(hex_value(*b.get(i + 1)?)? << 4 | hex_value(*b.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(v) => {
                bytes.push(v);
                i += 3;
            }
            None => {
                bytes.push(b[i]);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut out: Vec<String> = Vec::new();
    for seg in text.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_lowercase()),
        }
    }
    format!("/{}", out.join("/"))
}

/// Pieces that attackers combine into targets.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "pub", "ws", "PUB", "Ws", "admin", "..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "\\",
        ";", "..;", "%3b", "%25", "%252e", "%c0%ae", "%C3%A9", "x", "%20", "~", "%7e", "//", "%",
        "%7", "a", "%00", "#", "|", "%77%73",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Any path is refused, or its normal form starts with `/`, is visible ASCII, has no dot
    /// segment, no empty segment but a trailing one, no `\` or `;`, and is its own normal form.
    #[test]
    fn the_normal_form_is_clean_and_stable(
        parts in prop::collection::vec(piece(), 0..12),
    ) {
        let raw = format!("/{}", parts.concat());
        if let Ok(p) = normalise(&raw) {
            prop_assert!(p.starts_with('/'));
            prop_assert!(p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\' && b != b';'));
            let inner = p.strip_prefix('/').unwrap_or(&p);
            let inner = inner.strip_suffix('/').unwrap_or(inner);
            if !inner.is_empty() {
                for seg in inner.split('/') {
                    prop_assert!(!matches!(seg, "" | "." | ".."), "{} -> {}", raw, p);
                }
            }
            prop_assert_eq!(normalise(&p), Ok(p.clone()), "{}", raw);
        }
    }

    /// Nothing that the gateway would send to a public route's upstream is, to a lenient
    /// backend, a path of a private route: the route the gateway chose is the route the backend
    /// serves.
    #[test]
    fn no_path_reaches_a_private_route_through_a_public_one(
        parts in prop::collection::vec(piece(), 0..12),
        query in prop::sample::select(vec!["", "?x=1", "?ticket=t", "?a=%2e%2e"]),
    ) {
        let rs = routes(&[("/pub", true), ("/ws", false), ("/", false)]);
        let raw = format!("/{}{}", parts.concat(), query);
        let Ok(uri) = raw.parse::<http::Uri>() else { return Ok(()) };
        let Ok(target) = parse(&uri, "example.com") else { return Ok(()) };
        let Ok(r) = route(&rs, &target.path) else { return Ok(()) };
        // What goes upstream is the path matched, so the backend reads the same route.
        let upstream =
            r.upstream_target(&r.pool.members()[0].url, &target.path, target.query.as_deref());
        prop_assert!(upstream.starts_with(&target.path));
        let view = lenient_backend_view(&target.path);
        let by_backend = rs.iter().find(|o| is_under(&o.path, &view)).unwrap();
        prop_assert_eq!(&by_backend.path, &r.path, "{} -> {} -> {}", raw, target.path, view);
        if let Some(q) = &target.query {
            prop_assert!(!q.split('&').any(|p| names_ticket(p.split('=').next().unwrap_or(""))));
        }
    }
}
