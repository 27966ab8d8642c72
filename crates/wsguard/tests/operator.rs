//! What a reverse-proxy operator sets up, through the real binary: an upstream pool with a dead
//! member passed over, draining one upstream through the admin API while its socket stays open,
//! and the upstream path rewritten (`strip_prefix`, `upstream_path`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;

/// An admin API request with the bearer token `serve` wrote in `dir`; returns (status, body).
async fn admin(dir: &std::path::Path, addr: &str, method: &str, path: &str) -> (u16, String) {
    let token = std::fs::read_to_string(dir.join("wsguard-admin-token")).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        token.trim()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

fn dead_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_passes_over_a_dead_upstream_and_drains_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ha) = recording_upstream().await;
    let (b, hb) = recording_upstream().await;
    let dead = dead_port();
    std::fs::write(
        dir.path().join("wsguard.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"{ORIGIN}\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[route]]\npath = \"/\"\npublic = true\n\
             upstreams = [\"ws://{dead}\", \"ws://{a}\", \"ws://{b}\"]\n\n\
             [[route]]\npath = \"/chat\"\npublic = true\nstrip_prefix = true\n\
             upstream = \"ws://{a}/app\"\n\n\
             [[route]]\npath = \"/live\"\npublic = true\nupstream_path = \"/socket\"\n\
             upstream = \"ws://{b}\"\n"
        ),
    )
    .unwrap();
    assert!(run(dir.path(), &["keygen"]).status.success());
    let check = run(dir.path(), &["check-config"]);
    assert!(check.status.success(), "{check:?}");
    let (_gw, public, admin_addr) = serve(dir.path());

    // Every upgrade succeeds; the dead upstream costs one failed dial, then is passed over.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&public).await.unwrap();
        s.write_all(upgrade("/x", "").as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
        held.push(s);
    }
    assert_eq!((ha.count(), hb.count()), (2, 2), "least connections");
    let (status, listed) = admin(dir.path(), &admin_addr, "GET", "/upstreams").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let find = |k: &str| {
        v["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["upstream"] == k)
            .unwrap()
            .clone()
    };
    assert_eq!(find(&dead)["up"], false);
    assert_eq!(find(&dead)["failures"], 1);
    assert_eq!(find(&a)["open"], 2);

    // Drain `a`: new sockets go to `b` only, and `a`'s open sockets stay.
    let (status, body) = admin(
        dir.path(),
        &admin_addr,
        "POST",
        &format!("/upstreams/{a}/drain"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        assert_eq!(status_of(&public, "/x").await, 101);
    }
    assert_eq!((ha.count(), hb.count()), (2, 5));
    let (_, listed) = admin(dir.path(), &admin_addr, "GET", "/upstreams").await;
    assert!(listed.contains("\"draining\":true"), "{listed}");
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let open_on_a = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == a.as_str())
        .unwrap()["open"]
        .clone();
    assert_eq!(
        open_on_a, 2,
        "the drained upstream's sockets are still open"
    );
    drop(held);

    // The path each upstream is asked for (`a` serves again).
    let (status, _) = admin(
        dir.path(),
        &admin_addr,
        "POST",
        &format!("/upstreams/{a}/undrain"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&public, "/chat/room?x=1").await, 101);
    assert_eq!(ha.target(), "/app/room?x=1");
    assert_eq!(status_of(&public, "/live/a/b?q=1").await, 101);
    assert_eq!(hb.target(), "/socket?q=1");
}

async fn status_of(public: &str, target: &str) -> u16 {
    status(public, &upgrade(target, "")).await
}

