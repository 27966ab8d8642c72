//! `wsguard serve` and `wsguard echo` through the real binary: a browser-like client with a
//! cookie from `wsguard session issue`, a foreign origin refused, a CLI revoke closing the live
//! socket (through the admin API, and through the shared SQLite store when the API is out of
//! reach), SIGHUP reloading a good file and refusing a bad one without dropping the live socket,
//! a key rotation closing the sockets of the key it retires only, and SIGTERM closing sockets
//! with 1001 and exiting 0, silent clients held to the default pending-handshake limit, and no
//! token, ticket, admin token or key in the gateway's trace logs (and warnings for secret files
//! that others can read).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ORIGIN: &str = "https://app.example.com";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("wsguard"));
    c.env_remove("WSGUARD_CONFIG");
    c
}

/// Starts a long-running subcommand and returns it with the first address it prints.
fn spawn(dir: &std::path::Path, args: &[&str], marker: &str) -> (Proc, String) {
    start(
        bin().current_dir(dir).args(args).stderr(Stdio::null()),
        marker,
    )
}

/// Starts `cmd` and returns it with the first address it prints after `marker`.
fn start(cmd: &mut Command, marker: &str) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if let Some(rest) = line.split(marker).nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts an echo backend and writes, in `dir`, keys and the configuration of a gateway in front
/// of it (one public-origin route, admin API on `admin_port`). Returns the echo process.
fn setup(dir: &std::path::Path, admin_port: u16) -> Proc {
    let (echo, echo_addr) = spawn(
        dir,
        &["echo", "--listen", "127.0.0.1:0"],
        "listening on ws://",
    );
    std::fs::write(
        dir.join("wsguard.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"{ORIGIN}\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n[[route]]\npath = \"/\"\nupstream = \"ws://{echo_addr}\"\n"
        ),
    )
    .unwrap();
    run(dir, &["keygen"]);
    echo
}

