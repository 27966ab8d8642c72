//! The upgrade request end to end: the strict checks and their statuses (those hyper answers
//! itself counted too), the origin policy, what reaches the upstream (identity headers
//! injected, spoofed ones and the session cookie stripped, no extension negotiated), the
//! handshake deadline against slowloris, and the upstream dial's failures (502/504, and an
//! upstream that crashes mid-socket: 1011).
//!
//! Each test starts its own gateway (public and admin listeners on free ports) through the
//! harness in `common`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    clippy::collapsible_match
)] // tests: a panic is a failure report

mod common;

use common::*;

#[tokio::test]
async fn identity_headers_are_injected_and_spoofs_stripped() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = format!("other=1; {COOKIE}={token}; theme=dark");
    let ws = h
        .connect(
            "/",
            &[
                ("origin", ORIGIN),
                ("cookie", &cookie),
                ("X-Wsguard-User", "admin"),
                ("x-wsguard-USER", "root"),
                ("X-WSGUARD-SESSION", "forged"),
                ("x-wsguard-data", "{\"role\":\"admin\"}"),
                ("connection", "Upgrade, X-Wsguard-User, X-Wsguard-Session"),
                ("x-custom", "dropped: not in gateway.forward_headers"),
                ("user-agent", "kept/1"),
            ],
        )
        .await
        .unwrap();
    drop(ws);
    assert_eq!(h.rec.header("x-wsguard-user"), vec!["alice"]);
    let sid = h.rec.header("x-wsguard-session");
    assert_eq!(sid.len(), 1);
    assert_ne!(sid[0], "forged");
    assert_eq!(h.rec.header("x-wsguard-data"), vec![r#"{"role":"member"}"#]);
    assert!(h.rec.header("x-custom").is_empty());
    assert_eq!(h.rec.header("user-agent"), vec!["kept/1"]);
    let cookies = h.rec.header("cookie").join("; ");
    assert!(
        !cookies.contains(&token) && !cookies.contains(COOKIE),
        "session cookie not forwarded: {cookies}"
    );
    assert!(
        cookies.contains("other=1") && cookies.contains("theme=dark"),
        "{cookies}"
    );
}

#[tokio::test]
async fn origin_policy() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = format!("{COOKIE}={token}");
    for origin in [
        ORIGIN,
        "https://APP.example.com:443",
        "https://a.example.org",
        "https://a.b.example.org",
    ] {
        assert!(
            h.connect("/", &[("origin", origin), ("cookie", &cookie)])
                .await
                .is_ok(),
            "{origin} should pass"
        );
    }
    for origin in [
        "https://evil.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.net",
        "https://evilexample.com",
        "https://example.org",
        "https://example.org.evil.net",
        "https://evilexample.org",
        "null",
        "https://app.example.com/",
        "",
    ] {
        assert_eq!(
            h.refused("/", &[("origin", origin), ("cookie", &cookie)])
                .await,
            403,
            "{origin:?}"
        );
    }
    assert_eq!(
        h.refused("/", &[("cookie", &cookie)]).await,
        403,
        "missing origin"
    );
    assert_eq!(
        h.refused(
            "/",
            &[("origin", ORIGIN), ("origin", ORIGIN), ("cookie", &cookie)]
        )
        .await,
        403,
        "two origins"
    );
    assert_eq!(
        h.rec.0.lock().unwrap().len(),
        4,
        "refused handshakes never reach the upstream"
    );
}

