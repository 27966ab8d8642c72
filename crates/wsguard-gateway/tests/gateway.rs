//! The gateway end to end: real sockets on 127.0.0.1, a real upstream, real clients.
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
async fn relays_text_and_binary_both_ways_with_subprotocol() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = format!("{COOKIE}={token}");
    let mut req = h.url("/room/1?x=1&y=2").into_client_request().unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("sec-websocket-protocol", "chat.v2, chat".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "chat.v2"
    );
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], &[0u8, 1, 2, 255]),
        other => panic!("{other:?}"),
    }
    let big = "x".repeat(200_000);
    ws.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, big);
    assert_eq!(
        h.rec.last().uri,
        "/room/1?x=1&y=2",
        "path and query preserved"
    );
    // Client close code and reason reach the upstream.
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while ws.next().await.is_some() {}
    })
    .await;
    h.rec
        .wait_for("the close", |seen| {
            seen.last().is_some_and(|s| s.close.is_some())
        })
        .await;
    assert_eq!(h.rec.last().close, Some((4001, "bye".into())));
}

#[tokio::test]
async fn upstream_close_code_reaches_the_client() {
    let h = harness().await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    ws.send(Message::text("upstream-close-4002")).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (4002, "from upstream".into()));
}

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
async fn authentication_refusals() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = |t: &str| format!("{COOKIE}={t}");
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN)]).await,
        401,
        "no cookie"
    );
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN), ("cookie", &cookie(&tampered))])
            .await,
        401
    );
    let both = format!("{COOKIE}={token}; {COOKIE}={token}");
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN), ("cookie", &both)])
            .await,
        401,
        "duplicate cookie"
    );
    assert_eq!(
        h.refused(
            "/",
            &[
                ("origin", ORIGIN),
                ("cookie", &cookie(&token)),
                ("cookie", &cookie(&token))
            ]
        )
        .await,
        401
    );
    // Expired and idle (stateless tokens minted with old timestamps by the same keys).
    let v = h.sessions.verifier();
    let old = wsguard_token::Claims::new(
        wsguard_token::SessionId::generate(),
        UserId::parse("alice").unwrap(),
        SessionData::empty(),
        now() - 4000,
    );
    assert_eq!(
        h.refused(
            "/",
            &[("origin", ORIGIN), ("cookie", &cookie(&v.issue(&old)))]
        )
        .await,
        401
    );
    // Revoked.
    h.sessions.revoke_token(&token, now()).await.unwrap();
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN), ("cookie", &cookie(&token))])
            .await,
        401,
        "revoked"
    );
    // Public route: no cookie needed, origin still checked.
    assert!(
        h.connect("/public/feed", &[("origin", ORIGIN)])
            .await
            .is_ok()
    );
    assert_eq!(h.rec.last().uri, "/pub/public/feed");
    assert!(h.rec.header("x-wsguard-user").is_empty());
    assert_eq!(
        h.refused("/public/feed", &[("origin", "https://evil.com")])
            .await,
        403
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
async fn tickets_are_single_use_and_stripped() {
    let h = harness().await;
    let token = h.login("alice").await;
    let post = |origin: &str, cookie: &str| {
        format!(
            "POST /wsguard/ticket HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nCookie: {cookie}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // A ticket for alice's cookie: (ticket, its lifetime in ms).
    let issue = || async {
        let r = h
            .http
            .raw(
                h.running.public_addr,
                &post(ORIGIN, &format!("{COOKIE}={token}")),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let ticket = json["ticket"].as_str().unwrap().to_owned();
        (ticket, json["expires_in_ms"].as_u64().unwrap())
    };
    let (ticket, ttl_ms) = issue().await;
    assert!(ttl_ms <= 30_000);
    // Foreign origin or no cookie: no ticket.
    assert_eq!(
        h.http
            .raw(
                h.running.public_addr,
                &post("https://evil.com", &format!("{COOKIE}={token}"))
            )
            .await
            .status,
        403
    );
    assert_eq!(
        h.http
            .raw(h.running.public_addr, &post(ORIGIN, "x=1"))
            .await
            .status,
        401
    );

    let path = format!("/t?a=1&ticket={ticket}&b=2");
    let mut ws = h
        .connect(&path, &[("origin", ORIGIN)])
        .await
        .expect("ticket accepted");
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hi");
    assert_eq!(
        h.rec.last().uri,
        "/t?a=1&b=2",
        "ticket removed before the upstream"
    );
    assert_eq!(h.rec.header("x-wsguard-user"), vec!["alice"]);
    assert_eq!(
        h.refused(&path, &[("origin", ORIGIN)]).await,
        401,
        "second use"
    );
    assert_eq!(
        h.refused("/t?ticket=made-up", &[("origin", ORIGIN)]).await,
        401
    );

    // A ticket does not outlive its session: revoked between issue and redeem, it is refused.
    let (ticket, _) = issue().await;
    h.sessions.revoke_token(&token, now()).await.unwrap();
    assert_eq!(
        h.refused(&format!("/t?ticket={ticket}"), &[("origin", ORIGIN)])
            .await,
        401
    );
    let m = h.metrics().await;
    let needle = r#"wsguard_handshakes_total{outcome="refused",reason="session_revoked"} 1"#;
    assert!(metric(&m.body, needle), "{needle} missing in\n{}", m.body);
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
async fn store_unreachable_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let h = harness_with(
        Arc::new(SqliteStore::open(&path).unwrap()),
        policy(),
        |_| {},
    )
    .await;
    let token = h.login("alice").await;
    assert!(
        h.connect(
            "/",
            &[("origin", ORIGIN), ("cookie", &format!("{COOKIE}={token}"))]
        )
        .await
        .is_ok()
    );
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE sessions;")
        .unwrap();
    assert_eq!(
        h.refused(
            "/",
            &[("origin", ORIGIN), ("cookie", &format!("{COOKIE}={token}"))]
        )
        .await,
        503
    );
}

#[tokio::test]
async fn revocation_closes_live_sockets() {
    let h = harness().await;
    let a1 = h.login("alice").await;
    let a2 = h.login("alice").await;
    let b = h.login("bob").await;
    let (mut ws_a1, mut ws_a2, mut ws_b) = (
        h.connect_as("/", &a1).await,
        h.connect_as("/", &a2).await,
        h.connect_as("/", &b).await,
    );
    for ws in [&mut ws_a1, &mut ws_a2, &mut ws_b] {
        ws.send(Message::text("x")).await.unwrap();
        next_text(ws).await;
    }
    let r = h.admin("GET", "/connections", "").await;
    assert_eq!(r.status, 200);
    let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list["connections"].as_array().unwrap().len(), 3);
    for c in list["connections"].as_array().unwrap() {
        let peer = c["peer"].as_str().unwrap();
        assert!(
            peer.parse::<std::net::SocketAddr>()
                .is_ok_and(|p| p.ip().is_loopback()),
            "{peer}"
        );
    }
    // Ids are listed in full (their `Debug` would show only a prefix).
    let a1_claims = h.sessions.verifier().verify(&a1, now()).unwrap();
    let a1_claims = a1_claims.claims();
    assert!(
        list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| { c["sid"] == a1_claims.sid.as_str() && c["uid"] == a1_claims.uid.as_str() }),
        "{}",
        r.body
    );

    // One session, through the admin API.
    let sid = h
        .sessions
        .verifier()
        .verify(&a1, now())
        .unwrap()
        .claims()
        .sid
        .as_str()
        .to_owned();
    let r = h.admin("DELETE", &format!("/sessions/{sid}"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        next_close(&mut ws_a1).await,
        (1008, "session revoked".into())
    );
    ws_a2.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut ws_a2).await, "still here");
    // Every session of a user.
    let r = h.admin("DELETE", "/users/alice/sessions", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        next_close(&mut ws_a2).await,
        (1008, "session revoked".into())
    );
    ws_b.send(Message::text("bob stays")).await.unwrap();
    assert_eq!(next_text(&mut ws_b).await, "bob stays");
    // The upstream was told too.
    h.rec
        .wait_for("two 1008 closes", |seen| {
            seen.iter()
                .filter(|s| s.close.as_ref().is_some_and(|c| c.0 == 1008))
                .count()
                == 2
        })
        .await;
    let closes: Vec<_> = h
        .rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.close.clone())
        .collect();
    assert_eq!(
        closes.iter().filter(|c| c.0 == 1008).count(),
        2,
        "{closes:?}"
    );

    // Metrics, read while bob's socket is still open.
    let m = h.metrics().await;
    assert_eq!(m.status, 200);
    for needle in [
        "wsguard_open_connections 1",
        r#"wsguard_handshakes_total{outcome="accepted",reason="ok"} 3"#,
        r#"wsguard_closes_total{code="1008",reason="session_revoked"} 2"#,
        r#"wsguard_messages_total{direction="client_to_upstream"} 5"#,
        r#"wsguard_messages_total{direction="upstream_to_client"} 5"#,
        "wsguard_revocation_close_seconds_count 2",
    ] {
        assert!(m.body.contains(needle), "{needle} missing in\n{}", m.body);
    }
}

