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
