//! The admin API and the gateway's life: sessions issued behind the admin token (and every
//! near miss of the token refused), reloads (a good configuration applied, the sockets of
//! retired keys closed, a bad one refused with every error), and a graceful shutdown closing
//! sockets with 1001.
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
        n.0.gateway.max_connections_per_user = Limit::at(1);
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
