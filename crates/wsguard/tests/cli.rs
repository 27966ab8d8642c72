//! The `wsguard` CLI through the real binary: keys, sessions, revocation, persistence, legacy
//! tokens minted by Python's standard library, and configuration errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn with_config(text: &str) -> Env {
        let env = Env::new();
        std::fs::write(env.path("wsguard.toml"), text).unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("wsguard").unwrap();
        c.current_dir(self.dir.path())
            .env_remove("WSGUARD_CONFIG")
            .env_remove("WSGUARD_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }

    fn issue(&self, user: &str) -> String {
        let out = self
            .cmd()
            .args(["session", "issue", "--user", user])
            .assert()
            .success();
        String::from_utf8(out.get_output().stdout.clone())
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Runs `session verify` and returns (exit code, JSON).
    fn verify(&self, token: &str) -> (i32, Value) {
        let out = self.run(&["session", "verify", token]);
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap(), json)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Replaces one character of the token with another from the same alphabet.
fn tamper(token: &str, at: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn issue_verify_tamper_revoke_restart() {
    let env = Env::new();
    env.cmd()
        .arg("keygen")
        .assert()
        .success()
        .stdout(predicate::str::contains("created"));
    let token = env.issue("alice");
    assert!(token.starts_with("v1."), "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "cookie-safe"
    );

    let (code, json) = env.verify(&token);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["valid"], true);
    assert_eq!(json["session"]["uid"], "alice");

    // One character changed anywhere (payload or tag) is refused.
    for at in [token.len() - 1, token.len() - 50, 25] {
        let (code, json) = env.verify(&tamper(&token, at));
        assert_eq!(code, 1, "{json}");
        assert_eq!(json["valid"], false);
        assert!(
            json["reason"] == "session_bad_signature" || json["reason"] == "session_malformed",
            "{json}"
        );
    }

    // Each command is a new process: the session persisted in the embedded store.
    let list: Value =
        serde_json::from_slice(&env.run(&["session", "list", "--user", "alice"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    env.cmd()
        .args(["session", "revoke", &token])
        .assert()
        .success();
    let (code, json) = env.verify(&token);
    assert_eq!(code, 1);
    assert_eq!(json["reason"], "session_revoked");
    assert_eq!(
        json["session"]["uid"], "alice",
        "an authentic token is still decoded"
    );
    let list: Value =
        serde_json::from_slice(&env.run(&["session", "list", "--user", "alice"]).stdout).unwrap();
    assert_eq!(list, Value::Array(vec![]));
}

#[test]
fn revoke_by_sid_and_by_user() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    let a = env.issue("alice");
    let b = env.issue("alice");
    let c = env.issue("carol");
    let sid = env.verify(&a).1["session"]["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    env.cmd()
        .args(["session", "revoke", "--sid", &sid])
        .assert()
        .success();
    assert_eq!(env.verify(&a).1["reason"], "session_revoked");
    assert_eq!(env.verify(&b).0, 0);
    let out = env
        .cmd()
        .args(["session", "revoke", "--user", "alice"])
        .assert()
        .success();
    let json: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["sessions_ended"], 1);
    assert_eq!(env.verify(&b).1["reason"], "session_revoked");
    assert_eq!(env.verify(&c).0, 0, "other users are untouched");
    // Exactly one of the three selectors.
    env.cmd().args(["session", "revoke"]).assert().code(2);
    env.cmd()
        .args(["session", "revoke", "--sid", &sid, "--user", "alice"])
        .assert()
        .code(2);
}

#[test]
fn rotation_keeps_users_logged_in() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    let old = env.issue("alice");
    env.cmd()
        .arg("keygen")
        .assert()
        .success()
        .stdout(predicate::str::contains("rotated"));
    let new = env.issue("alice");
    assert_ne!(old.split('.').nth(1), new.split('.').nth(1), "new key id");
    assert_eq!(env.verify(&old).0, 0, "old key still verifies");
    assert_eq!(env.verify(&new).0, 0);
    // With no grace period, tokens of the replaced key stop verifying at once.
    env.cmd()
        .args(["keygen", "--keep-previous-for", "0s"])
        .assert()
        .success();
    assert_eq!(env.verify(&new).1["reason"], "session_unknown_key");
    assert_eq!(
        env.verify(&old).0,
        0,
        "the first key keeps its own grace period"
    );
}

#[test]
fn keys_never_reach_output_or_logs() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    let text = std::fs::read_to_string(env.path("wsguard-keys.toml")).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap()
        .trim_matches('"');
    assert!(secret.len() >= 43, "≥ 32 bytes");
    for args in [
        vec!["session", "issue", "--user", "bob", "--json"],
        vec!["session", "verify", "v1.x.y.z"],
        vec!["keygen"],
    ] {
        let out = env
            .cmd()
            .args(&args)
            .env("WSGUARD_LOG", "trace")
            .output()
            .unwrap();
        let all = [out.stdout, out.stderr].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains(secret),
            "{args:?} leaked the key"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.path("wsguard-keys.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn short_keys_are_refused() {
    let env = Env::new();
    std::fs::write(
        env.path("wsguard-keys.toml"),
        "[[key]]\nid = \"k1\"\nsecret = \"c2hvcnQtc2VjcmV0\"\n",
    )
    .unwrap();
    env.cmd()
        .args(["session", "issue", "--user", "a"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("32").and(predicate::str::contains("c2hvcnQtc2VjcmV0").not()),
        );
}

#[test]
fn keys_from_environment_variable() {
    let env = Env::with_config("[sessions]\nkeys_env = \"WSGUARD_TEST_KEYS\"\n");
    let keys = env
        .cmd()
        .args(["keygen", "--stdout"])
        .output()
        .unwrap()
        .stdout;
    let keys = String::from_utf8(keys).unwrap();
    assert!(
        !env.path("wsguard-keys.toml").exists(),
        "--stdout writes nothing"
    );
    let out = env
        .cmd()
        .env("WSGUARD_TEST_KEYS", &keys)
        .args(["session", "issue", "--user", "dora"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let verify = env
        .cmd()
        .env("WSGUARD_TEST_KEYS", &keys)
        .args(["session", "verify", token.trim()])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0));
    // Without the variable, the (missing) file is used and its absence is explained.
    env.cmd()
        .args(["session", "verify", token.trim()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("wsguard keygen"));
}

#[test]
fn config_errors_name_the_key() {
    let env = Env::with_config("[sessions]\nidle_timeout = \"soon\"\n");
    env.cmd()
        .args(["session", "list", "--user", "a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("sessions.idle_timeout"));
    let env = Env::with_config("[store]\nbakend = \"sqlite\"\n");
    env.cmd()
        .args(["session", "list", "--user", "a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bakend"));
    let env = Env::new();
    env.cmd()
        .args(["--config", "missing.toml", "keygen"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.toml"));
}

#[test]
fn bad_arguments_are_explained() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    env.cmd()
        .args(["session", "issue", "--user", "a b"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--user"));
    env.cmd()
        .args(["session", "issue", "--user", "a", "--data", "[1]"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--data"));
    env.cmd()
        .args([
            "session",
            "issue",
            "--user",
            "a",
            "--data",
            r#"{"a":1,"a":2}"#,
        ])
        .assert()
        .code(2);
    let long = "x".repeat(5000);
    let (code, json) = env.verify(&long);
    assert_eq!(code, 1);
    assert_eq!(json["reason"], "session_malformed");
}

#[test]
fn help_everywhere() {
    let env = Env::new();
    for args in [
        vec!["--help"],
        vec!["keygen", "--help"],
        vec!["session", "--help"],
        vec!["session", "issue", "--help"],
        vec!["session", "verify", "--help"],
        vec!["session", "revoke", "--help"],
        vec!["session", "list", "--help"],
    ] {
        env.cmd()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage"));
    }
}

// ---- Tokens minted outside wsguard, with Python's standard library only ----

const LEGACY_SECRET: &str = "the-tutorial-secret";

fn python(script: &str, args: &[&str]) -> String {
    let out = StdCommand::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The tutorial's `create_session` + signing, verbatim in spirit: json.dumps with compact
/// separators, then "." and the hex HMAC-SHA256.
const MINT_LEGACY: &str = r#"
import hashlib, hmac, json, secrets, sys
secret, uid, created = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = {"sid": secrets.token_urlsafe(32), "uid": uid, "data": {"theme": "dark"},
        "created": created, "last_active": created}
payload = json.dumps(data, separators=(",", ":"))
sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
print(payload + "." + sig)
"#;

fn legacy_env(accept: bool) -> Env {
    let env = Env::with_config(&format!("[sessions]\naccept_legacy_tokens = {accept}\n"));
    env.cmd().arg("keygen").assert().success();
    let keys = env.path("wsguard-keys.toml");
    let text = std::fs::read_to_string(&keys).unwrap();
    std::fs::write(
        &keys,
        format!("legacy_secret = \"{LEGACY_SECRET}\"\n{text}"),
    )
    .unwrap();
    env
}

#[test]
fn legacy_token_minted_by_python() {
    let env = legacy_env(true);
    let token = python(MINT_LEGACY, &[LEGACY_SECRET, "alice", &now().to_string()]);
    assert!(token.starts_with("{\"sid\":"), "{token}");
    let (code, json) = env.verify(&token);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["session"]["format"], "legacy");
    assert_eq!(json["session"]["data"]["theme"], "dark");

    // Tampered: one character of the payload (the uid) changed.
    let forged = token.replacen("\"uid\":\"alice\"", "\"uid\":\"alicf\"", 1);
    let (code, json) = env.verify(&forged);
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("session_bad_signature"))
    );
    // Wrong secret.
    let other = python(
        MINT_LEGACY,
        &["another-secret", "alice", &now().to_string()],
    );
    assert_eq!(env.verify(&other).1["reason"], "session_bad_signature");
    // Old: past max_age (12 h by default).
    let old = python(
        MINT_LEGACY,
        &[LEGACY_SECRET, "alice", &(now() - 13 * 3600).to_string()],
    );
    assert_eq!(env.verify(&old).1["reason"], "session_expired");
    // Adopted into the store on first use, so it can be revoked like any session.
    env.cmd()
        .args(["session", "revoke", &token])
        .assert()
        .success();
    assert_eq!(env.verify(&token).1["reason"], "session_revoked");

    // Option off (the default): refused even though the secret is known.
    let off = legacy_env(false);
    let fresh = python(MINT_LEGACY, &[LEGACY_SECRET, "alice", &now().to_string()]);
    let (code, json) = off.verify(&fresh);
    assert_eq!(
        (code, json["reason"].as_str()),
        (1, Some("session_malformed")),
        "{json}"
    );
    assert!(
        json["detail"].as_str().unwrap().contains("legacy"),
        "{json}"
    );
}

#[test]
fn legacy_option_needs_a_secret() {
    let env = Env::with_config("[sessions]\naccept_legacy_tokens = true\n");
    env.cmd().arg("keygen").assert().success();
    env.cmd()
        .args(["session", "verify", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("legacy_secret"));
}

/// docs/TOKEN_FORMAT.md promises that any backend can mint v1 tokens: do it in Python and let
/// the binary judge them, including the lifetime boundaries.
const MINT_V1: &str = r#"
import base64, hashlib, hmac, json, sys
kid, secret_b64, uid, created, last_active = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = base64.urlsafe_b64decode(secret_b64 + "=" * (-len(secret_b64) % 4))
sid = b64(bytes(range(16)))
payload = json.dumps({"sid": sid, "uid": uid, "data": {}, "created": created, "last_active": last_active}, separators=(",", ":"))
head = "v1." + kid + "."
tag = hmac.new(key, head.encode() + payload.encode(), hashlib.sha256).digest()
print(head + b64(payload.encode()) + "." + b64(tag))
"#;

#[test]
fn v1_token_minted_by_python_in_stateless_mode() {
    let env = Env::with_config(
        "[sessions]\nmode = \"stateless\"\nmax_age = \"1h\"\nidle_timeout = \"10m\"\n",
    );
    env.cmd().arg("keygen").assert().success();
    let text = std::fs::read_to_string(env.path("wsguard-keys.toml")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    let (kid, secret) = (field("id"), field("secret"));
    let mint = |created: u64, last: u64| {
        python(
            MINT_V1,
            &[
                &kid,
                &secret,
                "py-user",
                &created.to_string(),
                &last.to_string(),
            ],
        )
    };
    let t = now();
    assert_eq!(env.verify(&mint(t - 60, t - 60)).0, 0);
    assert_eq!(
        env.verify(&mint(t - 7200, t - 60)).1["reason"],
        "session_expired"
    );
    assert_eq!(
        env.verify(&mint(t - 1800, t - 1200)).1["reason"],
        "session_idle"
    );
    assert_eq!(
        env.verify(&mint(t + 3600, t + 3600)).1["reason"],
        "session_issued_in_future"
    );
    assert_eq!(
        env.verify(&mint(t - 60, t - 61)).1["reason"],
        "session_malformed",
        "last_active < created"
    );
    // Revocation in stateless mode: a tombstone, then a user marker.
    let token = mint(t - 60, t - 60);
    env.cmd()
        .args(["session", "revoke", &token])
        .assert()
        .success();
    assert_eq!(env.verify(&token).1["reason"], "session_revoked");
    let other = env.issue("zoe");
    assert_eq!(env.verify(&other).0, 0);
    env.cmd()
        .args(["session", "revoke", "--user", "zoe"])
        .assert()
        .success();
    assert_eq!(env.verify(&other).1["reason"], "session_revoked");
}

#[test]
fn store_file_is_shared_and_private() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    env.issue("alice");
    let db: &Path = &env.path("wsguard-sessions.db");
    assert!(db.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(db).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn check_config_explains_every_error() {
    // The README's example configuration is valid (once its key file exists).
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a toml block");
    let env = Env::with_config(example);
    env.cmd().arg("keygen").assert().success();
    env.cmd()
        .arg("check-config")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "wsguard.toml: ok (1 route, stateful mode, sqlite store)",
        ));

    // Several problems at once: each is named, with its key.
    let env = Env::with_config(
        "[sessions]\nidle_timeout = 30\n\n[gateway]\nallowed_origins = [\"https://ok.example\", \"ftp://x\"]\n\
         max_headers = 2\nticket_ttl = \"1m\"\nhandshake_rate_per_ip = { per_second = 0 }\n\n[[route]]\npath = \"chat\"\nupstream = \"ws://127.0.0.1:1\"\n\n\
         [[route]]\npath = \"/b\"\nupstream = \"http://127.0.0.1:1\"\n\n\
         [[route]]\npath = \"/c\"\nupstream = \"wss://localhost:1\"\nupstream_ca = \"missing-ca.pem\"\n",
    );
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "sessions.touch_interval",
        "gateway.allowed_origins",
        "gateway.max_headers",
        "gateway.ticket_ttl",
        "gateway.handshake_rate_per_ip",
        "route[0].path",
        "route[1].upstream",
        "sessions.keys_file",
    ] {
        assert!(
            text.contains(&format!("error: {key}")) || text.contains(key),
            "{key} missing in:\n{text}"
        );
    }
    assert!(text.contains("problems found"), "{text}");

    // Files named by the configuration are read: a missing CA and a missing certificate.
    let env = Env::with_config(
        "[gateway]\nallowed_origins = [\"https://ok.example\"]\n[gateway.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"wss://localhost:1\"\nupstream_ca = \"missing-ca.pem\"\n",
    );
    env.cmd().arg("keygen").assert().success();
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("error: route[0].upstream_ca: cannot read"),
        "{text}"
    );
    assert!(
        text.contains("error: gateway.tls.cert: cannot read"),
        "{text}"
    );
    assert!(text.contains("2 problems found"), "{text}");

    // A TOML syntax error names the line.
    let env = Env::with_config("[gateway]\nlisten = \n");
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("line 2"));
}

#[test]
fn connect_help_documents_its_exit_statuses() {
    let env = Env::new();
    let out = env.run(&["connect", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for status in [
        "Exit status:",
        "  0  closed normally",
        "  2  usage",
        "  3  the server closed",
        "  4  the server refused",
    ] {
        assert!(help.contains(status), "{status:?} missing in:\n{help}");
    }
}

/// Each cause of an error is said once (anyhow's chain printed whole used to repeat it).
#[test]
fn errors_say_each_cause_once() {
    let env = Env::new();
    let out = env.run(&["echo", "--listen", "192.0.2.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on 192.0.2.1:1"), "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    let out = env.run(&["connect", "ws://127.0.0.1:1/"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}

/// A listener that cannot bind names its key and the flag that overrides it, and says the OS
/// error once.
#[test]
fn a_bind_failure_names_the_key_and_the_flag() {
    let env = Env::with_config(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"https://a.example\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\nupstream = \"ws://127.0.0.1:1\"\n",
    );
    env.cmd().arg("keygen").assert().success();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (flag, key) in [
        ("--listen", "gateway.listen"),
        ("--admin-listen", "admin.listen"),
    ] {
        let out = env.run(&["serve", flag, &taken]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{key}: cannot listen on {taken}")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("with {flag} ADDR or {key}")),
            "{stderr}"
        );
        assert_eq!(
            stderr.matches("Address already in use").count(),
            1,
            "said once: {stderr}"
        );
    }
}

/// `serve` checks the whole configuration before it creates any file: a refused start leaves
/// the directory as it was (no admin token, no session database).
#[test]
fn serve_creates_no_file_before_the_configuration_is_checked() {
    let env = Env::new();
    let out = env.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Both problems at once: no route, no key file.
    assert!(stderr.contains("no [[route]] configured"), "{stderr}");
    assert!(stderr.contains("wsguard keygen"), "{stderr}");
    env.cmd().arg("keygen").assert().success();
    let out = env.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let files: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        ["wsguard-keys.toml"],
        "files left by a refused start"
    );
}

/// Without a file, `check-config` checks the built-in defaults (as the other commands use
/// them) and says so; a file may be named as a positional argument.
#[test]
fn check_config_without_a_file_checks_the_defaults() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    let out = env.run(&["check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(
            "no wsguard.toml in the working directory: checking the built-in defaults\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("cannot read"), "{stdout}");
    // The defaults have no route: `serve` would refuse them, so does check-config.
    assert!(stdout.contains("error: route: no [[route]]"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));

    std::fs::write(
        env.path("other.toml"),
        "[gateway]\nallowed_origins = [\"https://a.example\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"ws://127.0.0.1:1\"\n",
    )
    .unwrap();
    env.cmd()
        .args(["check-config", "other.toml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("other.toml: ok (1 route"));
    env.cmd()
        .args(["check-config", "missing.toml"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("cannot read missing.toml"));
    env.cmd()
        .args(["--config", "other.toml", "check-config", "missing.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("two files given"));
}

/// An address left unquoted (TOML reads `127.0.0.1:8080` as a broken float) is explained:
/// the key, and that it needs quotes.
#[test]
fn an_unquoted_address_is_explained() {
    let env = Env::with_config("[gateway]\nlisten = 127.0.0.1:8080\n");
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "line 2: gateway.listen: not a TOML value: text (addresses, URLs, paths) must be in \
             double quotes: listen = \"...\""
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("float"), "{stdout}");
    env.cmd()
        .args(["session", "list", "--user", "a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("gateway.listen: not a TOML value"));
}
