//! The handshake's edges, attacked through real sockets: what reaches the upstream (a recording
//! upstream shows the target and every header it received) for path tricks, forged client
//! addresses, identity bytes, framing and request rules. Each class is tried in many variants,
//! and once as a property over generated targets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    clippy::collapsible_match
)] // tests: a panic is a failure report

mod common;

use common::*;
use proptest::prelude::*;

const WITH_ORIGIN: &str = "Origin: https://app.example.com\r\n";

impl Harness {
    /// Sends raw request bytes; returns (status, the upstream targets recorded meanwhile).
    async fn exchange(&self, request: &str) -> (u16, Vec<String>) {
        let before = self.rec.0.lock().unwrap().len();
        let reply = self.http.raw(self.running.public_addr, request).await;
        let seen = self.rec.0.lock().unwrap()[before..]
            .iter()
            .map(|s| s.uri.clone())
            .collect();
        (reply.status, seen)
    }

    /// An unauthenticated upgrade of `target` from an allowed origin.
    async fn anonymous(&self, target: &str) -> (u16, Vec<String>) {
        self.exchange(&self.upgrade_request(target, WITH_ORIGIN))
            .await
    }

    async fn refusals(&self, reason: &str) -> bool {
        let body = self.metrics().await.body;
        body.lines().any(|l| {
            l.starts_with(&format!(
                "wsguard_handshakes_total{{outcome=\"refused\",reason=\"{reason}\"}}"
            ))
        })
    }
}

/// The harness has a public route `/public` (upstream base `/pub`) and private routes under
/// `/` (everything else). No trick may take an anonymous client anywhere but `/pub/public...`.
#[tokio::test]
async fn no_path_trick_reaches_a_private_route_anonymously() {
    let h = harness().await;
    let cases: &[(&str, u16, Option<&str>)] = &[
        // Normalised onto a private route: authentication is asked for.
        ("/public/../json", 401, None),
        ("/public/%2e%2e/json", 401, None),
        ("/public/%2E%2e/json", 401, None),
        ("/public/.%2e/", 401, None),
        ("/public/%2e./text", 401, None),
        ("/public//../json", 401, None),
        ("/public/x/../../json", 401, None),
        ("/publicx", 401, None),
        ("/%70ublic/../json", 401, None),
        // What a backend would read otherwise is refused.
        ("/public/..;/json", 400, None),
        ("/public;x/../json", 400, None),
        ("/public/..%3b/json", 400, None),
        ("/public%2f..%2fjson", 400, None),
        ("/public%2F..%2Fjson", 400, None),
        ("/public\\..\\json", 400, None),
        ("/public/%5c..%5cjson", 400, None),
        ("/public/%252e%252e/json", 400, None),
        ("/public/%c0%ae%c0%ae/json", 400, None),
        ("/public/%00/../json", 400, None),
        ("/PUBLIC", 400, None),
        ("/Public/x", 400, None),
        ("/public.", 400, None),
        ("/public%20", 400, None),
        ("/public/%", 400, None),
        ("/public/%zz", 400, None),
        // Public after normalisation: forwarded as the normal form, under the route's base.
        ("/public", 101, Some("/pub/public")),
        ("/public/", 101, Some("/pub/public/")),
        ("/public/a/./b/../c", 101, Some("/pub/public/a/c")),
        ("/json/../public/x", 101, Some("/pub/public/x")),
        ("//public//x", 101, Some("/pub/public/x")),
        ("/public/%7e%41%2d", 101, Some("/pub/public/~A-")),
        ("/public/a%2bb%c3%a9", 101, Some("/pub/public/a%2Bb%C3%A9")),
        ("/public/a|b", 101, Some("/pub/public/a%7Cb")),
        (
            "/public/x?ticket=abc&y=%2e%2e&z",
            101,
            Some("/pub/public/x?y=%2e%2e&z"),
        ),
        ("http://x/public/a?b=1", 101, Some("/pub/public/a?b=1")),
        ("ws://X/public/a", 101, Some("/pub/public/a")),
    ];
    for (target, status, upstream) in cases {
        let (got, seen) = h.anonymous(target).await;
        assert_eq!(got, *status, "{target}");
        match upstream {
            Some(want) => assert_eq!(seen, [*want], "{target}"),
            None => assert!(seen.is_empty(), "{target} reached the upstream: {seen:?}"),
        }
    }
    assert!(h.refusals("ambiguous_path").await);
    assert!(h.refusals("bad_target").await);
}