#[test]
fn cookie_settings_for_cross_origin_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let write = |sessions: &str| {
        std::fs::write(
            dir.path().join("wsguard.toml"),
            format!(
                "[sessions]\n{sessions}\n\
                 [[route]]\npath = \"/\"\nupstream = \"ws://127.0.0.1:9\"\n"
            ),
        )
        .unwrap();
    };
    assert!(run(dir.path(), &["keygen"]).status.success());
    // The same-site deployment: app.example.com and ws.example.com share example.com.
    write("cookie_domain = \"example.com\"\n");
    let out = run(dir.path(), &["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("warning"), "{text}");
    let issued = run(
        dir.path(),
        &["session", "issue", "--user", "alice", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&issued.stdout).unwrap();
    let set = v["set_cookie"].as_str().unwrap();
    assert!(
        set.contains("Domain=example.com")
            && set.contains("Secure")
            && set.contains("SameSite=Lax"),
        "{set}"
    );
    // Weaker settings are allowed, and said so.
    write("cookie_secure = false\n");
    let out = run(dir.path(), &["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: sessions.cookie_secure = false"),
        "{text}"
    );
    write("cookie_same_site = \"none\"\n");
    let text = String::from_utf8_lossy(&run(dir.path(), &["check-config"]).stdout).into_owned();
    assert!(
        text.contains("warning: sessions.cookie_same_site = \"none\""),
        "{text}"
    );
    // What browsers would refuse, or what is not a domain, is an error naming the key.
    write(
        "cookie_same_site = \"none\"\ncookie_secure = false\ncookie_domain = \".Example.com:443\"\n",
    );
    let out = run(dir.path(), &["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("error: line 2: sessions.cookie_same_site: \"none\" needs"),
        "{text}"
    );
    assert!(
        text.contains("error: line 4: sessions.cookie_domain: must be a domain name"),
        "{text}"
    );
    write("cookie_same_site = \"sometimes\"\n");
    let out = run(dir.path(), &["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("cookie_same_site"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_per_socket_and_per_refusal() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let dir = tempfile::tempdir().unwrap();
    let (echo, echo_addr) = {
        let mut child = bin()
            .current_dir(dir.path())
            .args(["echo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(a) = line.split("listening on ws://").nth(1) {
                break a.trim().to_owned();
            }
        };
        (Proc(child), addr)
    };
    std::fs::write(
        dir.path().join("wsguard.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"{ORIGIN}\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[route]]\npath = \"/\"\nupstream = \"ws://{echo_addr}\"\n"
        ),
    )
    .unwrap();
    assert!(run(dir.path(), &["keygen"]).status.success());
    let token = String::from_utf8(run(dir.path(), &["session", "issue", "--user", "alice"]).stdout)
        .unwrap();
    let log = std::fs::File::create(dir.path().join("log.json")).unwrap();
    let mut child = bin()
        .current_dir(dir.path())
        .args(["--log-format", "json", "serve"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let public = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.split("listening on ws://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let gw = Proc(child);

    let mut req = format!("ws://{public}/room").into_client_request().unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    req.headers_mut().insert(
        "cookie",
        format!("wsguard_session={}", token.trim()).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    for m in ["hello", "world!"] {
        ws.send(Message::Text(m.into())).await.unwrap();
        while !matches!(ws.next().await, Some(Ok(Message::Text(_)))) {}
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    while ws.next().await.is_some() {}
    assert_eq!(status(&public, &upgrade("/room", "")).await, 401);

    // Both lines are written by now or shortly after; poll the log file (bounded).
    let find = |event: &str| -> Option<serde_json::Value> {
        std::fs::read_to_string(dir.path().join("log.json"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["event"] == event)
    };
    let mut closed = None;
    for _ in 0..200 {
        closed = find("socket_closed");
        if closed.is_some() && find("handshake_refused").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let closed = closed.expect("a socket_closed line");
    let f = &closed["fields"];
    assert_eq!(closed["level"], "INFO");
    assert_eq!(f["route"], "/");
    assert_eq!(f["user"], "alice");
    assert_eq!(f["session"].as_str().unwrap().len(), 8);
    assert_eq!(f["client"], "127.0.0.1");
    assert_eq!(f["upstream"], echo_addr.as_str());
    assert_eq!(
        (f["messages_in"].as_u64(), f["bytes_in"].as_u64()),
        (Some(2), Some(11))
    );
    assert_eq!(
        (f["messages_out"].as_u64(), f["bytes_out"].as_u64()),
        (Some(2), Some(11))
    );
    assert_eq!(f["code"], "1000");
    assert_eq!(f["closed_by"], "client");
    assert!(f["duration_ms"].as_u64().is_some());
    let refused = find("handshake_refused").expect("a handshake_refused line");
    assert_eq!(refused["level"], "INFO");
    assert_eq!(refused["fields"]["reason"], "no_credentials");
    assert_eq!(refused["fields"]["status"], 401);
    let all = std::fs::read_to_string(dir.path().join("log.json")).unwrap();
    assert!(!all.contains(token.trim()), "the token is never logged");
    drop((gw, echo));
}

/// A file with a mistake of every kind: syntax, unknown keys, types, values, list entries, and
/// values that do not fit together.
const MANY_MISTAKES: &str = "\
[sessions]
max_age = \"forever\"
colour = \"blue\"
idle_timeout = 30

[gateway]
listen = \"127.0.0.1:0\"
max_headers = \"many\"
allowed_origins = [\"https://ok.example\", \"ftp://bad\", \"https://*\"]
forward_headers = [\"x-forwarded-for\", \"user-agent\", \"cookie\"]

[admin]
listen = \"127.0.0.1:0\"
metrics_require_token = maybe

[[route]]
path = \"/a/../b\"
upstream = \"http://x\"

[[route]]
path = \"/c\"
upstreams = [\"ws://h:1\", \"ws://h:1\"]
publik = true
[route.messages]
max_message_bytes = 0
max_fragments = 0
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_in_one_run_and_the_same_list_on_a_refused_reload() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["keygen"]).status.success());
    std::fs::write(dir.path().join("wsguard.toml"), MANY_MISTAKES).unwrap();
    let out = run(dir.path(), &["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let errors: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .collect();
    for needle in [
        "line 2: sessions.max_age: expected a duration",
        "line 3: sessions.colour: unknown field",
        "line 8: gateway.max_headers: invalid type",
        "line 9: gateway.allowed_origins[1]: \"ftp://bad\": expected an origin",
        "line 9: gateway.allowed_origins[2]: \"https://*\": a wildcard",
        "line 10: gateway.forward_headers[0]: x-forwarded-for is written by wsguard",
        "line 10: gateway.forward_headers[2]: cookie is written by wsguard",
        "line 14: admin.metrics_require_token:",
        "line 17: route[0].path: not in normal form",
        "line 18: route[0].upstream: must be a ws:// or wss:// URL",
        "line 22: route[1].upstreams[1]: h:1 is already in this route's pool",
        "line 23: route[1].publik: unknown field",
        "line 25: route[1].messages.max_message_bytes: must be between 1",
        "line 26: route[1].messages.max_fragments: must be at least 1",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(needle)),
            "missing {needle:?} in\n{text}"
        );
    }
    let lines: Vec<usize> = errors
        .iter()
        .filter_map(|e| e.strip_prefix("line ")?.split(':').next()?.parse().ok())
        .collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "in file order:\n{text}"
    );
    assert!(
        text.contains(&format!("{} problems found", errors.len())),
        "{text}"
    );

    // A running gateway given the same file refuses the reload with the same list.
    std::fs::write(
        dir.path().join("wsguard.toml"),
        "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/\"\nupstream = \"ws://127.0.0.1:9\"\n",
    )
    .unwrap();
    let (_gw, _public, admin_addr) = serve(dir.path());
    std::fs::write(dir.path().join("wsguard.toml"), MANY_MISTAKES).unwrap();
    let (status, body) = admin(dir.path(), &admin_addr, "POST", "/reload").await;
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reload_errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(reload_errors, errors);
}

#[test]
fn check_config_into_a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["keygen"]).status.success());
    std::fs::write(dir.path().join("wsguard.toml"), MANY_MISTAKES).unwrap();
    let mut child = bin()
        .current_dir(dir.path())
        .arg("check-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing: the reader goes away before the report is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_metrics_token_and_refusal_bodies_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wsguard.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"{ORIGIN}\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\nmetrics_require_token = true\n\n\
             [[route]]\npath = \"/\"\nupstream = \"ws://127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    assert!(run(dir.path(), &["keygen"]).status.success());
    let (_gw, public, admin_addr) = serve(dir.path());
    let raw = |addr: String, request: String| async move {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        answer
    };
    // A preflight from the allowed origin, and from another.
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /wsguard/ticket HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        )
    };
    let a = raw(public.clone(), preflight(ORIGIN))
        .await
        .to_ascii_lowercase();
    assert!(a.starts_with("http/1.1 204"), "{a}");
    assert!(
        a.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{a}"
    );
    let a = raw(public.clone(), preflight("https://evil.example"))
        .await
        .to_ascii_lowercase();
    assert!(
        a.starts_with("http/1.1 403") && !a.contains("access-control-allow-origin"),
        "{a}"
    );
    // A refusal says its reason code.
    let a = raw(public.clone(), upgrade("/chat", "Connection: close\r\n")).await;
    assert!(a.contains("unauthenticated: no_credentials"), "{a}");
    // /metrics needs the token when asked to.
    let a = raw(
        admin_addr.clone(),
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    let (status, body) = admin(dir.path(), &admin_addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("wsguard_handshakes_total"), "{body}");
}
