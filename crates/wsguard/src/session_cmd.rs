//! `wsguard session …`: issue, verify, revoke and list sessions from the command line.
//!
//! Owns the argument shapes and the JSON printed for each command. Decisions are made by
//! `wsguard-session`; this module only prints them. Tokens are printed only where the user asked
//! for one (`issue`); secrets never.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use wsguard_session::{AuthError, Sessions};
use wsguard_store::SessionRecord;
use wsguard_token::{Claims, Format, SessionData, SessionId, UserId};

use crate::config::{Backend, Config};
use crate::{now, open_sessions};

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session for a user and print its cookie value.
    Issue(IssueArgs),
    /// Check a token: print the verdict and the decoded session as JSON.
    /// Exit status 0 if valid, 1 if not (with the reason), 2 on error.
    Verify(VerifyArgs),
    /// Revoke one session (by id or by token) or every session of a user.
    Revoke(RevokeArgs),
    /// List a user's live sessions as JSON.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// User id (1 to 128 printable ASCII characters, no spaces).
    #[arg(long)]
    user: String,
    /// Session data: a JSON object (at most 2048 bytes).
    #[arg(long, default_value = "{}")]
    data: String,
    /// Print a JSON object (token, session id, expiry, Set-Cookie header) instead of the bare token.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token (cookie value).
    token: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["sid", "user", "token"])))]
pub struct RevokeArgs {
    /// Session id to revoke.
    #[arg(long)]
    sid: Option<String>,
    /// Revoke every session of this user.
    #[arg(long)]
    user: Option<String>,
    /// A token whose session to revoke.
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// User id.
    #[arg(long)]
    user: String,
}

pub async fn run(config: &Config, cmd: SessionCommand) -> anyhow::Result<ExitCode> {
    if config.store.backend == Backend::Memory && !matches!(cmd, SessionCommand::Verify(_)) {
        bail!(
            "store.backend = \"memory\": sessions live inside one gateway process, so the CLI \
             cannot reach them; use backend = \"sqlite\""
        );
    }
    let sessions = open_sessions(config)?;
    let now = now();
    match cmd {
        SessionCommand::Issue(a) => issue(config, &sessions, a, now).await,
        SessionCommand::Verify(a) => verify(&sessions, &a.token, now).await,
        SessionCommand::Revoke(a) => revoke(config, &sessions, a, now).await,
        SessionCommand::List(a) => list(&sessions, &a.user).await,
    }
}

fn parse_user(s: &str) -> anyhow::Result<UserId> {
    UserId::parse(s).map_err(|e| anyhow::anyhow!("--user: {e}"))
}

async fn issue(
    config: &Config,
    sessions: &Sessions,
    a: IssueArgs,
    now: u64,
) -> anyhow::Result<ExitCode> {
    let uid = parse_user(&a.user)?;
    let data = SessionData::parse_for_issue(&a.data).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    let issued = sessions
        .issue(uid, data, now)
        .await
        .context("cannot store the session")?;
    if a.json {
        let max_age = config.sessions.max_age.as_secs();
        let set_cookie = wsguard_gateway::cookie::set_cookie(
            &config.sessions.cookie_name,
            &issued.token,
            max_age,
            &config.cookie_attributes(),
        );
        let out = json!({
            "token": issued.token,
            "sid": issued.claims.sid.as_str(),
            "uid": issued.claims.uid.as_str(),
            "expires_at": issued.expires_at,
            "set_cookie": set_cookie,
        });
        println!("{out}");
    } else {
        println!("{}", issued.token);
    }
    Ok(ExitCode::SUCCESS)
}

fn claims_json(c: &Claims, format: &Format, max_age: u64) -> Value {
    let (format, key_id) = match format {
        Format::V1 { key_id } => ("v1", Some(key_id.as_str().to_owned())),
        Format::Legacy => ("legacy", None),
    };
    json!({
        "sid": c.sid.as_str(),
        "uid": c.uid.as_str(),
        "data": c.data.to_value(),
        "created": c.created,
        "last_active": c.last_active,
        "expires_at": c.created.saturating_add(max_age),
        "format": format,
        "key_id": key_id,
    })
}