#[tokio::test]
async fn an_authenticated_client_gets_the_normalised_path_too() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = format!("Cookie: {COOKIE}={token}\r\n{WITH_ORIGIN}");
    for (target, want) in [
        ("/json/%2e%2e/text/a", "/text/a"),
        ("/public/../chat/./room", "/chat/room"),
        ("/chat/x/..", "/chat/"),
        ("/a/%7Eb", "/a/~b"),
    ] {
        let (status, seen) = h.exchange(&h.upgrade_request(target, &cookie)).await;
        assert_eq!((status, seen), (101, vec![want.to_owned()]), "{target}");
    }
}

#[tokio::test]
async fn targets_that_no_request_may_hold_are_refused_before_anything_else() {
    let h = harness().await;
    for target in ["/public/\u{e9}", "/public/a\u{1}", "*", "example.com:443"] {
        let (status, seen) = h.anonymous(target).await;
        assert_eq!(status, 400, "{target:?}");
        assert!(seen.is_empty());
    }
    // A foreign host in an absolute-form target is not the request's host.
    let (status, seen) = h.anonymous("http://evil.example/public").await;
    assert_eq!((status, seen.len()), (400, 0));
    assert!(h.refusals("bad_host").await);
    // Counted as a bad request, not an upstream failure.
    assert!(!h.refusals("upstream_failed").await);
}

/// The lenient reading of a path (every escape decoded, `\` as `/`, `;` parameters cut, `//`
/// merged, dot segments resolved, case ignored) that no forwarded path may escape.
fn lenient(path: &str) -> String {
    let mut bytes = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (b[i] == b'%')
            .then(|| Some(hex(*b.get(i + 1)?)? * 16 + hex(*b.get(i + 2)?)?))
            .flatten()
        {
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
    for seg in text.split('?').next().unwrap_or("").split('/') {
        match seg.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_lowercase()),
        }
    }
    format!("/{}", out.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// For any target sent without credentials: refused, or forwarded to the public route's
    /// upstream with a path that even a lenient backend reads as that route's.
    #[test]
    fn no_generated_target_reaches_a_private_upstream_anonymously(
        start in prop::sample::select(vec!["/public/", "/public", "/", "/json/", "/public/x/"]),
        parts in prop::collection::vec(prop::sample::select(vec![
            "a/", "b", "/", "/", "..", "..", ".", "%2e", "%2E", "public/", "json", "x/", "~",
            "a-b", "%41", "%7E", "%C3%A9",
            "/", "public", "json", "PUBLIC", "..", ".", "%2e", "%2E", "%2f", "%5c", "\\", ";",
            "..;", "%3b", "%25", "%c0%ae", "x", "%20", "%7e", "//", "%70ublic", "?ticket=t&",
            "?a=1", "%",
        ]), 0..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = HARNESS.get_or_init(harness_blocking);
            let target = format!("{start}{}", parts.concat());
            let (status, seen) = h.anonymous(&target).await;
            if status == 101 {
                prop_assert_eq!(seen.len(), 1);
                let upstream = &seen[0];
                let view = lenient(upstream);
                prop_assert!(
                    view == "/pub/public" || view.starts_with("/pub/public/"),
                    "{} -> {} ({})", target, upstream, view
                );
                let query = upstream.split_once('?').map_or("", |(_, q)| q);
                for pair in query.split('&') {
                    let name = lenient(pair.split('=').next().unwrap_or(""));
                    prop_assert!(name != "/ticket", "{} -> {}", target, upstream);
                }
            } else {
                prop_assert!(seen.is_empty(), "{} got {} and reached {:?}", target, status, seen);
            }
            Ok(())
        })?;
    }
}

/// One gateway for every case of the property above, on a runtime of its own that outlives
/// each case's.
static HARNESS: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();