#[tokio::test]
async fn expiry_closes_live_socket() {
    let p = TokenPolicy {
        max_age: 2,
        idle_timeout: 2,
        ..policy()
    };
    let h = harness_with(Arc::new(MemoryStore::new()), p, |_| {}).await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    assert_eq!(next_close(&mut ws).await, (1008, "session expired".into()));
}

#[tokio::test]
async fn admin_api_issues_sessions_and_requires_the_token() {
    let h = harness().await;
    let r = h
        .admin(
            "POST",
            "/sessions",
            r#"{"user":"carol","data":{"plan":"pro"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let token = json["token"].as_str().unwrap();
    let set_cookie = json["set_cookie"].as_str().unwrap();
    assert!(set_cookie.starts_with(&format!("{COOKIE}={token};")));
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let mut ws = h.connect_as("/", token).await;
    ws.send(Message::text("ok")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ok");
    assert_eq!(h.rec.header("x-wsguard-data"), vec![r#"{"plan":"pro"}"#]);
    let r = h.admin("GET", "/users/carol/sessions", "").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for bad in [
        r#"{"user":""}"#,
        r#"{"user":"a","data":[1]}"#,
        "nope",
        r#"{"user":"a","extra":1}"#,
    ] {
        assert_eq!(h.admin("POST", "/sessions", bad).await.status, 400, "{bad}");
    }
    // Bodies are bounded (16 KiB): a larger one is refused, not read whole.
    let big = format!(
        r#"{{"user":"dave","data":{{"pad":"{}"}}}}"#,
        "x".repeat(17 * 1024)
    );
    assert_eq!(h.admin("POST", "/sessions", &big).await.status, 413);
    let unauth = "GET /connections HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer wrong\r\n\r\n";
    assert_eq!(h.http.raw(h.running.admin_addr, unauth).await.status, 401);
    // The right length, a prefix, the token with more after it, another scheme: all refused.
    let near = [
        format!("Bearer {}", "x".repeat(ADMIN_TOKEN.len())),
        format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
        format!("Bearer {ADMIN_TOKEN}x"),
        format!("Basic {ADMIN_TOKEN}"),
    ];
    for auth in near {
        let req = format!("GET /connections HTTP/1.1\r\nHost: a\r\nAuthorization: {auth}\r\n\r\n");
        assert_eq!(
            h.http.raw(h.running.admin_addr, &req).await.status,
            401,
            "{auth}"
        );
    }
    let none = "GET /connections HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(h.http.raw(h.running.admin_addr, none).await.status, 401);
    let health = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(h.http.raw(h.running.admin_addr, health).await.status, 200);
    let ready = "GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(h.http.raw(h.running.admin_addr, ready).await.status, 200);
}

#[tokio::test]
async fn graceful_shutdown_closes_with_1001() {
    let h = harness().await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    ws.send(Message::text("x")).await.unwrap();
    next_text(&mut ws).await;
    h.running.shutdown();
    assert_eq!(next_close(&mut ws).await.0, 1001);
    tokio::time::timeout(Duration::from_secs(10), h.running.wait())
        .await
        .expect("drained in time");
}

#[tokio::test]
async fn message_policy_close_codes() {
    let h = harness().await;
    let token = h.login("alice").await;

    // JSON route: the sender field is set to the authenticated user, whatever the client wrote.
    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::text(r#"{"sender":"mallory","text":"hi"}"#))
        .await
        .unwrap();
    let echoed: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(echoed["sender"], "alice");
    assert_eq!(echoed["text"], "hi");
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (1008, "message refused".into()));

    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::text("[[[[[1]]]]]")).await.unwrap();
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "message refused".into()),
        "too deep"
    );

    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::text(format!("\"{}\"", "x".repeat(2000))))
        .await
        .unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1009, "over max_message_bytes");

    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::binary(vec![1u8, 2])).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (1003, "unsupported data".into()));

    let mut ws = h.connect_as("/text", &token).await;
    ws.send(Message::text("fine")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "fine");
    ws.send(Message::binary(vec![0u8])).await.unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1003);

    // Invalid UTF-8 in a text frame: 1007 (a raw frame, since clients refuse to send one).
    let mut ws = h.connect_as("/", &token).await;
    let bad = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xffu8, 0xfe],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1007);
}