async fn verify(sessions: &Sessions, token: &str, now: u64) -> anyhow::Result<ExitCode> {
    let max_age = sessions.verifier().policy().max_age;
    match sessions.authenticate(token.trim(), now).await {
        Ok(s) => {
            let mut session = claims_json(s.claims(), s.format(), max_age);
            session["last_active"] = json!(s.last_active());
            println!("{}", json!({ "valid": true, "session": session }));
            Ok(ExitCode::SUCCESS)
        }
        Err(AuthError::Rejected(r)) => {
            // Show what the token says if it is at least authentic; never echo the token.
            let session = sessions
                .verifier()
                .verify_signature(token.trim(), now)
                .ok()
                .map(|t| claims_json(t.claims(), t.format(), max_age));
            println!(
                "{}",
                json!({ "valid": false, "reason": r.code(), "detail": r.detail(), "session": session })
            );
            Ok(ExitCode::from(1))
        }
        Err(AuthError::Store(e)) => Err(e).context("session store unavailable (failing closed)"),
    }
}

/// What to revoke.
enum Target {
    Session(SessionId),
    User(UserId),
}

async fn revoke(
    config: &Config,
    sessions: &Sessions,
    a: RevokeArgs,
    now: u64,
) -> anyhow::Result<ExitCode> {
    let target = if let Some(sid) = a.sid {
        Target::Session(SessionId::parse(&sid).map_err(|e| anyhow::anyhow!("--sid: {e}"))?)
    } else if let Some(user) = a.user {
        Target::User(parse_user(&user)?)
    } else if let Some(token) = a.token {
        match sessions.verifier().verify_signature(token.trim(), now) {
            Ok(t) => Target::Session(t.into_claims().sid),
            Err(r) => bail!("cannot revoke: the token is not authentic ({})", r.code()),
        }
    } else {
        bail!("give --sid, --user or a token");
    };
    // A running gateway revokes and closes its live sockets at once; without one, the store is
    // written directly (a gateway started later, or polling the same store, still sees it).
    let path = match &target {
        Target::Session(sid) => format!("/sessions/{}", sid.as_str()),
        Target::User(uid) => format!("/users/{}/sessions", uid.as_str()),
    };
    if let Some(body) = admin::request(config, "DELETE", &path).await? {
        eprintln!(
            "revoked through the running gateway at {} (live sockets closed)",
            config.admin.listen
        );
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let out = match target {
        Target::Session(sid) => {
            let uid = sessions.revoke_session(&sid, now).await?;
            json!({ "revoked": "session", "sid": sid.as_str(), "uid": uid.as_ref().map(UserId::as_str), "was_live": uid.is_some() })
        }
        Target::User(uid) => {
            let n = sessions.revoke_user(&uid, now).await?;
            json!({ "revoked": "user", "uid": uid.as_str(), "sessions_ended": n })
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// A minimal client of the local gateway's admin API.
mod admin {
    use std::time::Duration;

    use anyhow::{Context, bail};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zeroize::Zeroizing;

    use crate::config::Config;

    /// Sends a request to the admin API if a gateway is listening there. `Ok(None)`: no gateway
    /// (nothing listens, or no admin token file), use the store directly.
    pub async fn request(
        config: &Config,
        method: &str,
        path: &str,
    ) -> anyhow::Result<Option<String>> {
        let Ok(token) = std::fs::read_to_string(&config.admin.token_file) else {
            return Ok(None);
        };
        let token = Zeroizing::new(token.trim().to_owned());
        let addr = config.admin.listen;
        let connect =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await;
        let Ok(Ok(mut stream)) = connect else {
            return Ok(None);
        };
        let req = Zeroizing::new(format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            token.as_str()
        ));
        let exchange = async {
            stream.write_all(req.as_bytes()).await?;
            let mut buf = Vec::new();
            stream.take(1 << 20).read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .context("the gateway's admin API did not answer in time")?
            .with_context(|| format!("admin API at {addr}"))?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).unwrap_or("");
        if status != "200" {
            bail!(
                "the gateway's admin API at {addr} answered {status}: {}",
                body.trim()
            );
        }
        Ok(Some(body.trim().to_owned()))
    }
}

fn record_json(r: &SessionRecord) -> Value {
    json!({
        "sid": r.sid.as_str(),
        "uid": r.uid.as_str(),
        "data": r.data.to_value(),
        "created": r.created,
        "last_active": r.last_active,
        "expires_at": r.expires_at,
    })
}

async fn list(sessions: &Sessions, user: &str) -> anyhow::Result<ExitCode> {
    let uid = parse_user(user)?;
    let records = sessions.list_user(&uid).await?;
    let out: Vec<Value> = records.iter().map(record_json).collect();
    println!("{}", Value::Array(out));
    Ok(ExitCode::SUCCESS)
}