fn harness_blocking() -> Harness {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send(harness().await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

#[tokio::test]
async fn session_data_reaches_the_upstream_whole_or_not_at_all() {
    let h = harness().await;
    // Issued through the admin API: the same JSON value arrives, in visible ASCII.
    for data in [
        "{\"readonly\":true,\"note\":\"a\u{7f}b\"}",
        "{\"readonly\":true,\"note\":\"\\u0001\\u001f\\n\"}",
        "{\"name\":\"Zo\u{eb} \u{6771}\u{4eac} \u{1f512}\",\"sep\":\"\u{2028}\u{85}\"}",
        "{\"q\":\"\\\"\\\\\",\"nested\":{\"readonly\":[true,null,1.5]}}",
    ] {
        let body = serde_json::json!({
            "user": "alice",
            "data": serde_json::from_str::<serde_json::Value>(data).unwrap(),
        })
        .to_string();
        let reply = h.admin("POST", "/sessions", &body).await;
        assert_eq!(reply.status, 201, "{data}: {}", reply.body);
        let token = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let ws = h.connect_as("/", &token).await;
        drop(ws);
        let got = h.rec.header("x-wsguard-data");
        assert_eq!(got.len(), 1, "{data}");
        assert!(
            got[0].bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{}",
            got[0]
        );
        let back: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        let want: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(back, want);
        assert_eq!(h.rec.header("x-wsguard-user"), ["alice"]);
        assert_eq!(h.rec.header("x-wsguard-session").len(), 1);
    }
    // What can never be carried is refused at issue, with the reason.
    let long = format!(
        "{{\"user\":\"bob\",\"data\":{{\"a\":\"{}\"}}}}",
        "\u{7f}".repeat(1400)
    );
    let reply = h.admin("POST", "/sessions", &long).await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("too long to forward"), "{}", reply.body);
    // A token that carries it anyway (minted without that check) is refused at the upgrade,
    // before the upstream is dialled: never a user without their data.
    let issued = h
        .sessions
        .issue(
            UserId::parse("bob").unwrap(),
            SessionData::parse(&format!("{{\"a\":\"{}\"}}", "\u{7f}".repeat(1400))).unwrap(),
            now(),
        )
        .await
        .unwrap();
    let cookie = format!("Cookie: {COOKIE}={}\r\n{WITH_ORIGIN}", issued.token);
    let (status, seen) = h.exchange(&h.upgrade_request("/", &cookie)).await;
    assert_eq!((status, seen.len()), (500, 0));
    assert!(h.refusals("identity_unforwardable").await);
}

#[tokio::test]
async fn unusual_user_ids_arrive_as_they_were_issued() {
    let h = harness().await;
    for uid in [
        "a",
        "alice@example.com",
        "x\"y",
        "a,b;c=d",
        "~!#$%&'*+-.^_`|",
        "日本",
    ] {
        let body = serde_json::json!({ "user": uid }).to_string();
        let reply = h.admin("POST", "/sessions", &body).await;
        if !uid.is_ascii() {
            assert_eq!(reply.status, 400, "{uid}: {}", reply.body);
            continue;
        }
        assert_eq!(reply.status, 201, "{uid}: {}", reply.body);
        let token = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        drop(h.connect_as("/", &token).await);
        assert_eq!(h.rec.header("x-wsguard-user"), [uid]);
    }
}

/// Headers a client may send to pass for someone else, or to re-route the request.
const SPOOFS: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7, 8.8.8.8\r\n\
     X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https;host=evil\r\n\
     X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\n\
     True-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\n\
     X-Original-URL: /json\r\nX-Rewrite-URL: /json\r\nX-Custom: 1\r\n";

#[tokio::test]
async fn an_untrusted_client_cannot_forge_its_address() {
    let h = harness().await;
    let (status, _) = h
        .exchange(&h.upgrade_request("/public", &format!("{WITH_ORIGIN}{SPOOFS}")))
        .await;
    assert_eq!(status, 101);
    assert_eq!(h.rec.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(h.rec.header("x-forwarded-proto"), ["http"]);
    assert_eq!(h.rec.header("x-forwarded-host"), ["x"]);
    assert_eq!(
        h.rec.header("forwarded"),
        ["for=127.0.0.1;host=\"x\";proto=http"]
    );
    for gone in [
        "x-real-ip",
        "x-forwarded-port",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-custom",
    ] {
        assert!(h.rec.header(gone).is_empty(), "{gone} reached the upstream");
    }
}

#[tokio::test]
async fn a_trusted_proxys_chain_is_extended_and_the_rest_dropped() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        s.gateway.client_headers.real_ip_header = "x-real-ip".into();
    })
    .await;
    let via = |headers: &str| h.upgrade_request("/public", &format!("{WITH_ORIGIN}{headers}"));
    // Everything left of the client the proxy names is the client's own writing: dropped.
    h.exchange(&via(SPOOFS)).await;
    assert_eq!(h.rec.header("x-forwarded-for"), ["8.8.8.8, 127.0.0.1"]);
    assert_eq!(h.rec.header("x-real-ip"), ["8.8.8.8"]);
    assert_eq!(h.rec.header("x-forwarded-proto"), ["https"]);
    assert_eq!(h.rec.header("x-forwarded-host"), ["evil.example"]);
    assert_eq!(
        h.rec.header("forwarded"),
        ["for=8.8.8.8;host=\"evil.example\";proto=https, for=127.0.0.1"]
    );
    assert!(h.rec.header("x-original-url").is_empty());
    // Malformed or repeated proxy headers: the gateway's own facts.
    h.exchange(&via(
        "X-Forwarded-For: 1.2.3.4, not-an-ip\r\nX-Forwarded-Proto: gopher\r\n\
         X-Forwarded-Host: a.example\r\nX-Forwarded-Host: b.example\r\n",
    ))
    .await;
    assert_eq!(h.rec.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(h.rec.header("x-forwarded-proto"), ["http"]);
    assert_eq!(h.rec.header("x-forwarded-host"), ["x"]);
    // An IPv6 client behind the proxy.
    h.exchange(&via("X-Forwarded-For: 2001:DB8::7\r\n")).await;
    assert_eq!(h.rec.header("x-forwarded-for"), ["2001:db8::7, 127.0.0.1"]);
    assert_eq!(
        h.rec.header("forwarded"),
        ["for=\"[2001:db8::7]\";host=\"x\";proto=http, for=127.0.0.1"]
    );
}