#[tokio::test]
async fn rate_limits_close_at_the_edge() {
    let h = harness().await;
    let token = h.login("alice").await;
    // Burst of 5, then 1/s: the 6th message in a quick run is refused (sending 6 short
    // messages takes far less than the second a new token needs).
    let mut ws = h.connect_as("/limited", &token).await;
    for i in 0..5 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("m{i}"));
    }
    ws.send(Message::text("one too many")).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (1008, "rate limited".into()));

    // Per user, across sockets: two sockets of alice share a burst of 4.
    let (mut a, mut b) = (
        h.connect_as("/user-limited", &token).await,
        h.connect_as("/user-limited", &token).await,
    );
    for _ in 0..2 {
        for ws in [&mut a, &mut b] {
            ws.send(Message::text("x")).await.unwrap();
            assert_eq!(next_text(ws).await, "x");
        }
    }
    a.send(Message::text("fifth")).await.unwrap();
    assert_eq!(next_close(&mut a).await, (1008, "rate limited".into()));
    let mut bob = h.connect_as("/user-limited", &h.login("bob").await).await;
    bob.send(Message::text("bob")).await.unwrap();
    assert_eq!(next_text(&mut bob).await, "bob");
}

#[tokio::test]
async fn a_reload_does_not_hand_users_a_second_budget() {
    let h = harness().await;
    h.reload_as_started();
    let token = h.login("alice").await;
    // /user-limited: a burst of 4 per user. Two messages before the reload ...
    let mut before = h.connect_as("/user-limited", &token).await;
    for _ in 0..2 {
        before.send(Message::text("x")).await.unwrap();
        assert_eq!(next_text(&mut before).await, "x");
    }
    let r = h.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // ... leave two for the sockets opened after it.
    let mut after = h.connect_as("/user-limited", &token).await;
    for _ in 0..2 {
        after.send(Message::text("y")).await.unwrap();
        assert_eq!(next_text(&mut after).await, "y");
    }
    after.send(Message::text("fifth")).await.unwrap();
    assert_eq!(next_close(&mut after).await, (1008, "rate limited".into()));
}

#[tokio::test]
async fn connection_limits_per_ip_and_per_user() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.max_connections_per_ip = 3;
        s.gateway.max_connections_per_user = 2;
    })
    .await;
    let alice = h.login("alice").await;
    let a1 = h.connect_as("/", &alice).await;
    let _a2 = h.connect_as("/", &alice).await;
    let cookie = format!("{COOKIE}={alice}");
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN), ("cookie", &cookie)])
            .await,
        429,
        "per user"
    );
    let _b = h.connect_as("/", &h.login("bob").await).await;
    let carol = format!("{COOKIE}={}", h.login("carol").await);
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN), ("cookie", &carol)])
            .await,
        429,
        "per address"
    );
    let r = h
        .http
        .raw(
            h.running.public_addr,
            &h.upgrade_request("/", &format!("Origin: {ORIGIN}\r\nCookie: {carol}\r\n")),
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // X-Forwarded-For is not believed from an untrusted peer.
    let spoof = [
        ("origin", ORIGIN),
        ("cookie", carol.as_str()),
        ("x-forwarded-for", "203.0.113.7"),
    ];
    assert_eq!(h.refused("/", &spoof).await, 429);
    // A place frees up when a socket closes.
    let open = h.running.registry().len();
    drop(a1);
    for _ in 0..1000 {
        if h.running.registry().len() < open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        h.connect("/", &[("origin", ORIGIN), ("cookie", &carol)])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_is_the_client_address() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.max_connections_per_ip = 1;
        s.gateway.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let t = format!("{COOKIE}={}", h.login("alice").await);
    let from = |ip: &'static str| {
        [
            ("origin", ORIGIN),
            ("cookie", t.as_str()),
            ("x-forwarded-for", ip),
        ]
    };
    let _one = h.connect("/", &from("198.51.100.1")).await.unwrap();
    let _two = h.connect("/", &from("198.51.100.2")).await.unwrap();
    assert_eq!(h.refused("/", &from("198.51.100.1")).await, 429);
}

