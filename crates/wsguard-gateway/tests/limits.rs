//! Admission and limits: message rates per socket and per user (not renewed by a reload),
//! connections per address and per user, `X-Forwarded-For` believed only from trusted proxies
//! (on a dual-stack listener too), the handshake rate per address, and the bound on
//! connections not yet upgraded, per address and in all.
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
        s.gateway.max_connections_per_ip = Limit::at(3);
        s.gateway.max_connections_per_user = Limit::at(2);
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
    wait_until("the closed socket to leave the registry", || {
        h.running.registry().len() < open
    })
    .await;
    assert!(
        h.connect("/", &[("origin", ORIGIN), ("cookie", &carol)])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_is_the_client_address() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.max_connections_per_ip = Limit::at(1);
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
        s.gateway.max_connections_per_ip = Limit::at(1);
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

#[tokio::test]
async fn pending_handshakes_are_limited_per_peer_and_in_all() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.max_pending_handshakes = Limit::at(5);
        s.gateway.max_pending_handshakes_per_ip = Limit::at(2);
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