#[tokio::test]
async fn ipv6_peers_trusted_or_not() {
    for trusted in [false, true] {
        let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
            s.gateway.listen = "[::1]:0".parse().unwrap();
            if trusted {
                s.gateway.trusted_proxies = vec!["::1".parse().unwrap()];
            }
        })
        .await;
        let (status, _) = h
            .exchange(&h.upgrade_request(
                "/public",
                &format!("{WITH_ORIGIN}X-Forwarded-For: 2001:db8::9\r\n"),
            ))
            .await;
        assert_eq!(status, 101);
        let (xff, fwd) = if trusted {
            (
                "2001:db8::9, ::1",
                "for=\"[2001:db8::9]\";host=\"x\";proto=http, for=\"[::1]\"",
            )
        } else {
            ("::1", "for=\"[::1]\";host=\"x\";proto=http")
        };
        assert_eq!(h.rec.header("x-forwarded-for"), [xff]);
        assert_eq!(h.rec.header("forwarded"), [fwd]);
    }
}

#[tokio::test]
async fn client_header_names_are_configurable() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.client_headers.for_header = "X-Client-Chain".into();
        s.gateway.client_headers.forwarded = false;
        s.gateway.client_headers.host_header = String::new();
        s.gateway.forward_headers = vec!["x-custom".into()];
    })
    .await;
    h.exchange(&h.upgrade_request("/public", &format!("{WITH_ORIGIN}{SPOOFS}")))
        .await;
    assert_eq!(h.rec.header("x-client-chain"), ["127.0.0.1"]);
    assert_eq!(h.rec.header("x-custom"), ["1"]);
    for gone in ["x-forwarded-for", "forwarded", "x-forwarded-host"] {
        assert!(h.rec.header(gone).is_empty(), "{gone}");
    }
}

/// The rest of a request that a request line and headers are built around.
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Origin: https://app.example.com\r\n";

#[tokio::test]
async fn host_must_be_one_valid_host() {
    let h = harness().await;
    for hosts in [
        "",
        "Host: a\r\nHost: a\r\n",
        "Host: a\r\nHost: b\r\n",
        "Host: \r\n",
        "Host: a b\r\n",
        "Host: user@a\r\n",
        "Host: a:99999\r\n",
        "Host: a/b\r\n",
        "Host: [::1\r\n",
    ] {
        let (status, seen) = h
            .exchange(&format!("GET /public HTTP/1.1\r\n{hosts}{UPGRADE}\r\n"))
            .await;
        assert_eq!((status, seen.len()), (400, 0), "{hosts:?}");
    }
    for host in ["a", "A.example:8080", "[::1]:80", "127.0.0.1"] {
        let (status, _) = h
            .exchange(&format!(
                "GET /public HTTP/1.1\r\nHost: {host}\r\n{UPGRADE}\r\n"
            ))
            .await;
        assert_eq!(status, 101, "{host}");
    }
    assert!(h.refusals("bad_host").await);
}

