//! Who may connect, and for how long: the session cookie's refusals, one-time tickets (single
//! use, stripped before the upstream, dropped by housekeeping once expired), legacy cookies, a
//! failing store (503, never open), and live sockets closed when their session is revoked or
//! expires.
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
async fn housekeeping_drops_expired_tickets_and_purges_the_store() {
    let ttl = Duration::from_secs(10);
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.ticket_ttl = ttl;
    })
    .await;
    let token = h.login("alice").await;
    let post = format!(
        "POST /wsguard/ticket HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nCookie: {COOKIE}={token}\r\nContent-Length: 0\r\n\r\n"
    );
    let first_issued = std::time::SystemTime::now();
    for _ in 0..3 {
        assert_eq!(h.http.raw(h.running.public_addr, &post).await.status, 200);
    }
    let last_issued = std::time::SystemTime::now();
    // Housekeeping at chosen instants, not after a sleep: a millisecond before the first
    // ticket's lifetime ends, and once the last one's has.
    let just_before = first_issued + ttl - Duration::from_millis(1);
    assert_eq!(
        h.running.sweep_at(just_before).await.0,
        0,
        "nothing has expired yet"
    );
    assert_eq!(
        h.running.sweep_at(last_issued + ttl).await.0,
        3,
        "the three tickets expired"
    );
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
