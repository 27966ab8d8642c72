//! Tests of what the upstream is told: the allowlist, the rebuilt headers, identity (all or
//! nothing, any data that can be issued), and the client address from trusted and untrusted
//! peers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use wsguard_token::{SessionData, SessionId, UserId};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn request(headers: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in headers {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}

fn defaults() -> Forwarding {
    Forwarding::new(
        &DEFAULT_FORWARD_HEADERS.map(String::from),
        &ClientHeadersConfig::default(),
        false,
    )
    .unwrap()
}

fn sent(out: &HeadLines, name: &str) -> Vec<String> {
    out.values(name).map(str::to_owned).collect()
}

struct Case<'a> {
    peer: &'a str,
    trusted: &'a [&'a str],
    tls: bool,
}

fn forward(f: &Forwarding, client: &HeaderMap, c: &Case<'_>) -> HeadLines {
    let trusted: Vec<IpAddr> = c.trusted.iter().map(|s| ip(s)).collect();
    let chain = ClientChain::new(
        ip(c.peer),
        client
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes()),
        &trusted,
    );
    f.headers(
        client,
        &Decided {
            identity: None,
            origin: Some(HeaderValue::from_static("https://app.example.com")),
            protocols: &["chat".into(), "mqtt".into()],
            chain: &chain,
            trusted: &trusted,
            host: "ws.example.com",
            tls: c.tls,
            cookie_name: "wsguard_session",
        },
    )
    .unwrap()
}