#[tokio::test]
async fn a_body_or_ambiguous_framing_is_refused_unread_and_the_connection_closed() {
    let h = harness().await;
    for (framing, reason) in [
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            "request_body",
        ),
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "request_body",
        ),
        ("Content-Length: 5\r\n\r\nhello", "request_body"),
        (
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "request_body",
        ),
    ] {
        let request = format!("GET /public HTTP/1.1\r\nHost: x\r\n{UPGRADE}{framing}");
        let mut s = TcpStream::connect(h.running.public_addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        // Then a second request on the same connection, which must never be served.
        s.write_all(h.upgrade_request("/public", WITH_ORIGIN).as_bytes())
            .await
            .unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
            .await
            .expect("the gateway closes the connection")
            .unwrap();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 400"), "{framing:?}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
        assert!(h.refusals(reason).await, "{reason}");
    }
    assert!(
        h.rec.0.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    // A body of zero bytes is no body.
    let (status, _) = h
        .exchange(&format!(
            "GET /public HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{UPGRADE}\r\n"
        ))
        .await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn subprotocol_offers_are_checked_and_rebuilt() {
    let h = harness().await;
    for offer in [
        "Sec-WebSocket-Protocol: \r\n",
        "Sec-WebSocket-Protocol: ,\r\n",
        "Sec-WebSocket-Protocol: , ,,\r\n",
        "Sec-WebSocket-Protocol: chat, chat\r\n",
        "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: \r\n",
        "Sec-WebSocket-Protocol: a b\r\n",
    ] {
        let (status, seen) = h
            .exchange(&h.upgrade_request("/public", &format!("{WITH_ORIGIN}{offer}")))
            .await;
        assert_eq!((status, seen.len()), (400, 0), "{offer:?}");
    }
    assert!(h.refusals("bad_protocol").await);
    let (status, _) = h
        .exchange(&h.upgrade_request(
            "/public",
            &format!(
                "{WITH_ORIGIN}Sec-WebSocket-Protocol: chat,,  mqtt \r\n\
                 Sec-WebSocket-Protocol: v2\r\n"
            ),
        ))
        .await;
    assert_eq!(status, 101);
    assert_eq!(h.rec.header("sec-websocket-protocol"), ["chat, mqtt, v2"]);
    // The origin goes upstream re-serialised from its parsed form.
    h.exchange(&h.upgrade_request("/public", "Origin: HTTPS://App.Example.com:443\r\n"))
        .await;
    assert_eq!(h.rec.header("origin"), [ORIGIN]);
}

#[tokio::test]
async fn tickets_are_stripped_on_every_route_and_not_spent_on_a_public_one() {
    let h = harness().await;
    let token = h.login("alice").await;
    let reply = h
        .http
        .raw(
            h.running.public_addr,
            &format!(
                "POST /wsguard/ticket HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
                 Cookie: {COOKIE}={token}\r\nContent-Length: 0\r\n\r\n"
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ticket = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, seen) = h
        .anonymous(&format!("/public?a=1&ticket={ticket}&b=2"))
        .await;
    assert_eq!(
        (status, seen),
        (101, vec!["/pub/public?a=1&b=2".to_owned()])
    );
    // Another spelling, or twice: refused, not forwarded.
    for q in [
        format!("Ticket={ticket}"),
        format!("%74icket={ticket}"),
        format!("ticket={ticket}&ticket={ticket}"),
    ] {
        let (status, seen) = h.anonymous(&format!("/public?{q}")).await;
        assert_eq!((status, seen.len()), (400, 0), "{q}");
    }
    // Still redeemable once, where it is meant for.
    let (status, seen) = h.anonymous(&format!("/chat?ticket={ticket}&x=1")).await;
    assert_eq!((status, seen), (101, vec!["/chat?x=1".to_owned()]));
    let (status, _) = h.anonymous(&format!("/chat?ticket={ticket}")).await;
    assert_eq!(status, 401, "single use");
    // The ticket endpoint meets the same request rules, and says which method it wants.
    let reply = h
        .http
        .raw(
            h.running.public_addr,
            "GET /wsguard/./ticket HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow").as_deref(), Some("POST"));
    let reply = h
        .http
        .raw(
            h.running.public_addr,
            "POST /wsguard/ticket HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
    assert_eq!(reply.status, 400);
}