#[tokio::test]
async fn a_dual_stack_listener_still_knows_its_trusted_proxy() {
    // Listening on [::], an IPv4 peer arrives as ::ffff:127.0.0.1; configured as 127.0.0.1, it
    // is still the trusted proxy whose X-Forwarded-For names the client.
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.listen = "[::]:0".parse().unwrap();
        s.gateway.max_connections_per_ip = 1;
        s.gateway.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let t = format!("{COOKIE}={}", h.login("alice").await);
    let url = format!("ws://127.0.0.1:{}/", h.running.public_addr.port());
    let from = |client: &str| {
        let mut req = url.as_str().into_client_request().unwrap();
        for (n, v) in [
            ("origin", ORIGIN),
            ("cookie", &t),
            ("x-forwarded-for", client),
        ] {
            req.headers_mut().insert(n, v.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    let _one = from("198.51.100.1").await.expect("first client");
    let _two = from("198.51.100.2")
        .await
        .expect("another client behind the proxy");
    match from("198.51.100.1").await {
        Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), 429),
        other => panic!("second socket of one client: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn idle_sockets_are_closed() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.idle_timeout = Duration::from_millis(300);
        s.gateway.ping_interval = Duration::ZERO;
    })
    .await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    assert_eq!(next_close(&mut ws).await, (1008, "idle timeout".into()));
}

#[tokio::test]
async fn half_open_clients_are_detected_by_ping() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.idle_timeout = Duration::ZERO;
        s.gateway.ping_interval = Duration::from_millis(100);
        s.gateway.pong_timeout = Duration::from_millis(200);
    })
    .await;
    // A raw client that reads the pings and never answers: to the gateway it is half-open.
    let mut raw = raw_connect(&h, "/", &h.login("alice").await, b"").await;
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (head, payload) = read_frame(&mut raw, wire::From::Server).await.unwrap();
            if head.op == wire::Op::Close {
                return payload;
            }
            assert_eq!(head.op, wire::Op::Ping, "only pings before the close");
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(&close[..2], &1008u16.to_be_bytes());
    assert_eq!(&close[2..], b"pong timeout");
    // A client that answers pings stays (its codec answers while it waits for messages).
    let mut ok = h.connect_as("/", &h.login("bob").await).await;
    // The codec answers pings while it is polled for messages; it surfaces them too.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, ok.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            other => panic!("nothing but pings for 800 ms, got {other:?}"),
        }
    }
    assert!(pings >= 1, "pinged (every 100 ms) and answered: {pings}");
}

#[tokio::test]
async fn slow_reader_is_closed_and_the_upstream_not_buffered() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.send_timeout = Duration::from_millis(500);
        s.gateway.ping_interval = Duration::ZERO;
    })
    .await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    ws.send(Message::text("flood")).await.unwrap();
    // Do not read: the upstream floods 64 KiB messages; the gateway stops reading it once the
    // client's socket is full, and closes the client after send_timeout.
    let body = h
        .wait_for_metric(r#"wsguard_closes_total{code="1013",reason="overloaded"} 1"#)
        .await
        .expect("slow reader not closed");
    let relayed = body
        .lines()
        .find(|l| l.starts_with(r#"wsguard_bytes_total{direction="upstream_to_client"}"#))
        .unwrap();
    let bytes: f64 = relayed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        bytes < 64.0 * 1024.0 * 1024.0,
        "bounded: {bytes} bytes relayed to a client that reads nothing"
    );
}

#[tokio::test]
async fn an_upstream_that_stops_reading_is_closed_after_send_timeout() {
    let stuck = raw_upstream("never_read").await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.send_timeout = Duration::from_millis(300);
        s.gateway.ping_interval = Duration::ZERO;
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                max_message_bytes: 1 << 20,
                ..Default::default()
            },
            ..RouteConfig::new("/stuck", format!("ws://{stuck}"))
        });
    })
    .await;
    let (mut tx, mut rx) = h
        .connect_as("/stuck", &h.login("alice").await)
        .await
        .split();
    // The client writes faster than the upstream reads (never): once the sockets' buffers are
    // full, the gateway's write to the upstream waits, and after send_timeout it gives up.
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..256 {
            if tx.send(Message::binary(chunk.clone())).await.is_err() {
                return;
            }
        }
    });
    h.wait_for_metric(r#"wsguard_closes_total{code="1011",reason="upstream_lost"} 1"#)
        .await
        .expect("a stuck upstream was not given up on");
    // The client hears about it: a 1011 close, or (its own writes still unread by the gateway
    // when it closed) a reset; either way its socket ends.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the client's socket stays open");
    assert!(matches!(end, Some(1011) | None), "{end:?}");
    writer.abort();
}

/// A self-signed certificate for `localhost`, written as PEM files.
struct TestCert {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn test_cert() -> TestCert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    TestCert {
        _dir: dir,
        cert,
        key,
        der: c.cert.der().clone(),
    }
}

fn client_trusting(der: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// An echo upstream behind TLS with `cert`.
async fn tls_echo_upstream(cert: &TestCert) -> SocketAddr {
    let config = wsguard_gateway::tls::server_config(
        "test",
        &wsguard_gateway::config::TlsConfig {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        },
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_terminated_and_wss_upstreams_verified() {
    let gw_cert = test_cert();
    let up_cert = test_cert();
    let up = tls_echo_upstream(&up_cert).await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.tls = Some(wsguard_gateway::config::TlsConfig {
            cert: gw_cert.cert.clone(),
            key: gw_cert.key.clone(),
        });
        s.routes.push(RouteConfig {
            upstream_ca: Some(up_cert.cert.clone()),
            ..RouteConfig::new("/secure", format!("wss://localhost:{}", up.port()))
        });
        // The same upstream, checked against the system roots: its certificate is not trusted.
        s.routes.push(RouteConfig::new(
            "/untrusted",
            format!("wss://localhost:{}", up.port()),
        ));
    })
    .await;
    let token = h.login("alice").await;
    let cookie = format!("{COOKIE}={token}");
    let wss = |path: &str| {
        let mut req = format!("wss://localhost:{}{path}", h.running.public_addr.port())
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        req
    };
    let connector = || {
        Some(tokio_tungstenite::Connector::Rustls(client_trusting(
            &gw_cert.der,
        )))
    };

    // wss:// client → wsguard (TLS) → wss:// upstream verified against the configured CA.
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        wss("/secure/x"),
        None,
        false,
        connector(),
    )
    .await
    .unwrap();
    ws.send(Message::text("over tls both ways")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "over tls both ways");

    // An upstream whose certificate does not chain to a trusted root: 502, never a tunnel.
    match tokio_tungstenite::connect_async_tls_with_config(
        wss("/untrusted"),
        None,
        false,
        connector(),
    )
    .await
    {
        Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), 502),
        other => panic!("expected 502, got {other:?}"),
    }

    // A client that does not trust the gateway's certificate cannot connect.
    let other = test_cert();
    let refused = tokio_tungstenite::connect_async_tls_with_config(
        wss("/secure"),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(client_trusting(
            &other.der,
        ))),
    )
    .await;
    assert!(
        matches!(refused, Err(WsError::Tls(_)) | Err(WsError::Io(_))),
        "{refused:?}"
    );

    // Plain ws:// to the TLS listener gets no upgrade.
    assert!(
        h.connect("/secure", &[("origin", ORIGIN), ("cookie", &cookie)])
            .await
            .is_err()
    );
}

