//! `wsguard serve`, `wsguard echo` and `wsguard connect`.
//!
//! Owns process-level wiring of the gateway: the checks before any file is created, the admin
//! token file, the `--demo` conveniences, listener errors that name their key and flag, signals
//! (Ctrl-C / SIGTERM → graceful shutdown, exit 0), and a minimal interactive client that ends
//! with its socket (its exit statuses: [`CONNECT_EXIT_STATUS`]). Gateway behaviour itself lives
//! in `wsguard-gateway`.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsguard_gateway::config::RouteConfig;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::{keys, now, sessions_with};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Try-it-out mode: start the built-in echo backend as the upstream of route "/", create the
    /// key file if it is missing, and allow the gateway's own origin if no origin is configured.
    #[arg(long)]
    demo: bool,
    /// Override gateway.listen.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override admin.listen.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Worker threads: 0 for one per CPU core; 1 runs everything on one thread (a
    /// single-threaded runtime, like one nginx worker).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/chat
    url: String,
    /// Session token to send as the session cookie.
    #[arg(long, env = "WSGUARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Origin header to send.
    #[arg(long)]
    origin: Option<String>,
}

/// Reads the admin bearer token, creating the file (mode 0600, 32 random bytes) if missing.
fn admin_token(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let t = Zeroizing::new(t.trim().to_owned());
            if t.len() < 32 {
                bail!(
                    "admin.token_file {}: the token must be at least 32 characters",
                    path.display()
                );
            }
            crate::keys::warn_if_readable_by_others(path, "admin token file");
            return Ok(t);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
    let token = Zeroizing::new(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        bytes,
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    tracing::info!(path = %path.display(), "created an admin token file");
    Ok(token)
}

/// Whether a listener at `addr` can be reached from other hosts (IPv4-mapped loopback is
/// loopback).
fn beyond_loopback(addr: SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback()
}

/// Command-line overrides and `--demo` additions, applied at start and again on each reload.
fn apply_args(config: &mut Config, args: &ServeArgs, demo_echo: Option<SocketAddr>) {
    if let Some(a) = args.listen {
        config.gateway.listen = a;
    }
    if let Some(a) = args.admin_listen {
        config.admin.listen = a;
    }
    if let Some(echo_addr) = demo_echo {
        config
            .routes
            .push(RouteConfig::new("/", format!("ws://{echo_addr}")));
        if config.gateway.allowed_origins.is_empty() {
            let port = config.gateway.listen.port();
            config.gateway.allowed_origins = vec![
                format!("http://localhost:{port}"),
                format!("http://127.0.0.1:{port}"),
            ];
        }
    }
}

/// Reads the configuration file and key file again, for a reload.
fn loader(
    path: Option<PathBuf>,
    args: ServeArgs,
    demo_echo: Option<SocketAddr>,
    first: Config,
) -> wsguard_gateway::Loader {
    std::sync::Arc::new(move || {
        // The same problems, in the same words and order, as `check-config` on this file.
        let mut config =
            crate::check_cmd::problems_in(path.as_deref()).map_err(|p| p.join("\n"))?;
        apply_args(&mut config, &args, demo_echo);
        let ring = keys::load(&config).map_err(|e| crate::report(&e))?;
        let verifier =
            wsguard_token::Verifier::new(std::sync::Arc::new(ring), config.token_policy());
        let mut restart_required = Vec::new();
        if config.store.backend != first.store.backend || config.store.path != first.store.path {
            restart_required.push("store".to_owned());
        }
        if config.sessions.mode != first.sessions.mode {
            restart_required.push("sessions.mode".to_owned());
        }
        if config.sessions.touch_interval != first.sessions.touch_interval {
            restart_required.push("sessions.touch_interval".to_owned());
        }
        Ok(wsguard_gateway::Reload {
            settings: config.settings(),
            verifier,
            restart_required,
        })
    })
}

pub async fn serve(
    mut config: Config,
    path: Option<PathBuf>,
    args: ServeArgs,
) -> anyhow::Result<ExitCode> {
    let mut demo_echo = None;
    if args.demo {
        if !config.routes.is_empty() {
            bail!("--demo: routes are configured; --demo adds its own echo route");
        }
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("--demo: cannot listen on 127.0.0.1 for the echo backend")?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(wsguard_gateway::echo::serve(echo));
        demo_echo = Some(echo_addr);
    }
    apply_args(&mut config, &args, demo_echo);
    // The whole configuration is checked before any file is created (key file, session
    // store, admin token): a refused start leaves the directory as it was.
    let demo_keys =
        args.demo && config.sessions.keys_env.is_none() && !config.sessions.keys_file.exists();
    let ring = (!demo_keys).then(|| keys::load(&config));
    check_before_start(&config, ring.as_ref().and_then(|r| r.as_ref().err()))?;
    if demo_keys {
        keys::keygen(
            &config.sessions.keys_file,
            now(),
            config.sessions.max_age.as_secs(),
        )?;
        println!(
            "demo: created key file {}",
            config.sessions.keys_file.display()
        );
    }
    if let Some(echo_addr) = demo_echo {
        println!("demo: echo backend on ws://{echo_addr}");
    }
    let ring = match ring {
        Some(ring) => ring?,
        None => keys::load(&config)?,
    };
    let sessions = sessions_with(&config, ring)?;
    let token = admin_token(&config.admin.token_file)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if beyond_loopback(config.admin.listen) {
        tracing::warn!(
            listen = %config.admin.listen,
            "the admin API is plain HTTP and listens beyond loopback: its bearer token crosses \
             the network in clear; keep it on a private network or put TLS in front"
        );
    }
    let running = wsguard_gateway::start(sessions, config.settings(), token)
        .await
        .map_err(|e| start_error(&config, e))?;
    // Before the listening line: whoever waits for it may reload at once.
    running.set_loader(loader(path, args, demo_echo, config.clone()));
    let scheme = if config.gateway.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    println!(
        "wsguard listening on {scheme}://{} (admin API on http://{})",
        running.public_addr, running.admin_addr
    );
    for origin in &config.gateway.allowed_origins {
        println!("  allowed origin: {origin}");
    }
    let _ = std::io::stdout().flush();
    wait_for_signal(Some(&running)).await?;
    println!("shutting down: closing sockets with 1001");
    running.shutdown();
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// Every problem `serve` would meet with this configuration, in one error, before it creates
/// any file: the values (as `check-config` checks them), the files they name (TLS certificate
/// and key, CAs, schemas) and `keys`, the key file's (already read).
fn check_before_start(config: &Config, keys: Option<&anyhow::Error>) -> anyhow::Result<()> {
    let mut problems: Vec<String> = config.problems().iter().map(|p| p.to_string()).collect();
    if problems.is_empty()
        && let Err(e) = wsguard_gateway::check(&config.settings())
    {
        problems.extend(e.into_iter().map(|e| e.to_string()));
    }
    if let Some(e) = keys {
        problems.push(crate::report(e));
    }
    match problems.as_slice() {
        [] => Ok(()),
        [one] => bail!("{one}"),
        many => bail!(
            "{} problems in the configuration:\n  {}",
            many.len(),
            many.join("\n  ")
        ),
    }
}

/// A failed start as the operator needs it: for a listener, which key set the address, the
/// flag that overrides it, and what to do.
fn start_error(config: &Config, e: wsguard_gateway::StartError) -> anyhow::Error {
    match e {
        wsguard_gateway::StartError::Config(e) => anyhow::anyhow!(e),
        wsguard_gateway::StartError::Bind { addr, source } => {
            // The gateway binds first, and both listeners on one address are refused by
            // `Config::problems`, so an address equal to gateway.listen is the gateway's.
            let (key, flag) = if addr == config.gateway.listen {
                ("gateway.listen", "--listen")
            } else {
                ("admin.listen", "--admin-listen")
            };
            let what = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another process listens on it: stop that process, or choose another address"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: choose a port from 1024 up (or give \
                     wsguard the CAP_NET_BIND_SERVICE capability), or another address"
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "it is not an address of this host: choose another address"
                }
                _ => "choose another address",
            };
            anyhow::anyhow!(
                "{key}: cannot listen on {addr}: {source}; {what} with {flag} ADDR or {key} \
                 in the configuration file"
            )
        }
    }
}