fn run(dir: &std::path::Path, args: &[&str]) -> String {
    let out = bin().current_dir(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn connect(
    addr: &str,
    origin: &str,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{addr}/chat").into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    req.headers_mut().insert(
        "cookie",
        format!("wsguard_session={token}").parse().unwrap(),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn close_code<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

fn signal(pid: i32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls the admin API's /metrics until `needle` appears (a state, not a timing: bounded at
/// 10 s so a broken build fails instead of hanging).
async fn wait_for_metric(admin_port: u16, needle: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body).await;
        if body.lines().any(|l| l == needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metric {needle} never appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    // The CLI finds the running gateway's admin API through the shared config: give it a port.
    let admin_port = free_port();
    let _echo = setup(dir.path(), admin_port);
    // On one thread (the benchmark's setting): revocation, reload and shutdown still work.
    let (mut gateway, addr) = spawn(
        dir.path(),
        &["serve", "--threads", "1"],
        "wsguard listening on ws://",
    );

    let token = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let mut ws = connect(&addr, ORIGIN, &token).await.expect("accepted");
    ws.send(Message::text("hello")).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), "hello"),
        other => panic!("{other:?}"),
    }
    match connect(&addr, "https://evil.example.net", &token).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("foreign origin: {:?}", other.map(|_| ())),
    }

    // Revoked from the CLI (another process), through the gateway's admin API: the live socket
    // closes with 1008.
    let out = bin()
        .current_dir(dir.path())
        .args(["session", "revoke", &token])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("through the running gateway"));
    assert_eq!(close_code(&mut ws).await, (1008, "session revoked".into()));
    match connect(&addr, ORIGIN, &token).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("revoked cookie: {:?}", other.map(|_| ())),
    }

    let token = run(dir.path(), &["session", "issue", "--user", "bob"]);
    let mut ws = connect(&addr, ORIGIN, &token).await.expect("accepted");
    ws.send(Message::text("x")).await.unwrap();
    let _ = ws.next().await;
    let pid = i32::try_from(gateway.0.id()).unwrap();

    // SIGHUP reloads the file: a new origin is allowed, the live socket stays.
    const NEW: &str = "https://new.example.org";
    let config = std::fs::read_to_string(dir.path().join("wsguard.toml")).unwrap();
    std::fs::write(
        dir.path().join("wsguard.toml"),
        config.replace(
            &format!("[\"{ORIGIN}\"]"),
            &format!("[\"{ORIGIN}\", \"{NEW}\"]"),
        ),
    )
    .unwrap();
    assert!(connect(&addr, NEW, &token).await.is_err());
    signal(pid, "-HUP");
    wait_for_metric(admin_port, r#"wsguard_reloads_total{outcome="applied"} 1"#).await;
    assert!(
        connect(&addr, NEW, &token).await.is_ok(),
        "new origin after SIGHUP"
    );
    ws.send(Message::text("after reload")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(t))) if t.as_str() == "after reload"));
    // A broken file is refused; the configuration in force stays.
    std::fs::write(
        dir.path().join("wsguard.toml"),
        config.replace(&format!("[\"{ORIGIN}\"]"), "[\"not an origin\"]"),
    )
    .unwrap();
    signal(pid, "-HUP");
    wait_for_metric(admin_port, r#"wsguard_reloads_total{outcome="refused"} 1"#).await;
    assert!(
        connect(&addr, NEW, &token).await.is_ok(),
        "old config still in force"
    );
    let out = bin()
        .current_dir(dir.path())
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gateway.allowed_origins"));

    // SIGTERM: sockets get 1001, the process exits 0.
    signal(pid, "-TERM");
    assert_eq!(close_code(&mut ws).await.0, 1001);
    let exit = tokio::task::spawn_blocking(move || gateway.0.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// Key rotation through the real binary: a rotation (`wsguard keygen`) and SIGHUP keep every live
/// socket; a rotation that ends the previous key at once (`--keep-previous-for 0s`) and SIGHUP
/// close the sockets of that key's tokens with 1008 "session key retired", and keep the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_closes_the_sockets_of_retired_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let _echo = setup(dir.path(), admin_port);
    let (gateway, addr) = spawn(dir.path(), &["serve"], "wsguard listening on ws://");
    let pid = i32::try_from(gateway.0.id()).unwrap();

    // Alice's token is signed by the first key.
    let alice = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let mut ws_alice = connect(&addr, ORIGIN, &alice).await.expect("alice");
    // A rotation: the first key becomes verify-only; Bob's token is signed by the second.
    run(dir.path(), &["keygen"]);
    signal(pid, "-HUP");
    wait_for_metric(admin_port, r#"wsguard_reloads_total{outcome="applied"} 1"#).await;
    let bob = run(dir.path(), &["session", "issue", "--user", "bob"]);
    let mut ws_bob = connect(&addr, ORIGIN, &bob).await.expect("bob");
    for ws in [&mut ws_alice, &mut ws_bob] {
        ws.send(Message::text("after rotation")).await.unwrap();
        assert!(
            matches!(ws.next().await, Some(Ok(Message::Text(t))) if t.as_str() == "after rotation")
        );
    }

    // Another rotation that ends the second key at once: Bob's socket closes, Alice's stays.
    run(dir.path(), &["keygen", "--keep-previous-for", "0s"]);
    signal(pid, "-HUP");
    wait_for_metric(admin_port, r#"wsguard_reloads_total{outcome="applied"} 2"#).await;
    assert_eq!(
        close_code(&mut ws_bob).await,
        (1008, "session key retired".into())
    );
    match connect(&addr, ORIGIN, &bob).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("token of a retired key: {:?}", other.map(|_| ())),
    }
    ws_alice.send(Message::text("still here")).await.unwrap();
    assert!(
        matches!(ws_alice.next().await, Some(Ok(Message::Text(t))) if t.as_str() == "still here")
    );
    wait_for_metric(
        admin_port,
        r#"wsguard_closes_total{code="1008",reason="key_retired"} 1"#,
    )
    .await;
}

/// A revoke from the CLI that cannot reach the gateway's admin API (here: no admin-token file)
/// writes the shared SQLite store; the gateway's poller of the store's revocation log closes the
/// live socket with 1008 and refuses the cookie from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_written_to_the_store_by_another_process_closes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let _echo = setup(dir.path(), free_port());
    let (_gateway, addr) = spawn(dir.path(), &["serve"], "wsguard listening on ws://");
    let token = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let mut ws = connect(&addr, ORIGIN, &token).await.expect("accepted");
    ws.send(Message::text("hello")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(t))) if t.as_str() == "hello"));

    // The admin token the gateway created is readable by its owner only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(dir.path().join("wsguard-admin-token")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    // The gateway read its admin token at start; without the file the CLI cannot use the API.
    std::fs::remove_file(dir.path().join("wsguard-admin-token")).unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["session", "revoke", "--user", "alice"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("through the running gateway"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""sessions_ended":1"#));

    assert_eq!(close_code(&mut ws).await, (1008, "session revoked".into()));
    match connect(&addr, ORIGIN, &token).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("revoked cookie: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_held_to_the_default_pending_limit() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let _echo = setup(dir.path(), admin_port);
    let (_gateway, addr) = spawn(dir.path(), &["serve"], "wsguard listening on ws://");
    // Slowloris from one address: connections that never send their request. The default
    // `max_pending_handshakes_per_ip` (64) holds them; the next one is refused unread.
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let mut b = [0u8; 1];
    let last = silent.last_mut().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), last.read(&mut b))
            .await
            .is_err(),
        "the 64th silent connection was not held"
    );
    let mut refused = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_string(&mut answer))
        .await
        .expect("refused at once")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    wait_for_metric(
        admin_port,
        r#"wsguard_handshakes_total{outcome="refused",reason="too_many_pending_from_client"} 1"#,
    )
    .await;
    // When one of them goes, a real client gets its place.
    drop(silent.pop());
    let token = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let mut ws = None;
    for _ in 0..100 {
        if let Ok(w) = connect(&addr, ORIGIN, &token).await {
            ws = Some(w);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ws = ws.expect("a place came back");
    ws.send(Message::text("hello")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(t))) if t.as_str() == "hello"));
}