/// An upstream that, as soon as a client is connected, sends `count` binary messages of `size`
/// bytes, then the text "end".
async fn burst_upstream(count: usize, size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                for i in 0..count {
                    let payload = vec![i as u8; size];
                    if ws.send(Message::binary(payload)).await.is_err() {
                        return;
                    }
                }
                let _ = ws.send(Message::text("end")).await;
                // Keep the socket open: the end of the burst must reach the client with no
                // later event on the upstream side to wake the relay.
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    addr
}

/// A TLS client that first stops reading, then reads slowly, while a burst larger than the
/// sockets' buffers comes its way: it gets every message, intact and in order, through the
/// relay's backpressure on a TLS stream. (Whether the run ends with encrypted records held in
/// the TLS stream depends on timing; that case itself is
/// `relay::tests::bytes_a_stream_holds_are_flushed_as_the_peer_reads`.)
#[tokio::test]
async fn tls_slow_reader_gets_a_whole_burst() {
    const COUNT: usize = 64;
    const SIZE: usize = 256 * 1024;
    let gw_cert = test_cert();
    let up = burst_upstream(COUNT, SIZE).await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.tls = Some(wsguard_gateway::config::TlsConfig {
            cert: gw_cert.cert.clone(),
            key: gw_cert.key.clone(),
        });
        s.routes.push(RouteConfig::new(
            "/burst",
            format!("ws://127.0.0.1:{}", up.port()),
        ));
    })
    .await;
    let token = h.login("alice").await;
    let mut req = format!("wss://localhost:{}/burst", h.running.public_addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    req.headers_mut()
        .insert("cookie", format!("{COOKIE}={token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(client_trusting(
            &gw_cert.der,
        ))),
    )
    .await
    .unwrap();
    // Not reading: the burst fills the sockets' buffers and backs up into the relay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Then reading slowly, so that the socket to the client is full whenever the relay writes,
    // the last time included.
    let read_all = async {
        for i in 0..COUNT {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    assert_eq!(b.len(), SIZE, "message {i}");
                    assert!(b.iter().all(|&x| x == i as u8), "message {i} intact");
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
        assert_eq!(next_text(&mut ws).await, "end");
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the whole burst reached the client");
}

#[tokio::test]
async fn reload_applies_a_good_config_closes_retired_keys_and_refuses_a_bad_one() {
    let h = harness().await;
    // Without a loader there is nothing to reload.
    assert_eq!(h.admin("POST", "/reload", "").await.status, 501);

    let next: Arc<Mutex<(Settings, Verifier)>> = Arc::new(Mutex::new((
        h.settings.clone(),
        (*h.sessions.verifier()).clone(),
    )));
    let loader_next = Arc::clone(&next);
    h.running.set_loader(Arc::new(move || {
        let (settings, verifier) = loader_next.lock().unwrap().clone();
        Ok(wsguard_gateway::Reload {
            settings,
            verifier,
            restart_required: Vec::new(),
        })
    }));

    let alice = h.login("alice").await;
    let mut live = h.connect_as("/", &alice).await;
    const NEW: &str = "https://new.example.net";
    let alice_cookie = format!("{COOKIE}={alice}");
    assert_eq!(
        h.refused("/", &[("origin", NEW), ("cookie", &alice_cookie)])
            .await,
        403
    );

    // A good configuration: a new origin, and new keys (the old key dropped).
    next.lock()
        .unwrap()
        .0
        .gateway
        .allowed_origins
        .push(NEW.into());
    next.lock().unwrap().1 = Verifier::new(Arc::new(KeyRing::ephemeral()), policy());
    let r = h.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#""restart_required":[]"#), "{}", r.body);
    // New handshakes see the new configuration ...
    let bob = h.login("bob").await;
    let bob_cookie = format!("{COOKIE}={bob}");
    assert!(
        h.connect("/", &[("origin", NEW), ("cookie", &bob_cookie)])
            .await
            .is_ok()
    );
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN), ("cookie", &alice_cookie)])
            .await,
        401,
        "a token of the dropped key"
    );
    // ... and the socket opened before the reload with a token of the dropped key is closed.
    assert_eq!(
        next_close(&mut live).await,
        (1008, "session key retired".to_owned())
    );
    // Reloads that keep the keys keep the sockets.
    let carol = h.login("carol").await;
    let mut live = h
        .connect(
            "/",
            &[("origin", NEW), ("cookie", &format!("{COOKIE}={carol}"))],
        )
        .await
        .unwrap();
    assert_eq!(h.running.reload().unwrap(), Vec::<String>::new());
    live.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut live).await, "still here");

    // A bad configuration is refused with every error, and the one in force stays.
    {
        let mut n = next.lock().unwrap();
        n.0.gateway.allowed_origins = vec!["not an origin".into()];
        n.0.gateway.max_headers = 1;
    }
    let r = h.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("gateway.allowed_origins"), "{}", r.body);
    assert!(r.body.contains("gateway.max_headers"), "{}", r.body);
    assert!(
        h.connect("/", &[("origin", NEW), ("cookie", &bob_cookie)])
            .await
            .is_ok()
    );
    assert!(matches!(
        h.running.reload(),
        Err(wsguard_gateway::ReloadError::Invalid(_))
    ));
    live.send(Message::text("and still")).await.unwrap();
    assert_eq!(next_text(&mut live).await, "and still");

    // Limits are reloaded too: one socket per user from now on.
    {
        let mut n = next.lock().unwrap();
        n.0 = h.settings.clone();
        n.0.gateway.allowed_origins.push(NEW.into());
        n.0.gateway.max_connections_per_user = 1;
    }
    assert_eq!(h.running.reload().unwrap(), Vec::<String>::new());
    let _bob = h
        .connect("/", &[("origin", NEW), ("cookie", &bob_cookie)])
        .await
        .unwrap();
    assert_eq!(
        h.refused("/", &[("origin", NEW), ("cookie", &bob_cookie)])
            .await,
        429
    );

    let m = h.metrics().await;
    assert!(
        metric(&m.body, r#"wsguard_reloads_total{outcome="applied"} 3"#),
        "{}",
        m.body
    );
    assert!(
        metric(&m.body, r#"wsguard_reloads_total{outcome="refused"} 2"#),
        "{}",
        m.body
    );
}

fn raw_frame(
    payload: &[u8],
    opcode: tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode,
    fin: bool,
) -> Message {
    Message::Frame(
        tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            payload.to_vec(),
            opcode,
            fin,
        ),
    )
}