/// Waits for SIGTERM or SIGINT; reloads the configuration on each SIGHUP meanwhile (the
/// gateway logs the outcome; a bad file leaves the configuration in force).
#[cfg(unix)]
async fn wait_for_signal(running: Option<&wsguard_gateway::Running>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => match running {
                Some(r) => {
                    let _ = r.reload();
                }
                None => tracing::info!("SIGHUP: nothing to reload"),
            },
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal(_running: Option<&wsguard_gateway::Running>) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}

pub async fn echo(args: EchoArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("echo backend listening on ws://{}", listener.local_addr()?);
    let _ = std::io::stdout().flush();
    tokio::select! {
        () = wsguard_gateway::echo::serve(listener) => {}
        r = wait_for_signal(None) => r?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit statuses of `wsguard connect`, for its `--help` (README's CLI section says the same).
pub const CONNECT_EXIT_STATUS: &str = "\
Exit status:
  0  closed normally: the server closed with 1000, or stdin ended and the client closed with 1000
  2  usage or connection error (bad URL, connection refused or lost without a close frame)
  3  the server closed the socket with another code than 1000 (e.g. 1008 session revoked,
     1001 going away); the code and reason are printed on stderr
  4  the server refused the WebSocket handshake (e.g. 401, 403); the HTTP status is printed";

/// How a `connect` session ended (errors aside, exit 2), mapped once to its exit status. What
/// the server said (close code and reason, HTTP status) is printed where it arrives.
#[derive(Debug)]
enum ConnectOutcome {
    /// The server closed with 1000, or stdin ended and we closed with 1000.
    Normal,
    /// The server closed with another code, or with a close frame without one (1005).
    ClosedByServer,
    /// The handshake was answered with an HTTP status instead of 101.
    Refused,
}

impl ConnectOutcome {
    fn exit_code(&self) -> ExitCode {
        match self {
            ConnectOutcome::Normal => ExitCode::SUCCESS,
            ConnectOutcome::ClosedByServer => ExitCode::from(3),
            ConnectOutcome::Refused => ExitCode::from(4),
        }
    }
}

/// How long a client that closed (stdin ended) waits for the server's answering close frame.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(5);
/// How long answering the server's close frame may take before the client exits anyway.
const CLOSE_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Sends each stdin line as a text message and prints every message received; see
/// [`CONNECT_EXIT_STATUS`] for how it ends.
pub async fn connect(config: &Config, args: ConnectArgs) -> anyhow::Result<ExitCode> {
    Ok(connect_session(config, args).await?.exit_code())
}

async fn connect_session(config: &Config, args: ConnectArgs) -> anyhow::Result<ConnectOutcome> {
    let mut req = args
        .url
        .as_str()
        .into_client_request()
        .with_context(|| format!("{}: not a URL", args.url))?;
    if !matches!(req.uri().scheme_str(), Some("ws" | "wss")) {
        bail!(
            "{}: the URL must start with ws:// or wss:// (e.g. ws://127.0.0.1:8080/chat)",
            args.url
        );
    }
    if let Some(t) = &args.token {
        let v = format!("{}={}", config.sessions.cookie_name, t.trim());
        req.headers_mut().insert(
            http_header("cookie"),
            v.parse()
                .context("--token: not a cookie value (printable ASCII without spaces)")?,
        );
    }
    if let Some(o) = &args.origin {
        req.headers_mut().insert(
            http_header("origin"),
            o.parse().context("--origin: not a header value")?,
        );
    }
    let ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            eprintln!("refused: {} {}", r.status(), body.trim());
            return Ok(ConnectOutcome::Refused);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", args.url)),
    };
    eprintln!("connected; type lines to send, Ctrl-D to close");
    let (mut tx, mut rx) = ws.split();
    let mut lines = stdin_lines();
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => tx
                    .send(Message::text(line.context("cannot read stdin")?))
                    .await
                    .context("cannot send")?,
                None => {
                    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    tx.send(Message::Close(Some(normal))).await.context("cannot send the close")?;
                    await_close_reply(&mut rx).await;
                    return Ok(ConnectOutcome::Normal);
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => println!("{t}"),
                Some(Ok(Message::Binary(b))) => println!("<{} bytes binary>", b.len()),
                Some(Ok(Message::Close(frame))) => {
                    // The answering close frame is queued; closing the sink sends it.
                    let _ = tokio::time::timeout(CLOSE_ANSWER_WAIT, tx.close()).await;
                    return Ok(match frame {
                        Some(f) => {
                            let code = u16::from(f.code);
                            eprintln!("closed by the server: {code} {}", f.reason);
                            if code == 1000 {
                                ConnectOutcome::Normal
                            } else {
                                ConnectOutcome::ClosedByServer
                            }
                        }
                        None => {
                            eprintln!("closed by the server without a code (1005)");
                            ConnectOutcome::ClosedByServer
                        }
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("connection lost"),
                None => bail!("connection lost: closed without a close frame"),
            },
        }
    }
}

/// After our close frame: prints what still arrives until the server's answering close frame
/// (or the end of the stream), at most [`CLOSE_REPLY_WAIT`].
async fn await_close_reply<S>(rx: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let wait = async {
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Text(t) => println!("{t}"),
                Message::Binary(b) => println!("<{} bytes binary>", b.len()),
                Message::Close(_) => return,
                _ => {}
            }
        }
    };
    if tokio::time::timeout(CLOSE_REPLY_WAIT, wait).await.is_err() {
        eprintln!(
            "closed; the server did not answer the close in {}",
            humantime::format_duration(CLOSE_REPLY_WAIT)
        );
    }
}

/// Stdin's lines, read on a thread of their own. Not tokio's stdin: its read runs on the blocking
/// pool, and the runtime waits for it at exit, so a process whose socket closed would still
/// wait for another line. A plain thread ends with the process.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

fn http_header(name: &'static str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    tokio_tungstenite::tungstenite::http::HeaderName::from_static(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_admin_listeners_go_unwarned() {
        for quiet in [
            "127.0.0.1:9090",
            "127.1.2.3:9090",
            "[::1]:9090",
            "[::ffff:127.0.0.1]:9090",
        ] {
            assert!(!beyond_loopback(quiet.parse().unwrap()), "{quiet}");
        }
        for loud in [
            "0.0.0.0:9090",
            "10.0.0.5:9090",
            "[::]:9090",
            "[2001:db8::1]:9090",
        ] {
            assert!(beyond_loopback(loud.parse().unwrap()), "{loud}");
        }
    }
}
