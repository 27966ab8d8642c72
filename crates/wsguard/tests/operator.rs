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
        text.contains("error: sessions.cookie_same_site: \"none\" needs"),
        "{text}"
    );
    assert!(
        text.contains("error: sessions.cookie_domain: must be a domain name"),
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
