//! Upstream pools and path rewriting through real sockets: least connections across recording
//! upstreams, a dead upstream passed over within the handshake (passive health) or found by
//! probes (active health), draining through the admin API, per-upstream metrics, and the path
//! the upstream is asked for with `strip_prefix` and `upstream_path`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    clippy::collapsible_match
)] // tests: a panic is a failure report

mod common;

use common::*;
use wsguard_gateway::config::HealthCheckConfig;

/// How many handshakes each recorder has seen.
fn counts(recs: &[&Recorder]) -> Vec<usize> {
    recs.iter().map(|r| r.0.lock().unwrap().len()).collect()
}

fn key(addr: SocketAddr) -> String {
    format!("127.0.0.1:{}", addr.port())
}

/// A harness whose route `/pool` balances over `upstreams`.
async fn with_pool(
    upstreams: Vec<String>,
    tweak: impl FnOnce(&mut Settings) + Send + 'static,
) -> Harness {
    harness_with(Arc::new(MemoryStore::new()), policy(), move |s| {
        s.routes.push(RouteConfig {
            upstream: None,
            upstreams,
            public: true,
            ..RouteConfig::new("/pool", "")
        });
        tweak(s);
    })
    .await
}

async fn open(h: &Harness) -> Ws {
    let mut req = h.url("/pool").into_client_request().unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The upstream a client socket was sent to (the registry knows it by the client's address).
fn upstream_of(h: &Harness, ws: &Ws) -> String {
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() else {
        panic!("plain socket expected");
    };
    let local = tcp.local_addr().unwrap();
    h.running
        .registry()
        .list()
        .into_iter()
        .find(|c| c.peer == local)
        .expect("registered")
        .upstream
}

async fn close(h: &Harness, mut ws: Ws) {
    let before = h.running.registry().len();
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    wait_until("the closed socket to leave the registry", || {
        h.running.registry().len() < before
    })
    .await;
}

#[tokio::test]
async fn least_connections_spreads_sockets_and_fills_the_emptiest() {
    let (a, ra) = recording_upstream().await;
    let (b, rb) = recording_upstream().await;
    let h = with_pool(vec![format!("ws://{a}"), format!("ws://{b}")], |_| {}).await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(open(&h).await);
    }
    assert_eq!(counts(&[&ra, &rb]), [2, 2]);
    // Close both sockets on `a`: the next two go there, not in turn.
    let (on_a, on_b): (Vec<Ws>, Vec<Ws>) = sockets
        .into_iter()
        .partition(|ws| upstream_of(&h, ws) == key(a));
    assert_eq!((on_a.len(), on_b.len()), (2, 2));
    for ws in on_a {
        close(&h, ws).await;
    }
    let x = open(&h).await;
    let y = open(&h).await;
    assert_eq!(counts(&[&ra, &rb]), [4, 2]);
    assert_eq!(upstream_of(&h, &x), key(a));
    assert_eq!(upstream_of(&h, &y), key(a));
    let listed = h.admin("GET", "/upstreams", "").await.body;
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let opens: Vec<u64> = [key(a), key(b)]
        .iter()
        .map(|k| {
            let u = v["upstreams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["upstream"] == k.as_str())
                .unwrap();
            u["open"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(opens, [2, 2], "{listed}");
    let m = h.metrics().await.body;
    assert!(
        metric(
            &m,
            &format!(
                "wsguard_upstream_open_connections{{upstream=\"{}\"}} 2",
                key(a)
            )
        ),
        "{m}"
    );
    drop((on_b, x, y));
}

#[tokio::test]
async fn a_dead_upstream_is_passed_over_within_the_handshake() {
    let dead = closed_port();
    let (live, rec) = recording_upstream().await;
    let h = with_pool(vec![format!("ws://{dead}"), format!("ws://{live}")], |_| {}).await;
    for _ in 0..6 {
        let r = h
            .http
            .raw(
                h.running.public_addr,
                &h.upgrade_request("/pool", &format!("Origin: {ORIGIN}\r\n")),
            )
            .await;
        assert_eq!(r.status, 101);
    }
    assert_eq!(counts(&[&rec]), [6]);
    let m = h.metrics().await.body;
    // Tried once, then passed over for gateway.upstream_backoff (10 s).
    assert!(
        metric(
            &m,
            &format!(
                "wsguard_upstream_failures_total{{upstream=\"{}\"}} 1",
                key(dead)
            )
        ),
        "{m}"
    );
    assert!(metric(
        &m,
        &format!("wsguard_upstream_up{{upstream=\"{}\"}} 0", key(dead))
    ));
    assert!(metric(
        &m,
        &format!("wsguard_upstream_up{{upstream=\"{}\"}} 1", key(live))
    ));
}

#[tokio::test]
async fn with_every_upstream_dead_the_handshake_fails_after_trying_each() {
    let (d1, d2) = (closed_port(), closed_port());
    let h = with_pool(vec![format!("ws://{d1}"), format!("ws://{d2}")], |_| {}).await;
    for _ in 0..2 {
        let r = h
            .http
            .raw(
                h.running.public_addr,
                &h.upgrade_request("/pool", &format!("Origin: {ORIGIN}\r\n")),
            )
            .await;
        assert_eq!(r.status, 502);
    }
    // Down is a preference, not a verdict: both were tried again the second time.
    let m = h.metrics().await.body;
    for d in [d1, d2] {
        assert!(
            metric(
                &m,
                &format!(
                    "wsguard_upstream_failures_total{{upstream=\"{}\"}} 2",
                    key(d)
                )
            ),
            "{m}"
        );
    }
}

#[tokio::test]
async fn probes_find_a_dead_upstream_before_any_client_does() {
    let dead = closed_port();
    let (live, rec) = recording_upstream().await;
    let h = with_pool(vec![format!("ws://{dead}"), format!("ws://{live}")], |s| {
        s.gateway.health_check = Some(HealthCheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            path: None,
        });
    })
    .await;
    h.wait_for_metric(&format!(
        "wsguard_upstream_up{{upstream=\"{}\"}} 0",
        key(dead)
    ))
    .await
    .expect("the probe marks the dead upstream down");
    for _ in 0..4 {
        let r = h
            .http
            .raw(
                h.running.public_addr,
                &h.upgrade_request("/pool", &format!("Origin: {ORIGIN}\r\n")),
            )
            .await;
        assert_eq!(r.status, 101);
    }
    assert_eq!(counts(&[&rec]), [4]);
    let m = h.metrics().await.body;
    assert!(
        !m.contains(&format!(
            "wsguard_upstream_failures_total{{upstream=\"{}\"}}",
            key(dead)
        )),
        "no client handshake was spent on it: {m}"
    );
}

#[tokio::test]
async fn draining_stops_new_sockets_and_lets_open_ones_finish() {
    let (a, ra) = recording_upstream().await;
    let (b, rb) = recording_upstream().await;
    let h = with_pool(vec![format!("ws://{a}"), format!("ws://{b}")], |_| {}).await;
    let connect = || async {
        let mut req = h.url("/pool").into_client_request().unwrap();
        req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    };
    let mut first = connect().await.unwrap();
    let first_on = upstream_of(&h, &first);
    let r = h
        .admin("POST", &format!("/upstreams/{first_on}/drain"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"draining\":true"), "{}", r.body);
    for _ in 0..4 {
        drop(connect().await.unwrap());
    }
    let other = if first_on == key(a) { &rb } else { &ra };
    assert_eq!(
        counts(&[other]),
        [4],
        "new sockets avoid the drained upstream"
    );
    // The open socket still works.
    first
        .send(Message::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut first).await, "still here");
    assert!(h.metrics().await.body.contains(&format!(
        "wsguard_upstream_draining{{upstream=\"{first_on}\"}} 1"
    )));
    // A reload keeps the drain.
    h.reload_as_started();
    assert_eq!(h.admin("POST", "/reload", "").await.status, 200);
    let listed = h.admin("GET", "/upstreams", "").await.body;
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let drained = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == first_on.as_str())
        .unwrap();
    assert_eq!(drained["draining"], true);
    assert_eq!(drained["open"], 1);
    // Both drained: nothing to send new sockets to.
    let other_key = if first_on == key(a) { key(b) } else { key(a) };
    h.admin("POST", &format!("/upstreams/{other_key}/drain"), "")
        .await;
    let r = h
        .http
        .raw(
            h.running.public_addr,
            &h.upgrade_request("/pool", &format!("Origin: {ORIGIN}\r\n")),
        )
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert!(h.metrics().await.body.contains("reason=\"no_upstream\""));
    h.admin("POST", &format!("/upstreams/{other_key}/undrain"), "")
        .await;
    assert!(connect().await.is_ok());
    assert_eq!(
        h.admin("POST", "/upstreams/10.9.9.9:1/drain", "")
            .await
            .status,
        404
    );
    assert_eq!(
        h.http
            .raw(
                h.running.admin_addr,
                "POST /upstreams/x/drain HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            .await
            .status,
        401,
        "draining needs the admin token"
    );
}

#[tokio::test]
async fn the_upstream_path_can_drop_the_prefix_or_be_fixed() {
    let (up, rec) = recording_upstream().await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), move |s| {
        s.routes.push(RouteConfig {
            strip_prefix: true,
            public: true,
            ..RouteConfig::new("/chat", format!("ws://{up}/base"))
        });
        s.routes.push(RouteConfig {
            strip_prefix: true,
            public: true,
            ..RouteConfig::new("/bare", format!("ws://{up}"))
        });
        s.routes.push(RouteConfig {
            upstream_path: Some("/socket".into()),
            public: true,
            ..RouteConfig::new("/live", format!("ws://{up}"))
        });
    })
    .await;
    let cases = [
        ("/chat/room?x=1", "/base/room?x=1"),
        ("/chat", "/base"),
        ("/chat/", "/base/"),
        ("/chat/a/./b/../c?ticket=t&y=2", "/base/a/c?y=2"),
        ("/chat/%7Eu", "/base/~u"),
        ("/bare/room", "/room"),
        ("/bare", "/"),
        ("/live", "/socket"),
        ("/live/a/b?q=1", "/socket?q=1"),
        ("/live/../live/x", "/socket"),
    ];
    for (target, want) in cases {
        let r = h
            .http
            .raw(
                h.running.public_addr,
                &h.upgrade_request(target, &format!("Origin: {ORIGIN}\r\n")),
            )
            .await;
        assert_eq!(r.status, 101, "{target}");
        assert_eq!(rec.last().uri, want, "{target}");
    }
    // Tricks normalise out of the route before anything is stripped: /chat/../x is /x, which
    // is the private root route's.
    let before = rec.0.lock().unwrap().len();
    for target in [
        "/chat/../x",
        "/chat/%2e%2e/json",
        "/chat/..;/x",
        "/chat%2f..%2fx",
    ] {
        let r = h
            .http
            .raw(
                h.running.public_addr,
                &h.upgrade_request(target, &format!("Origin: {ORIGIN}\r\n")),
            )
            .await;
        assert!(matches!(r.status, 400 | 401), "{target}: {}", r.status);
    }
    assert_eq!(rec.0.lock().unwrap().len(), before);
}

#[test]
fn pool_and_rewrite_settings_are_checked() {
    use wsguard_gateway::config::{GatewayConfig, routes};
    let check = |r: RouteConfig| {
        routes(&GatewayConfig::default(), &[r])
            .err()
            .unwrap_or_default()
            .to_string()
    };
    let e = check(RouteConfig {
        upstream: None,
        ..RouteConfig::new("/", "")
    });
    assert!(e.contains("route[0].upstream: no upstream"), "{e}");
    let e = check(RouteConfig {
        upstreams: vec!["ws://a:1".into()],
        ..RouteConfig::new("/", "ws://b:1")
    });
    assert!(e.contains("set upstream or upstreams, not both"), "{e}");
    let e = check(RouteConfig {
        upstream: None,
        upstreams: vec!["ws://a:1".into(), "ws://a:1/x".into()],
        ..RouteConfig::new("/", "")
    });
    assert!(e.contains("route[0].upstreams[1]: a:1 is already"), "{e}");
    let e = check(RouteConfig {
        upstream: None,
        upstreams: vec!["ws://a:1".into(), "http://b:1".into()],
        ..RouteConfig::new("/", "")
    });
    assert!(
        e.contains("route[0].upstreams[1]: must be a ws:// or wss:// URL"),
        "{e}"
    );
    let e = check(RouteConfig {
        upstream_path: Some("/s".into()),
        strip_prefix: true,
        ..RouteConfig::new("/", "ws://a:1")
    });
    assert!(
        e.contains("set upstream_path or strip_prefix, not both"),
        "{e}"
    );
    let e = check(RouteConfig {
        upstream_path: Some("/s".into()),
        ..RouteConfig::new("/", "ws://a:1/base")
    });
    assert!(e.contains("already has a path"), "{e}");
    let e = check(RouteConfig {
        upstream_path: Some("/a/../s".into()),
        ..RouteConfig::new("/", "ws://a:1")
    });
    assert!(e.contains("normal form"), "{e}");
}
