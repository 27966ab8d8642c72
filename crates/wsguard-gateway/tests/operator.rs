//! What an operator sees and sets, through real sockets: the reason code in a refusal's body,
//! `/metrics` behind the admin token when asked, cross-origin deployments (the ticket
//! endpoint's CORS), and the access log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    clippy::collapsible_match
)] // tests: a panic is a failure report

mod common;

use common::*;

#[tokio::test]
async fn a_refusal_says_its_reason_code_and_nothing_of_the_request() {
    let h = harness().await;
    // Issued two hours ago, with a max_age of one.
    let token = h
        .sessions
        .issue(
            UserId::parse("alice").unwrap(),
            SessionData::empty(),
            now() - 7200,
        )
        .await
        .unwrap()
        .token;
    let upgrade = |extra: &str| h.upgrade_request("/chat", extra);
    for (extra, status, body) in [
        (
            format!("Origin: {ORIGIN}\r\nCookie: {COOKIE}={token}\r\n"),
            401,
            "unauthenticated: session_expired\n",
        ),
        (
            format!("Origin: {ORIGIN}\r\n"),
            401,
            "unauthenticated: no_credentials\n",
        ),
        (
            format!("Origin: {ORIGIN}\r\nCookie: {COOKIE}=v1.x.y\r\n"),
            401,
            "unauthenticated: session_malformed\n",
        ),
        (
            "Origin: https://evil.example\r\n".to_owned(),
            403,
            "origin not allowed: origin_not_allowed\n",
        ),
    ] {
        let r = h.http.raw(h.running.public_addr, &upgrade(&extra)).await;
        assert_eq!((r.status, r.body.as_str()), (status, body), "{extra}");
        assert!(!r.body.contains(&token) && !r.head.contains(&token));
    }
    let r = h
        .http
        .raw(
            h.running.public_addr,
            &format!(
                "GET /chat?ticket={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {ORIGIN}\r\n\r\n",
                "A".repeat(43)
            ),
        )
        .await;
    assert_eq!(r.body, "unauthenticated: ticket_invalid\n");
}

#[tokio::test]
async fn metrics_can_require_the_admin_token() {
    let open = harness().await;
    assert_eq!(open.metrics().await.status, 200, "open by default");
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.admin.metrics_require_token = true;
    })
    .await;
    let r = h.metrics().await;
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("wsguard_"), "{}", r.body);
    let r = h.admin("GET", "/metrics", "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("wsguard_open_connections"));
    // Health endpoints stay open for orchestrators.
    for path in ["/healthz", "/readyz"] {
        let r = h
            .http
            .raw(
                h.running.admin_addr,
                &format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"),
            )
            .await;
        assert_eq!(r.status, 200, "{path}");
    }
}

/// A POST to the ticket endpoint (or another method), as a page on `origin` would send it.
fn ticket_request(method: &str, origin: &str, extra: &str) -> String {
    format!(
        "{method} /wsguard/ticket HTTP/1.1\r\nHost: ws.example.com\r\nOrigin: {origin}\r\n\
         Content-Length: 0\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn the_ticket_endpoint_answers_cors_for_allowed_origins_only() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = format!("Cookie: {COOKIE}={token}\r\n");
    let send = |req: String| {
        let h = &h;
        async move { h.http.raw(h.running.public_addr, &req).await }
    };
    // A page on an allowed origin gets its ticket, and may read the answer.
    let r = send(ticket_request("POST", ORIGIN, &cookie)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(r.header("vary").as_deref(), Some("Origin"));
    // Its refusals too (so its script can tell why), named by the origin, never `*`.
    let r = send(ticket_request("POST", "https://A.example.org:443", "")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://a.example.org")
    );
    assert_eq!(r.body, "unauthenticated: no_credentials\n");
    // A foreign page gets neither a ticket nor CORS headers.
    for origin in ["https://evil.example", "null"] {
        let r = send(ticket_request("POST", origin, &cookie)).await;
        assert_eq!(r.status, 403, "{origin}");
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert!(!r.body.contains("ticket\""), "{origin}");
    }
    // Preflight: only from an allowed origin, only for POST.
    let preflight = |origin: &str, method: &str| {
        ticket_request(
            "OPTIONS",
            origin,
            &format!(
                "Access-Control-Request-Method: {method}\r\n\
                 Access-Control-Request-Headers: content-type\r\nConnection: close\r\n"
            ),
        )
    };
    let r = send(preflight(ORIGIN, "POST")).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let r = send(preflight("https://evil.example", "POST")).await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = send(preflight(ORIGIN, "DELETE")).await;
    assert_eq!(r.status, 405);
    // Counted like every refusal.
    let m = h.metrics().await.body;
    assert!(metric(
        &m,
        "wsguard_handshakes_total{outcome=\"refused\",reason=\"origin_not_allowed\"}"
    ));
}

#[tokio::test]
async fn the_admin_api_sets_the_cookie_with_the_configured_attributes() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.cookie = wsguard_gateway::cookie::CookieAttributes {
            domain: Some("example.com".into()),
            secure: true,
            same_site: wsguard_gateway::cookie::SameSite::Strict,
        };
    })
    .await;
    let r = h.admin("POST", "/sessions", r#"{"user":"alice"}"#).await;
    assert_eq!(r.status, 201);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let set = v["set_cookie"].as_str().unwrap();
    for attr in [
        "Domain=example.com",
        "SameSite=Strict",
        "Secure",
        "HttpOnly",
        "Path=/",
        "Max-Age=3600",
    ] {
        assert!(set.contains(attr), "{set}");
    }
}

#[tokio::test]
async fn connections_list_each_sockets_traffic_and_client() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let token = h.login("alice").await;
    let cookie = format!("{COOKIE}={token}");
    let mut ws = h
        .connect(
            "/chat",
            &[
                ("origin", ORIGIN),
                ("cookie", &cookie),
                ("x-forwarded-for", "198.51.100.7"),
            ],
        )
        .await
        .unwrap();
    for m in ["one", "two!", "three"] {
        ws.send(Message::Text(m.into())).await.unwrap();
        assert_eq!(next_text(&mut ws).await, m);
    }
    let r = h.admin("GET", "/connections", "").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let c = &v["connections"][0];
    assert_eq!(c["client"], "198.51.100.7");
    assert_eq!(c["route"], "/");
    assert_eq!(
        (c["messages_in"].as_u64(), c["bytes_in"].as_u64()),
        (Some(3), Some(12))
    );
    assert_eq!(
        (c["messages_out"].as_u64(), c["bytes_out"].as_u64()),
        (Some(3), Some(12))
    );
    assert!(c["upstream"].as_str().unwrap().starts_with("127.0.0.1:"));
}