#[tokio::test]
async fn fragments_ping_floods_and_schemas_are_bounded() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let schema_dir = tempfile::tempdir().unwrap();
    let schema = schema_dir.path().join("chat.schema.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","required":["text","sender"],"additionalProperties":false,
            "properties":{"text":{"type":"string","maxLength":100},"sender":{"type":"string"}}}"#,
    )
    .unwrap();
    let (rec_addr, _) = recording_upstream().await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                max_fragments: 3,
                assembly_timeout: Duration::from_millis(300),
                control_frames: Rate {
                    per_second: 1,
                    burst: Some(5),
                },
                ..Default::default()
            },
            ..RouteConfig::new("/frames", format!("ws://{rec_addr}"))
        });
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                kind: Kind::Json,
                stamp_sender: Some("sender".into()),
                json_schema: Some(schema.clone()),
                ..Default::default()
            },
            ..RouteConfig::new("/schema", format!("ws://{rec_addr}"))
        });
    })
    .await;
    let token = h.login("alice").await;
    let text = OpCode::Data(Data::Text);
    let cont = OpCode::Data(Data::Continue);

    // Three fragments make one message; a fourth closes the socket.
    let mut ws = h.connect_as("/frames", &token).await;
    for (part, op, fin) in [
        (&b"a"[..], text, false),
        (b"b", cont, false),
        (b"c", cont, true),
    ] {
        ws.send(raw_frame(part, op, fin)).await.unwrap();
    }
    assert_eq!(next_text(&mut ws).await, "abc");
    for (part, op, fin) in [
        (&b"a"[..], text, false),
        (b"b", cont, false),
        (b"c", cont, false),
        (b"d", cont, true),
    ] {
        ws.send(raw_frame(part, op, fin)).await.unwrap();
    }
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "too many fragments".into())
    );

    // A first fragment, then silence: closed at the assembly deadline, not at the idle timeout.
    let mut ws = h.connect_as("/frames", &token).await;
    ws.send(raw_frame(b"start", text, false)).await.unwrap();
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "message not completed in time".into())
    );

    // Pings beyond the control-frame bucket (burst 5): a flood.
    let mut ws = h.connect_as("/frames", &token).await;
    for _ in 0..5 {
        ws.send(Message::Ping(bytes::Bytes::from_static(b"p")))
            .await
            .unwrap();
    }
    ws.send(Message::text("still open")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still open");
    for _ in 0..20 {
        if ws
            .send(Message::Ping(bytes::Bytes::from_static(b"p")))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "too many control frames".into())
    );

    // JSON Schema, checked after stamping: the sender is the authenticated user.
    let mut ws = h.connect_as("/schema", &token).await;
    ws.send(Message::text(r#"{"text":"hello","sender":"mallory"}"#))
        .await
        .unwrap();
    let echoed: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(echoed["sender"], "alice");
    ws.send(Message::text(r#"{"text":"hello","admin":true}"#))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "message does not match the schema".into())
    );
}

#[tokio::test]
async fn housekeeping_drops_expired_tickets_and_purges_the_store() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.ticket_ttl = Duration::from_millis(50);
    })
    .await;
    let token = h.login("alice").await;
    let post = format!(
        "POST /wsguard/ticket HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nCookie: {COOKIE}={token}\r\nContent-Length: 0\r\n\r\n"
    );
    for _ in 0..3 {
        assert_eq!(h.http.raw(h.running.public_addr, &post).await.status, 200);
    }
    assert_eq!(h.running.sweep().await.0, 0, "nothing has expired yet");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.running.sweep().await.0, 3, "the three tickets expired");
    // A revoked session leaves a tombstone until the token's max age: not purged early.
    let sid = h
        .sessions
        .authenticate(&token, now())
        .await
        .unwrap()
        .sid()
        .clone();
    h.sessions.revoke_session(&sid, now()).await.unwrap();
    assert_eq!(h.running.sweep().await.1, 0);
}

