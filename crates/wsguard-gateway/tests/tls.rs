//! TLS on both sides: `wss://` terminated with a test certificate, `wss://` upstreams verified
//! against a configured CA (and refused when they do not chain to a trusted root), a TLS client
//! that reads slowly still gets a whole burst, and a TLS handshake that never starts is cut at
//! the handshake deadline.
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
    // Not reading: the burst fills the sockets' buffers and backs up into the relay. (Pacing,
    // not a wait: the client under test stops reading for a while.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Then reading slowly, so that the socket to the client is full whenever the relay writes,
    // the last time included.
    let read_all = async {
        for i in 0..COUNT {
            // Pacing, not a wait: the client under test reads slowly.
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
async fn a_tls_handshake_that_never_comes_is_cut_at_the_deadline() {
    let cert = test_cert();
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.handshake_timeout = Duration::from_millis(300);
        s.gateway.max_pending_handshakes_per_ip = Limit::at(1);
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