#[tokio::test]
async fn strict_handshake_statuses() {
    let h = harness().await;
    let addr = h.running.public_addr;
    let auth = format!("Origin: {ORIGIN}\r\n");
    let r = h
        .http
        .raw(
            addr,
            &h.upgrade_request("/", &auth)
                .replace("Version: 13", "Version: 8"),
        )
        .await;
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version").as_deref(), Some("13"));
    let r = h
        .http
        .raw(
            addr,
            &h.upgrade_request("/", &auth)
                .replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = h
        .http
        .raw(
            addr,
            &h.upgrade_request("/", &auth)
                .replace("Upgrade: websocket", "Upgrade: h2c"),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = h
        .http
        .raw(
            addr,
            &h.upgrade_request("/", &auth)
                .replace("Connection: Upgrade", "Connection: keep-alive"),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = h
        .http
        .raw(
            addr,
            &h.upgrade_request("/", &auth).replace("GET /", "POST /"),
        )
        .await;
    assert_eq!(r.status, 405);
    let r = h.http.raw(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 426, "plain GET on a WebSocket route");
    let many: String = (0..40).map(|i| format!("X-Pad-{i}: 1\r\n")).collect();
    let r = h.http.raw(addr, &h.upgrade_request("/", &many)).await;
    assert_eq!(r.status, 431, "too many headers");
    let huge = format!("X-Big: {}\r\n", "a".repeat(20_000));
    let r = h.http.raw(addr, &h.upgrade_request("/", &huge)).await;
    assert_eq!(r.status, 431, "headers too large");
    let r = h
        .http
        .raw(addr, "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
        .await;
    assert_eq!(r.status, 400, "unparsable");
    assert!(
        h.rec.0.lock().unwrap().is_empty(),
        "no upstream dial for any of these"
    );
    // What the HTTP layer answered itself is counted too.
    for needle in [
        "wsguard_handshakes_total{outcome=\"refused\",reason=\"headers_too_large\"} 2",
        "wsguard_handshakes_total{outcome=\"refused\",reason=\"malformed_request\"} 1",
    ] {
        assert!(h.wait_for_metric(needle).await.is_some(), "{needle}");
    }
}

#[tokio::test]
async fn upstream_failures() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = format!("{COOKIE}={token}");
    let hdrs = [("origin", ORIGIN), ("cookie", cookie.as_str())];
    assert_eq!(h.refused("/down", &hdrs).await, 502);
    assert_eq!(h.refused("/non101", &hdrs).await, 502);
    assert_eq!(h.refused("/slow", &hdrs).await, 504);
    assert_eq!(
        h.refused("/bad-accept", &hdrs).await,
        502,
        "101 with a wrong accept"
    );
    let offered = [
        ("origin", ORIGIN),
        ("cookie", cookie.as_str()),
        ("sec-websocket-protocol", "chat.v1"),
    ];
    assert_eq!(
        h.refused("/foreign-protocol", &offered).await,
        502,
        "subprotocol not offered"
    );
    assert_eq!(
        h.refused("/foreign-extension", &hdrs).await,
        502,
        "extension not offered"
    );
    let mut ws = h.connect_as("/crash", &token).await;
    ws.send(Message::text("boom")).await.unwrap();
    let (code, _) = next_close(&mut ws).await;
    assert_eq!(code, 1011, "upstream crash → 1011, not a silent reset");
}

#[tokio::test]
async fn slow_handshakes_are_cut_at_the_deadline() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    // Slowloris: a request head that never ends. The gateway hangs up; it does not wait forever.
    let mut s = TcpStream::connect(h.running.public_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 before the close is fine
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "connection still open long after the handshake deadline"
    );
    // It leaves a trace: counted (and logged at debug level) as a refusal.
    h.wait_for_metric(
        "wsguard_handshakes_total{outcome=\"refused\",reason=\"handshake_timeout\"} 1",
    )
    .await
    .expect("the slowloris cut is counted");
    // A complete handshake on a fresh connection is unaffected.
    assert!(
        h.connect_as("/", &h.login("alice").await)
            .await
            .send(Message::text("x"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn compression_is_never_negotiated() {
    let h = harness().await;
    let cookie = format!("{COOKIE}={}", h.login("alice").await);
    // A browser offers permessage-deflate: the 101 accepts none, and the upstream is not asked.
    let r = h
        .http
        .raw(
            h.running.public_addr,
            &h.upgrade_request(
                "/",
                &format!(
                    "Origin: {ORIGIN}\r\nCookie: {cookie}\r\n\
                     Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                ),
            ),
        )
        .await;
    assert_eq!(r.status, 101, "{}", r.head);
    assert_eq!(r.header("sec-websocket-extensions"), None, "{}", r.head);
    let seen = h.rec.last();
    assert!(
        !seen
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions")),
        "forwarded upstream: {:?}",
        seen.headers
    );
}