/// The "SecureSession" tutorial's token, minted by Python's standard library as its code does.
fn python_legacy_token(secret: &str, uid: &str) -> String {
    let script = r#"
import hashlib, hmac, json, secrets, sys, time
secret, uid = sys.argv[1], sys.argv[2]
now = int(time.time())
data = {"sid": secrets.token_urlsafe(32), "uid": uid, "data": {"name": "Ada L"},
        "created": now, "last_active": now}
payload = json.dumps(data, separators=(",", ":"))
print(payload + "." + hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret, uid])
        .output()
        .expect("python3 is needed for this test");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn legacy_cookies_work_only_when_legacy_tokens_are_accepted() {
    const SECRET: &str = "tutorial-secret-0123456789abcdef0123456789";
    let legacy_policy = TokenPolicy {
        accept_legacy_tokens: true,
        ..policy()
    };
    let token = python_legacy_token(SECRET, "ada");
    // The raw JSON travels in the Cookie header as browsers send it (quotes, commas, a space).
    let cookie = format!("{COOKIE}={token}");
    let hdrs = [("origin", ORIGIN), ("cookie", cookie.as_str())];

    let h = harness_with(Arc::new(MemoryStore::new()), legacy_policy, |_| {}).await;
    h.sessions.set_verifier(Verifier::new(
        Arc::new(KeyRing::ephemeral().with_legacy_secret(SECRET.as_bytes())),
        legacy_policy,
    ));
    let mut ws = h.connect("/", &hdrs).await.expect("legacy cookie accepted");
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hi");
    assert_eq!(h.rec.header("x-wsguard-user"), vec!["ada".to_owned()]);
    // Tampered (the user id changed): refused.
    let forged = format!("{COOKIE}={}", token.replace("\"ada\"", "\"bob\""));
    assert_eq!(
        h.refused("/", &[("origin", ORIGIN), ("cookie", &forged)])
            .await,
        401
    );

    // Legacy tokens off (the default): the same cookie is refused.
    let strict = harness().await;
    assert_eq!(strict.refused("/", &hdrs).await, 401);
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
async fn a_tls_handshake_that_never_comes_is_cut_at_the_deadline() {
    let cert = test_cert();
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.handshake_timeout = Duration::from_millis(300);
        s.gateway.max_pending_handshakes_per_ip = 1;
        s.gateway.tls = Some(wsguard_gateway::config::TlsConfig {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        });
    })
    .await;
    // Connected, and no ClientHello: the gateway hangs up after the deadline, with the place
    // this address had among the pending handshakes given back.
    let mut s = TcpStream::connect(h.running.public_addr).await.unwrap();
    assert!(held(&mut s).await, "closed before the deadline");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "TLS connection still open long after the deadline"
    );
    assert!(
        rest.is_empty(),
        "nothing is written to a client that never said hello"
    );
    wait_pending(&h, 0).await;
    let mut again = TcpStream::connect(h.running.public_addr).await.unwrap();
    wait_pending(&h, 1).await;
    assert!(held(&mut again).await, "the place was not given back");
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

/// A connection from `ip` (a loopback address) that sends nothing.
async fn silent_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{ip}:0").parse::<SocketAddr>().unwrap())
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the gateway keeps `s` open: nothing read from it for a while.
async fn held(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(150), s.read(&mut b))
        .await
        .is_err()
}

/// Everything the gateway wrote to `s` before closing it.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the gateway closes a refused connection at once")
        .unwrap();
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn handshake_rate_per_address_when_set() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.handshake_rate_per_ip = Some(Rate {
            per_second: 1,
            burst: Some(2),
        });
        s.gateway.trusted_proxies = vec!["127.0.0.4".parse().unwrap()];
    })
    .await;
    let to = h.running.public_addr;
    // Two at once from one address, then the third is refused unread; others are not touched.
    let _a = silent_from("127.0.0.1", to).await;
    let _b = silent_from("127.0.0.1", to).await;
    let refused = read_to_close(&mut silent_from("127.0.0.1", to).await).await;
    assert!(refused.starts_with("HTTP/1.1 429 "), "{refused}");
    assert!(
        refused.ends_with("too many handshakes: handshake_rate_limited\n"),
        "{refused}"
    );
    // A reload that keeps the rate keeps the buckets: the address stays spent.
    h.reload_as_started();
    assert_eq!(h.admin("POST", "/reload", "").await.status, 200);
    let refused = read_to_close(&mut silent_from("127.0.0.1", to).await).await;
    assert!(
        refused.starts_with("HTTP/1.1 429 "),
        "after a reload: {refused}"
    );
    let mut other = silent_from("127.0.0.2", to).await;
    // A trusted proxy carries many clients: exempt.
    let mut proxied = Vec::new();
    for _ in 0..3 {
        proxied.push(silent_from("127.0.0.4", to).await);
    }
    wait_pending(&h, 6).await;
    assert!(held(&mut other).await);
    let m = h.metrics().await;
    let needle = r#"wsguard_handshakes_total{outcome="refused",reason="handshake_rate_limited"} 2"#;
    assert!(m.body.contains(needle), "{needle} missing in\n{}", m.body);
}

/// Waits until the gateway counts `n` connections not yet upgraded.
async fn wait_pending(h: &Harness, n: usize) {
    let needle = format!("wsguard_pending_handshakes {n}");
    assert!(h.wait_for_metric(&needle).await.is_some(), "never {needle}");
}

