//! Test helpers (cargo feature `test-util`): a real `redis-server` for tests, and a TCP relay
//! that can cut one client off from it.
//!
//! Owns [`RedisServer`] (a `redis-server` process on a free port of 127.0.0.1 in a temporary
//! directory, stopped by its PID on drop) and [`TcpCut`]. It must not skip anything silently:
//! when `redis-server` is not installed, starting one fails with a message that says how to
//! install it. Nothing here is meant for production code.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How to get `redis-server` when it is missing.
pub const INSTALL_HINT: &str = "redis-server is not installed (or not on PATH): these tests need a \
    real Redis. Install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu; `.ci/run` \
    does this), or set WSGUARD_REDIS_SERVER to the path of a redis-server binary.";

/// A `redis-server` started for a test. Dropping it kills the process (by PID) and removes its
/// directory.
#[derive(Debug)]
pub struct RedisServer {
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
    extra: Vec<String>,
}

/// Why a test server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// `redis-server` is missing.
    #[error("{INSTALL_HINT}")]
    NotInstalled,
    /// It started but did not answer.
    #[error("redis-server did not come up: {0}")]
    Start(String),
}

fn binary() -> PathBuf {
    std::env::var_os("WSGUARD_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RedisServer {
    /// Starts a server without persistence (`--save '' --appendonly no`).
    pub fn start() -> Result<RedisServer, TestServerError> {
        Self::start_with(false, &[])
    }

    /// Starts a server that keeps its data across [`RedisServer::restart`] and
    /// [`RedisServer::kill`] + [`RedisServer::restart`] (append-only file, fsync always).
    pub fn start_persistent() -> Result<RedisServer, TestServerError> {
        Self::start_with(true, &[])
    }

    /// Starts a server that also listens with TLS on [`RedisServer::tls_port`] (certificate
    /// chain and key in PEM files; clients are not asked for certificates). The plain port
    /// stays, for the helpers here.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<RedisServer, TestServerError> {
        let tls_port = free_port()
            .map_err(|e| TestServerError::Start(e.to_string()))?
            .to_string();
        let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
        Self::start_with(
            false,
            &[
                "--tls-port",
                &tls_port,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-auth-clients",
                "no",
            ],
        )
    }

    /// The TLS port of a server from [`RedisServer::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        let i = self.extra.iter().position(|a| a == "--tls-port")?;
        self.extra.get(i + 1)?.parse().ok()
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--requirepass", "x"]`).
    pub fn start_with(persistent: bool, extra: &[&str]) -> Result<RedisServer, TestServerError> {
        Self::start_program(&binary(), persistent, extra)
    }

    /// Like [`RedisServer::start_with`], running `program` instead of `redis-server` (from
    /// `PATH` or `WSGUARD_REDIS_SERVER`).
    pub fn start_program(
        program: &Path,
        persistent: bool,
        extra: &[&str],
    ) -> Result<RedisServer, TestServerError> {
        let dir = tempfile::tempdir().map_err(|e| TestServerError::Start(e.to_string()))?;
        let mut server = RedisServer {
            program: program.to_path_buf(),
            child: None,
            port: 0,
            dir,
            persistent,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        // A port found free can be taken by someone else before redis-server binds it: retry.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port().map_err(|e| TestServerError::Start(e.to_string()))?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(TestServerError::NotInstalled) => return Err(TestServerError::NotInstalled),
                Err(TestServerError::Start(e)) => last = e,
            }
        }
        Err(TestServerError::Start(last))
    }

    fn spawn(&mut self) -> Result<(), TestServerError> {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TestServerError::NotInstalled);
            }
            Err(e) => return Err(TestServerError::Start(e.to_string())),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(TestServerError::Start(format!(
                    "exited with {status}; log: {}",
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                self.stop_process(libc_signal::KILL);
                return Err(TestServerError::Start(
                    "no answer to PING within 10 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server answers `PING` (inline command, no client library).
    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        // "-NOAUTH" also proves it is up (a server started with --requirepass).
        buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// 127.0.0.1 and the port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the running process, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (SIGKILL), as a crash would. [`RedisServer::restart`] brings it
    /// back on the same port (with its data if it was started persistent).
    pub fn kill(&mut self) {
        self.stop_process(libc_signal::KILL);
    }

    /// Stops the server (if running) and starts it again on the same port and directory.
    pub fn restart(&mut self) -> Result<(), TestServerError> {
        self.stop_process(libc_signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The port may linger for a moment after the old process went.
                Err(TestServerError::Start(e)) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes every key (`FLUSHALL`), as losing the store's data would.
    pub fn flushall(&self) -> std::io::Result<()> {
        self.command("FLUSHALL")
    }

    /// Sends one inline command and waits for its answer line (for fault tests).
    pub fn command(&self, inline: &str) -> std::io::Result<()> {
        use std::io::{BufRead, Write};
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{inline}\r\n").as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line)?;
        if line.starts_with('-') {
            return Err(std::io::Error::other(line.trim_end().to_owned()));
        }
        Ok(())
    }

    fn stop_process(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            if signal == libc_signal::KILL {
                let _ = child.kill();
            } else {
                // SIGTERM lets Redis finish its append-only file; std only sends SIGKILL.
                let _ = Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(child.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

mod libc_signal {
    pub(super) const KILL: &str = "KILL";
    pub(super) const TERM: &str = "TERM";
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop_process(libc_signal::KILL);
    }
}

/// A TCP relay on a free port of 127.0.0.1 in front of a server: connect a client to
/// [`TcpCut::addr`] instead of the server, then [`TcpCut::sever`] it (every relayed connection
/// is closed and new ones are closed as soon as they are accepted) and [`TcpCut::restore`] it.
/// This cuts one client off from a real Redis while the others keep it.
#[derive(Debug)]
pub struct TcpCut {
    addr: SocketAddr,
    severed: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl TcpCut {
    /// Starts relaying to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<TcpCut> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let severed = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let (s, g, st, fr) = (
            Arc::clone(&severed),
            Arc::clone(&generation),
            Arc::clone(&stop),
            Arc::clone(&frozen),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if s.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(target) {
                            relay(
                                client,
                                server,
                                Arc::clone(&g),
                                g.load(Ordering::SeqCst),
                                Arc::clone(&fr),
                            );
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpCut {
            addr,
            severed,
            frozen,
            generation,
            stop,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT/0` through the relay.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.addr.port())
    }

    /// Closes every relayed connection and refuses new ones until [`TcpCut::restore`].
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops moving bytes without closing anything: a silent network (connections stay open,
    /// nothing arrives), until [`TcpCut::restore`].
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Relays new connections (and, after a freeze, bytes) again.
    pub fn restore(&self) {
        self.severed.store(false, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies both ways until either side closes or the relay's generation moves on (severed).
fn relay(
    client: TcpStream,
    server: TcpStream,
    generation: Arc<std::sync::atomic::AtomicU64>,
    mine: u64,
    frozen: Arc<AtomicBool>,
) {
    let pairs = [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ];
    for (from, to) in pairs {
        let (Ok(mut from), Ok(mut to)) = (from, to) else {
            return;
        };
        let generation = Arc::clone(&generation);
        let frozen = Arc::clone(&frozen);
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
            let mut buf = [0u8; 16 * 1024];
            loop {
                if generation.load(Ordering::SeqCst) != mine {
                    break;
                }
                if frozen.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }
}