/// One HTTP/1.1 request on a fresh connection; returns the whole answer.
async fn http(addr: &str, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    answer
}

/// A string field of the JSON body of an HTTP answer.
fn json_field(answer: &str, field: &str) -> String {
    let (_, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    json[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_trace_logs_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let _echo = setup(dir.path(), admin_port);
    let log = dir.path().join("serve.log");
    let (gateway, addr) = start(
        bin()
            .current_dir(dir.path())
            .arg("serve")
            .env("WSGUARD_LOG", "trace")
            .stderr(std::fs::File::create(&log).unwrap()),
        "wsguard listening on ws://",
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let key_secret = read("wsguard-keys.toml")
        .lines()
        .find_map(|l| {
            l.strip_prefix("secret = ")
                .map(|s| s.trim_matches('"').to_owned())
        })
        .unwrap();
    let admin_token = read("wsguard-admin-token").trim().to_owned();

    // An accepted cookie, a tampered one, a ticket issued and redeemed.
    let token = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let mut ws = connect(&addr, ORIGIN, &token).await.expect("accepted");
    ws.send(Message::text("hello")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    let last = token.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &token[..token.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    assert!(connect(&addr, ORIGIN, &tampered).await.is_err());
    let answer = http(
        &addr,
        format!(
            "POST /wsguard/ticket HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
             Cookie: wsguard_session={token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    let ticket = json_field(&answer, "ticket");
    let mut req = format!("ws://{addr}/chat?ticket={ticket}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    let (_by_ticket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ticket redeemed");
    // The admin API: a session issued (its token and cookie come back), a wrong bearer.
    let body = r#"{"user":"bob"}"#;
    let issued = http(
        &admin,
        format!(
            "POST /sessions HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {admin_token}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let bob = json_field(&issued, "token");
    let wrong = http(
        &admin,
        "GET /users/bob/sessions HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer not-the-token\r\n\
         Connection: close\r\n\r\n"
            .to_owned(),
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    // A revoke through the admin API closes alice's socket.
    run(dir.path(), &["session", "revoke", "--user", "alice"]);
    assert_eq!(close_code(&mut ws).await, (1008, "session revoked".into()));
    drop(gateway);

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("handshake_refused") && logged.contains("DEBUG"),
        "the filter let debug events through:\n{logged}"
    );
    for (what, secret) in [
        ("the session token", token.as_str()),
        ("the tampered token", tampered.as_str()),
        ("the token's signature", token.rsplit('.').next().unwrap()),
        ("the ticket", ticket.as_str()),
        ("the token issued by the admin API", bob.as_str()),
        ("the admin token", admin_token.as_str()),
        ("the key", key_secret.as_str()),
    ] {
        assert!(!logged.contains(secret), "{what} is in the gateway's log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let _echo = setup(dir.path(), free_port());
    let token_file = dir.path().join("wsguard-admin-token");
    std::fs::write(&token_file, "t".repeat(40)).unwrap();
    for file in [&token_file, &dir.path().join("wsguard-keys.toml")] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let log = dir.path().join("serve.log");
    let (gateway, _) = start(
        bin()
            .current_dir(dir.path())
            .arg("serve")
            .stderr(std::fs::File::create(&log).unwrap()),
        "wsguard listening on ws://",
    );
    drop(gateway);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("beyond loopback"),
        "an admin API on loopback is not warned about:\n{logged}"
    );
    for (file, path) in [
        ("admin token file", "wsguard-admin-token"),
        ("key file", "wsguard-keys.toml"),
    ] {
        assert!(
            logged.lines().any(|l| l.contains("WARN")
                && l.contains("readable by other users")
                && l.contains(&format!("file=\"{file}\""))
                && l.contains(path)),
            "no warning for the {file}:\n{logged}"
        );
    }
}

// ---- `wsguard connect` (issue 16, defect 1): it ends when the socket ends ----

/// A running `wsguard connect`: its stdin is a pipe the test holds open (an idle terminal) until
/// `end_stdin`; its stdout and stderr lines arrive on channels.
struct Client {
    proc: Proc,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

/// How long a client may take to notice a close and exit: generous, so only a hang fails.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// The lines of `from`, on a channel (a thread reads them).
fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

impl Client {
    /// Starts `wsguard connect ARGS` in `dir`.
    fn start(dir: &std::path::Path, args: &[&str]) -> Client {
        let mut child = bin()
            .current_dir(dir)
            .arg("connect")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Client {
            stdin: child.stdin.take(),
            stdout: lines_of(child.stdout.take().unwrap()),
            stderr: lines_of(child.stderr.take().unwrap()),
            proc: Proc(child),
        }
    }

    /// The stderr lines until one contains `needle` (panics after 10 s or at the end).
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.stderr.recv_timeout(EXIT_WAIT) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!("no {needle:?} on stderr ({e}): {seen:?}"),
            }
        }
    }

    /// Types a line.
    fn send(&mut self, line: &str) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line printed on stdout (at most 10 s).
    fn received(&self) -> String {
        self.stdout.recv_timeout(EXIT_WAIT).unwrap()
    }

    /// Ctrl-D.
    fn end_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits (polling, at most 10 s) for the process to exit by itself; returns its exit code
    /// and the rest of its stderr.
    fn exit(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + EXIT_WAIT;
        let status = loop {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`wsguard connect` still running {EXIT_WAIT:?} after the close (stderr: {:?})",
                self.stderr.try_iter().collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr: Vec<String> = self.stderr.iter().collect();
        (status.code(), stderr.join("\n"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_exits_with_3_when_its_session_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let _echo = setup(dir.path(), admin_port);
    let (_gateway, addr) = spawn(dir.path(), &["serve"], "wsguard listening on ws://");
    let token = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let url = format!("ws://{addr}/chat");
    let client = Client::start(dir.path(), &[&url, "--token", &token, "--origin", ORIGIN]);
    client.wait_for("connected");

    run(dir.path(), &["session", "revoke", "--user", "alice"]);
    let (code, stderr) = client.exit();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("1008") && stderr.contains("session revoked"),
        "{stderr}"
    );
}

#[test]
fn connect_exits_with_4_when_the_handshake_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _echo = setup(dir.path(), free_port());
    let (_gateway, addr) = spawn(dir.path(), &["serve"], "wsguard listening on ws://");
    let token = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let url = format!("ws://{addr}/chat");
    let foreign = ["--token", &token, "--origin", "https://evil.example.net"];
    let client = Client::start(dir.path(), &[&[url.as_str()][..], &foreign].concat());
    let (code, stderr) = client.exit();
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    // Not a WebSocket URL: a usage error (2), said once.
    let client = Client::start(dir.path(), &[&format!("http://{addr}/chat")]);
    let (code, stderr) = client.exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("must start with ws:// or wss://"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("not supported").count(), 0, "{stderr}");
}

/// The client answers the server's close frame (so a server's drain does not wait for it) and
/// exits with 3 for a close other than 1000, 0 for 1000. The server is the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_answers_the_close_and_exits_by_its_code() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let dir = tempfile::tempdir().unwrap();
    for (code, reason, exit) in [
        (CloseCode::Policy, "policy says no", 3),
        (CloseCode::Away, "going away", 3),
        (CloseCode::Normal, "bye", 0),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let client = Client::start(dir.path(), &[&url]);
        let (tcp, _) = tokio::time::timeout(EXIT_WAIT, listener.accept())
            .await
            .expect("the client connects")
            .unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        client.wait_for("connected");
        ws.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
        .unwrap();
        let answer = tokio::time::timeout(EXIT_WAIT, ws.next())
            .await
            .expect("the client answers the close in time");
        assert!(
            matches!(answer, Some(Ok(Message::Close(_)))),
            "{code}: no close frame in answer: {answer:?}"
        );
        let (status, stderr) = tokio::task::spawn_blocking(move || client.exit())
            .await
            .unwrap();
        assert_eq!(status, Some(exit), "{code}: {stderr}");
        assert!(
            stderr.contains(&format!("{} {reason}", u16::from(code))),
            "{stderr}"
        );
    }
}

/// At the end of stdin the client closes with 1000, gets the answer and exits 0. (The reply to
/// a line is awaited before stdin ends: the gateway answers a client's close at once, so an
/// echo still on its way from the upstream would not be relayed.)
#[test]
fn connect_closes_normally_at_the_end_of_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let _echo = setup(dir.path(), free_port());
    let (_gateway, addr) = spawn(dir.path(), &["serve"], "wsguard listening on ws://");
    let token = run(dir.path(), &["session", "issue", "--user", "alice"]);
    let url = format!("ws://{addr}/chat");
    let mut client = Client::start(dir.path(), &[&url, "--token", &token, "--origin", ORIGIN]);
    client.send("hello");
    assert_eq!(client.received(), "hello");
    client.end_stdin();
    let (code, stderr) = client.exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("did not answer"), "{stderr}");
}