/// Everything a client might send to fool a backend, and a few headers an app needs.
fn hostile() -> HeaderMap {
    request(&[
        ("user-agent", "test/1"),
        ("accept-language", "fr"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7, 8.8.8.8"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("true-client-ip", "6.6.6.6"),
        ("x-client-ip", "6.6.6.6"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-wsguard-user", "admin"),
        ("X-WSGUARD-DATA", "{\"role\":\"admin\"}"),
        ("x-app-thing", "1"),
        ("authorization", "Bearer x"),
        ("origin", "https://APP.example.com:443"),
        ("sec-websocket-protocol", "chat,,mqtt"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("cookie", "a=1; wsguard_session=secret; b=2"),
        ("cookie", "wsguard_session=secret"),
    ])
}

#[test]
fn only_the_allowlist_passes_and_the_rest_is_rebuilt() {
    let out = forward(
        &defaults(),
        &hostile(),
        &Case {
            peer: "192.0.2.7",
            trusted: &[],
            tls: false,
        },
    );
    let mut names: Vec<&str> = out.iter().map(|(n, _)| n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        [
            "accept-language",
            "cookie",
            "forwarded",
            "origin",
            "sec-websocket-protocol",
            "user-agent",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
        ]
    );
    assert_eq!(sent(&out, "user-agent"), ["test/1"]);
    assert_eq!(sent(&out, "origin"), ["https://app.example.com"]);
    assert_eq!(sent(&out, "sec-websocket-protocol"), ["chat, mqtt"]);
    assert_eq!(sent(&out, "cookie"), ["a=1; b=2"]);
    assert_eq!(sent(&out, "x-forwarded-for"), ["192.0.2.7"]);
    assert_eq!(sent(&out, "x-forwarded-proto"), ["http"]);
    assert_eq!(sent(&out, "x-forwarded-host"), ["ws.example.com"]);
    assert_eq!(
        sent(&out, "forwarded"),
        ["for=192.0.2.7;host=\"ws.example.com\";proto=http"]
    );
}

#[test]
fn a_trusted_proxys_chain_is_extended_from_the_client_it_names() {
    let f = defaults();
    let trusted = ["10.0.0.1", "10.0.0.2"];
    // The client (1.2.3.4) reached 10.0.0.2, which reached 10.0.0.1, our peer. Whatever the
    // client wrote itself (6.6.6.6) is left of it and is dropped.
    let client = request(&[
        ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
        ("x-forwarded-for", "10.0.0.2"),
        ("x-forwarded-proto", "HTTPS"),
        ("x-forwarded-host", "app.example.com"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
    ]);
    let c = Case {
        peer: "10.0.0.1",
        trusted: &trusted,
        tls: false,
    };
    let out = forward(&f, &client, &c);
    assert_eq!(
        sent(&out, "x-forwarded-for"),
        ["1.2.3.4, 10.0.0.2, 10.0.0.1"]
    );
    assert_eq!(sent(&out, "x-forwarded-proto"), ["https"]);
    assert_eq!(sent(&out, "x-forwarded-host"), ["app.example.com"]);
    assert_eq!(
        sent(&out, "forwarded"),
        ["for=1.2.3.4;host=\"app.example.com\";proto=https, for=10.0.0.2, for=10.0.0.1"]
    );
    assert!(out.values("x-real-ip").next().is_none());
    // The same headers from an untrusted peer are all ignored.
    let out = forward(
        &f,
        &client,
        &Case {
            peer: "192.0.2.9",
            trusted: &trusted,
            tls: true,
        },
    );
    assert_eq!(sent(&out, "x-forwarded-for"), ["192.0.2.9"]);
    assert_eq!(sent(&out, "x-forwarded-proto"), ["https"]);
    assert_eq!(sent(&out, "x-forwarded-host"), ["ws.example.com"]);
}

#[test]
fn malformed_or_repeated_proxy_headers_fall_back_to_what_the_gateway_knows() {
    let f = defaults();
    let c = Case {
        peer: "10.0.0.1",
        trusted: &["10.0.0.1"],
        tls: true,
    };
    for (headers, xff, proto, host) in [
        (
            &[("x-forwarded-for", "1.2.3.4, garbage")][..],
            "10.0.0.1",
            "https",
            "ws.example.com",
        ),
        (
            &[
                ("x-forwarded-for", "1.2.3.4;x"),
                ("x-forwarded-proto", "gopher"),
            ][..],
            "10.0.0.1",
            "https",
            "ws.example.com",
        ),
        (
            &[
                ("x-forwarded-for", ""),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-proto", "https"),
            ][..],
            "10.0.0.1",
            "https",
            "ws.example.com",
        ),
        (
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-host", "evil.example/x"),
            ][..],
            "1.2.3.4, 10.0.0.1",
            "https",
            "ws.example.com",
        ),
        (
            &[
                ("x-forwarded-host", "a.example"),
                ("x-forwarded-host", "b.example"),
            ][..],
            "10.0.0.1",
            "https",
            "ws.example.com",
        ),
        (
            &[("x-forwarded-for", " 2001:DB8::1 , ::ffff:10.0.0.1")][..],
            "2001:db8::1, 10.0.0.1, 10.0.0.1",
            "https",
            "ws.example.com",
        ),
    ] {
        let out = forward(&f, &request(headers), &c);
        assert_eq!(sent(&out, "x-forwarded-for"), [xff], "{headers:?}");
        assert_eq!(sent(&out, "x-forwarded-proto"), [proto], "{headers:?}");
        assert_eq!(sent(&out, "x-forwarded-host"), [host], "{headers:?}");
    }
}

#[test]
fn ipv6_clients_in_every_header() {
    let f = Forwarding::new(
        &[],
        &ClientHeadersConfig {
            real_ip_header: "x-real-ip".into(),
            ..ClientHeadersConfig::default()
        },
        false,
    )
    .unwrap();
    let out = forward(
        &f,
        &request(&[("x-forwarded-for", "2001:db8::7"), ("user-agent", "u")]),
        &Case {
            peer: "::1",
            trusted: &["::1"],
            tls: false,
        },
    );
    assert_eq!(sent(&out, "x-forwarded-for"), ["2001:db8::7, ::1"]);
    assert_eq!(sent(&out, "x-real-ip"), ["2001:db8::7"]);
    assert_eq!(
        sent(&out, "forwarded"),
        ["for=\"[2001:db8::7]\";host=\"ws.example.com\";proto=http, for=\"[::1]\""]
    );
    assert!(out.values("user-agent").next().is_none(), "empty allowlist");
}

#[test]
fn names_are_configurable_and_can_be_turned_off() {
    let f = Forwarding::new(
        &["x-app-thing".into(), "Authorization".into()],
        &ClientHeadersConfig {
            for_header: "X-Client-Chain".into(),
            proto_header: String::new(),
            host_header: String::new(),
            forwarded: false,
            real_ip_header: "x-real-ip".into(),
        },
        true,
    )
    .unwrap();
    let out = forward(
        &f,
        &hostile(),
        &Case {
            peer: "192.0.2.7",
            trusted: &[],
            tls: false,
        },
    );
    assert_eq!(sent(&out, "x-client-chain"), ["192.0.2.7"]);
    assert_eq!(sent(&out, "x-real-ip"), ["192.0.2.7"]);
    assert_eq!(sent(&out, "x-app-thing"), ["1"]);
    assert_eq!(sent(&out, "authorization"), ["Bearer x"]);
    for gone in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
    ] {
        assert!(out.values(gone).next().is_none(), "{gone}");
    }
    assert_eq!(
        sent(&out, "cookie"),
        ["a=1; wsguard_session=secret; b=2", "wsguard_session=secret"],
        "forward_session_cookie"
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let err = |pass: &[&str], client: ClientHeadersConfig| {
        Forwarding::new(
            &pass.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &client,
            false,
        )
        .unwrap_err()
        .to_string()
    };
    let d = ClientHeadersConfig::default;
    for (pass, needle) in [
        (
            &["x-forwarded-for"][..],
            "gateway.forward_headers[0]: x-forwarded-for is written",
        ),
        (
            &["a", "X-Real-IP"][..],
            "gateway.forward_headers[1]: x-real-ip",
        ),
        (&["Forwarded"][..], "forward_headers[0]: forwarded"),
        (
            &["x-wsguard-user"][..],
            "forward_headers[0]: x-wsguard-user",
        ),
        (&["cookie"][..], "forward_headers[0]: cookie"),
        (
            &["sec-websocket-key"][..],
            "forward_headers[0]: sec-websocket-key",
        ),
        (
            &["x-original-url"][..],
            "forward_headers[0]: x-original-url",
        ),
        (
            &["bad name"][..],
            "forward_headers[0]: \"bad name\" is not a header name",
        ),
        (&["a", "A"][..], "forward_headers[1]: a is listed twice"),
    ] {
        let e = err(pass, d());
        assert!(e.contains(needle), "{pass:?}: {e}");
    }
    let e = err(
        &["x-client"],
        ClientHeadersConfig {
            for_header: "x-client".into(),
            proto_header: "x-forwarded-for".into(),
            host_header: "host".into(),
            real_ip_header: "x-forwarded-for".into(),
            ..d()
        },
    );
    for needle in [
        "client_headers.for_header: x-client is also in gateway.forward_headers",
        "client_headers.host_header: host is written by wsguard",
        "client_headers.real_ip_header: x-forwarded-for is already another client header",
    ] {
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    let trusted = [ip("127.0.0.1"), ip("10.0.0.9")];
    let chain = |peer: &str, xff: &[&str]| {
        ClientChain::new(ip(peer), xff.iter().map(|v| v.as_bytes()), &trusted)
    };
    let client = |peer: &str, xff: &[&str]| chain(peer, xff).client();
    assert_eq!(
        client("192.0.2.1", &["1.2.3.4"]),
        ip("192.0.2.1"),
        "untrusted peer"
    );
    assert_eq!(client("127.0.0.1", &["1.2.3.4"]), ip("1.2.3.4"));
    assert_eq!(
        chain("127.0.0.1", &["6.6.6.6, 1.2.3.4, 10.0.0.9"]).hops(),
        [ip("1.2.3.4"), ip("10.0.0.9"), ip("127.0.0.1")],
        "right-most untrusted"
    );
    assert_eq!(client("127.0.0.1", &["1.2.3.4, garbage"]), ip("127.0.0.1"));
    assert_eq!(client("127.0.0.1", &[]), ip("127.0.0.1"));
    // A dual-stack listener reports a trusted IPv4 proxy IPv4-mapped; the client comes back as
    // IPv4 too.
    assert_eq!(
        client("::ffff:10.0.0.9", &["::ffff:1.2.3.4"]),
        ip("1.2.3.4")
    );
    assert_eq!(client("127.0.0.1", &["6.6.6.6", "1.2.3.4"]), ip("1.2.3.4"));
    assert!(is_trusted(ip("::ffff:127.0.0.1"), &trusted));
    assert!(!is_trusted(ip("::ffff:127.0.0.2"), &trusted));
    // A chain of trusted proxies only: the left-most is the client.
    assert_eq!(
        chain("127.0.0.1", &["10.0.0.9, 127.0.0.1"]).hops(),
        [ip("10.0.0.9"), ip("127.0.0.1"), ip("127.0.0.1")]
    );
    // Bounded: a trusted peer's thousand entries are read no further than 64 from the right.
    let long = vec!["10.0.0.9"; 1000].join(",");
    assert_eq!(chain("127.0.0.1", &[&long]).hops().len(), MAX_CHAIN + 1);
}

/// A verified session's parts: a random id, the user, the data (the gateway takes them from
/// the `Session` that `wsguard-session` verified).
struct Parts {
    user: UserId,
    session: SessionId,
    data: SessionData,
}

fn session(uid: &str, data: &str) -> Parts {
    Parts {
        user: UserId::parse(uid).unwrap(),
        session: SessionId::generate(),
        data: SessionData::parse(data).unwrap(),
    }
}

fn identity_of(s: &Parts) -> Result<HeadLines, Refusal> {
    let chain = ClientChain::new(ip("192.0.2.1"), std::iter::empty(), &[]);
    defaults().headers(
        &hostile(),
        &Decided {
            identity: Some(Identity {
                user: &s.user,
                session: &s.session,
                data: &s.data,
            }),
            origin: None,
            protocols: &[],
            chain: &chain,
            trusted: &[],
            host: "h",
            tls: false,
            cookie_name: "wsguard_session",
        },
    )
}

#[test]
fn identity_is_whole_or_refused() {
    let s = session(
        "alice@example.com",
        "{\"readonly\":true,\"note\":\"a\u{7f}b\u{e9}\"}",
    );
    let out = identity_of(&s).unwrap();
    assert_eq!(sent(&out, "x-wsguard-user"), ["alice@example.com"]);
    assert_eq!(sent(&out, "x-wsguard-session"), [s.session.as_str()]);
    let data = sent(&out, "x-wsguard-data");
    assert_eq!(data, [r#"{"readonly":true,"note":"a\u007fb\u00e9"}"#]);
    let back: serde_json::Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(back, s.data.to_value());
    // Data that a token may carry but no header can: refused, nothing forwarded in part.
    let long = format!("{{\"a\":\"{}\"}}", "\u{7f}".repeat(1400));
    let s = session("bob", &long);
    assert_eq!(identity_of(&s), Err(Refusal::IdentityUnforwardable));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any user id and any session data that can be issued reach the upstream as one header
    /// each, the data parsing back to the same JSON value.
    #[test]
    fn any_issuable_identity_arrives_whole(
        uid in "[!-~]{1,128}",
        note in "\\PC{0,40}|[\\u{0}-\\u{ff}]{0,40}",
        flag in any::<bool>(),
    ) {
        let data = serde_json::json!({ "note": note, "readonly": flag }).to_string();
        prop_assume!(SessionData::parse_for_issue(&data).is_ok());
        let s = session(&uid, &data);
        let out = identity_of(&s).unwrap();
        prop_assert_eq!(sent(&out, "x-wsguard-user"), [uid]);
        let got = sent(&out, "x-wsguard-data");
        prop_assert_eq!(got.len(), 1);
        let back: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        let want: serde_json::Value = serde_json::from_str(&data).unwrap();
        prop_assert_eq!(back, want);
    }
}

proptest! {
    /// Addresses are written exactly as `Display` writes them.
    #[test]
    fn ips_are_written_as_display_writes_them(octets in any::<[u8; 4]>(), v6 in any::<[u16; 8]>()) {
        for ip in [IpAddr::from(octets), IpAddr::from(v6)] {
            let mut buf = Vec::new();
            push_ip(&mut buf, &ip);
            prop_assert_eq!(String::from_utf8(buf).unwrap(), ip.to_string());
        }
    }
}