#[tokio::test]
async fn pending_handshakes_are_limited_per_peer_and_in_all() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.max_pending_handshakes = 5;
        s.gateway.max_pending_handshakes_per_ip = 2;
        s.gateway.trusted_proxies = vec!["127.0.0.4".parse().unwrap()];
    })
    .await;
    let to = h.running.public_addr;
    // Two silent connections from one address take its two places; the third is refused with
    // 429 before anything is read, and closed.
    let mut a1 = silent_from("127.0.0.1", to).await;
    let mut a2 = silent_from("127.0.0.1", to).await;
    wait_pending(&h, 2).await;
    assert!(held(&mut a1).await && held(&mut a2).await);
    let refused = read_to_close(&mut silent_from("127.0.0.1", to).await).await;
    assert!(refused.starts_with("HTTP/1.1 429 "), "{refused}");
    assert!(refused.contains("retry-after: 5\r\n"), "{refused}");
    assert!(
        refused.ends_with("\r\n\r\ntoo many connections: too_many_pending_from_client\n"),
        "{refused}"
    );
    // A trusted proxy carries many clients: it is held to the global limit only.
    let mut proxied = Vec::new();
    for _ in 0..3 {
        proxied.push(silent_from("127.0.0.4", to).await);
    }
    wait_pending(&h, 5).await;
    // Five connections wait: the whole gateway is full, for every address.
    let refused = read_to_close(&mut silent_from("127.0.0.2", to).await).await;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    // A place comes back when its connection goes away ...
    drop(a1);
    wait_pending(&h, 4).await;
    // ... and when its connection is upgraded: the upgraded socket no longer counts.
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "x");
    wait_pending(&h, 4).await;
    let mut b = silent_from("127.0.0.2", to).await;
    wait_pending(&h, 5).await;
    assert!(held(&mut b).await);
    let refused = read_to_close(&mut silent_from("127.0.0.3", to).await).await;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    // Refusals are counted under their reasons.
    let m = h.metrics().await;
    for needle in [
        r#"wsguard_handshakes_total{outcome="refused",reason="too_many_pending_from_client"} 1"#,
        r#"wsguard_handshakes_total{outcome="refused",reason="too_many_pending"} 2"#,
        r#"wsguard_handshakes_total{outcome="accepted",reason="ok"} 1"#,
    ] {
        assert!(m.body.contains(needle), "{needle} missing in\n{}", m.body);
    }
    drop((a2, proxied, b));
    wait_pending(&h, 0).await;
}

/// A client frame, masked with `key`.
fn client_frame(op: wire::Op, fin: bool, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(&mut out, fin, op, Some(key), payload);
    out
}

/// Opens a socket by hand, sending `extra` bytes in the same write as the upgrade request.
async fn raw_connect(h: &Harness, path: &str, token: &str, extra: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(h.running.public_addr).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {ORIGIN}\r\nCookie: {COOKIE}={token}\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(extra);
    s.write_all(&req).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// The client's next frame from the gateway, within a second.
async fn next_raw(s: &mut TcpStream) -> (wire::Header, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(1), read_frame(s, wire::From::Server))
        .await
        .expect("a frame in time")
        .expect("a frame")
}

#[tokio::test]
async fn frames_are_checked_where_they_arrive_and_remasked() {
    let report = raw_upstream("report_mask").await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                assembly_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..RouteConfig::new("/report", format!("ws://{report}"))
        });
    })
    .await;
    let token = h.login("alice").await;
    let key = [1, 2, 3, 4];

    // A frame sent in the same write as the upgrade request is relayed, and the upstream
    // gets it masked with a key of the gateway's, not the client's.
    let early = client_frame(wire::Op::Text, true, key, b"early");
    let mut s = raw_connect(&h, "/report", &token, &early).await;
    // The upstream's greeting, sent in the same write as its 101, arrives first.
    assert_eq!(next_raw(&mut s).await.1, b"welcome");
    let (_, body) = next_raw(&mut s).await;
    let body = String::from_utf8(body).unwrap();
    assert!(body.ends_with(" early"), "{body}");
    assert!(
        !body.starts_with("[1, 2, 3, 4]"),
        "client's mask reused: {body}"
    );

    // A frame cut inside its header and its payload, sent in pieces, arrives whole.
    let payload: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let f = client_frame(wire::Op::Binary, true, key, &payload);
    for piece in [&f[..1], &f[1..3], &f[3..100], &f[100..]] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = next_raw(&mut s).await;
    assert!(body.ends_with(&payload), "payload changed on the way");

    // Invalid UTF-8 early in a long text frame: closed (1007) before the frame is complete.
    let mut bad = vec![b'x'; 1000];
    bad[5] = 0xff;
    let f = client_frame(wire::Op::Text, true, key, &bad);
    s.write_all(&f[..20]).await.unwrap();
    let (h1, close) = next_raw(&mut s).await;
    assert_eq!(h1.op, wire::Op::Close);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1007);

    // One frame trickled in and then silence: closed at the assembly deadline.
    let mut s = raw_connect(&h, "/report", &token, &[]).await;
    assert_eq!(next_raw(&mut s).await.1, b"welcome");
    let f = client_frame(wire::Op::Binary, true, key, &[7u8; 100]);
    s.write_all(&f[..30]).await.unwrap();
    let (h2, close) = next_raw(&mut s).await;
    assert_eq!(h2.op, wire::Op::Close);
    assert_eq!(
        (u16::from_be_bytes([close[0], close[1]]), &close[2..]),
        (1008, &b"message not completed in time"[..])
    );

    // A header declaring 1 GiB, alone: refused at once (1009), nothing of it kept.
    let mut s = raw_connect(&h, "/report", &token, &[]).await;
    assert_eq!(next_raw(&mut s).await.1, b"welcome");
    let mut huge = vec![0x82u8, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 30).to_be_bytes());
    huge.extend_from_slice(&key);
    s.write_all(&huge).await.unwrap();
    let (h4, close) = next_raw(&mut s).await;
    assert_eq!(h4.op, wire::Op::Close);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);

    // Wire-format faults: an unmasked client frame, and RSV bits, are protocol errors (1002).
    for bad in [vec![0x82u8, 0x01, 0x00], vec![0xc2u8, 0x80, 1, 2, 3, 4]] {
        let mut s = raw_connect(&h, "/report", &token, &[]).await;
        assert_eq!(next_raw(&mut s).await.1, b"welcome");
        s.write_all(&bad).await.unwrap();
        let (h3, close) = next_raw(&mut s).await;
        assert_eq!(h3.op, wire::Op::Close);
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002, "{bad:?}");
    }
}
