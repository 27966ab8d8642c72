//! Where and how to connect: the target URL (resolved once), extra handshake headers, client
//! source addresses, the one function that opens a WebSocket (TCP socket bound to a source IP
//! with port 0, connect, then the client handshake over that stream) and the one that closes it.
//!
//! Owns the classification of connection failures ([`ConnectError::kind`], [`ws_error_kind`]).
//! Must not measure or report anything: callers time the calls they make.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode, Uri};

/// An open client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Command-line options shared by every subcommand: what to connect to and how.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// WebSocket URL to connect to (ws:// only), e.g. ws://127.0.0.1:8080/chat
    #[arg(long)]
    pub url: String,
    /// Extra handshake header as "Name: value" (e.g. Origin, Cookie); repeat for several.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<Header>,
    /// Client source IPs, comma-separated (e.g. 127.0.0.1,127.0.0.2). Connections are spread
    /// over them round-robin, each source giving its own range of ephemeral ports.
    #[arg(long, value_delimiter = ',', value_name = "IP,...")]
    pub sources: Vec<IpAddr>,
    /// Time limit for one TCP connect plus WebSocket handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

/// One extra handshake header, parsed from "Name: value".
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
    value: HeaderValue,
}

impl FromStr for Header {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s
            .split_once(':')
            .ok_or_else(|| format!("expected \"Name: value\", got {s:?}"))?;
        let name = HeaderName::from_str(name.trim())
            .map_err(|e| format!("bad header name {:?}: {e}", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| format!("bad value for header {name}: {e}"))?;
        Ok(Self { name, value })
    }
}

/// Why the target could not be set up (before any connection is made).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("unsupported scheme in {0:?}: only ws:// is supported")]
    UnsupportedScheme(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("source address {source_ip} is not of the same family as the target {target}")]
    SourceFamily {
        source_ip: IpAddr,
        target: SocketAddr,
    },
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("creating socket: {0}")]
    Socket(std::io::Error),
    #[error("binding to source {ip}: {source}")]
    Bind { ip: IpAddr, source: std::io::Error },
    #[error("TCP connect: {0}")]
    Tcp(std::io::Error),
    #[error("connect and handshake took longer than the connect timeout")]
    Timeout,
    #[error("handshake refused with HTTP {0}")]
    Refused(StatusCode),
    #[error("handshake: {0}")]
    Handshake(Box<tungstenite::Error>),
}

impl ConnectError {
    /// A short stable label for counting failures in reports.
    pub fn kind(&self) -> String {
        match self {
            Self::Socket(_) => "socket".into(),
            Self::Bind { .. } => "bind".into(),
            Self::Tcp(_) => "tcp_connect".into(),
            Self::Timeout => "connect_timeout".into(),
            Self::Refused(status) => format!("refused_{}", status.as_u16()),
            Self::Handshake(_) => "handshake".into(),
        }
    }
}

/// A resolved target: everything needed to open connections to it.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    uri: Uri,
    addr: SocketAddr,
    headers: Vec<Header>,
    sources: Vec<IpAddr>,
    connect_timeout: Duration,
    read_buffer: usize,
}

/// The most a connection reads in one call (tungstenite's default read buffer).
const MAX_READ_BUFFER: usize = 128 << 10;
/// The least, and the size until [`Target::size_reads_for`] says otherwise: small frames and a
/// close fit in one read.
const MIN_READ_BUFFER: usize = 4 << 10;

impl Target {
    /// Parses the URL, resolves its host once, and checks the source addresses against it.
    pub async fn resolve(args: TargetArgs) -> Result<Self, TargetError> {
        let bad = |reason: String| TargetError::BadUrl {
            url: args.url.clone(),
            reason,
        };
        let uri: Uri = args.url.parse().map_err(|e| bad(format!("{e}")))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some(_) => return Err(TargetError::UnsupportedScheme(args.url.clone())),
            None => return Err(bad("missing scheme (ws://)".into())),
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("missing host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let want_v6 = args.sources.first().map(IpAddr::is_ipv6);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| TargetError::Resolve {
                host: host.clone(),
                source,
            })?
            .collect();
        // Prefer an address of the sources' family, if sources were given.
        let addr = addrs
            .iter()
            .find(|a| want_v6.is_none_or(|v6| a.is_ipv6() == v6))
            .or(addrs.first())
            .copied()
            .ok_or_else(|| TargetError::NoAddress(host.clone()))?;
        if let Some(&source_ip) = args.sources.iter().find(|s| s.is_ipv6() != addr.is_ipv6()) {
            return Err(TargetError::SourceFamily {
                source_ip,
                target: addr,
            });
        }
        Ok(Self {
            url: args.url,
            uri,
            addr,
            headers: args.headers,
            sources: args.sources,
            connect_timeout: args.connect_timeout,
            read_buffer: MIN_READ_BUFFER,
        })
    }

    /// Sizes each connection's read buffer for messages of `message` bytes (frame header
    /// included), within 4–128 KiB (4 KiB until sized: handshakes and idle sockets). tungstenite
    /// allocates that buffer per connection and zero-fills its free part before every read,
    /// found or not, so its default 128 KiB cost the generator's core a 128 KiB memset per read
    /// for 1 KiB echoes (8 % of that core's time, `perf record`), and a 128 KiB allocation per
    /// handshake: costs that cap every path alike and hide the differences between them.
    pub fn size_reads_for(&mut self, message: usize) {
        self.read_buffer = message
            .saturating_add(14)
            .clamp(MIN_READ_BUFFER, MAX_READ_BUFFER);
    }

    /// The URL as given on the command line.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The source address for the `i`-th connection (round-robin), or `None` to let the kernel
    /// choose.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            self.sources.get(i % self.sources.len()).copied()
        }
    }

    /// Opens one WebSocket: TCP from `source` (port 0), then the handshake with a fresh key and
    /// the extra headers. The whole attempt is bounded by the connect timeout.
    pub async fn connect(&self, source: Option<IpAddr>) -> Result<Ws, ConnectError> {
        tokio::time::timeout(self.connect_timeout, self.connect_inner(source))
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    async fn connect_inner(&self, source: Option<IpAddr>) -> Result<Ws, ConnectError> {
        let socket = if self.addr.is_ipv6() {
            TcpSocket::new_v6()
        } else {
            TcpSocket::new_v4()
        }
        .map_err(ConnectError::Socket)?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|source| ConnectError::Bind { ip, source })?;
        }
        let stream = socket.connect(self.addr).await.map_err(ConnectError::Tcp)?;
        stream.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let request = self.request()?;
        let config =
            tungstenite::protocol::WebSocketConfig::default().read_buffer_size(self.read_buffer);
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, _response)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) => {
                Err(ConnectError::Refused(response.status()))
            }
            Err(e) => Err(ConnectError::Handshake(Box::new(e))),
        }
    }

    /// The handshake request: tungstenite's defaults (with a fresh Sec-WebSocket-Key), then the
    /// extra headers. The first occurrence of a name replaces a default (e.g. Host); later
    /// occurrences are appended.
    fn request(&self) -> Result<tungstenite::handshake::client::Request, ConnectError> {
        let mut request = self
            .uri
            .clone()
            .into_client_request()
            .map_err(|e| ConnectError::Handshake(Box::new(e)))?;
        let headers = request.headers_mut();
        let mut seen = HashSet::new();
        for h in &self.headers {
            if seen.insert(h.name.clone()) {
                headers.insert(h.name.clone(), h.value.clone());
            } else {
                headers.append(h.name.clone(), h.value.clone());
            }
        }
        Ok(request)
    }
}

/// How long a graceful close may take: our close frame out, the peer's close back, then EOF.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A short stable label for an error on an open connection.
pub fn ws_error_kind(e: &tungstenite::Error) -> &'static str {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "closed_by_peer"
        }
        tungstenite::Error::Io(_) => "io",
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => "reset",
        tungstenite::Error::Protocol(_) => "protocol",
        tungstenite::Error::Capacity(_) => "capacity",
        _ => "other",
    }
}

/// Sends a close frame and waits (at most [`CLOSE_TIMEOUT`]) for the peer's close and the end of
/// the stream, discarding data that was still in flight. Returns the failure label, if any.
pub async fn close_gracefully(mut ws: Ws) -> Result<(), &'static str> {
    let close = async {
        match ws.close(None).await {
            Ok(()) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(());
            }
            Err(e) => return Err(ws_error_kind(&e)),
        }
        while let Some(next) = ws.next().await {
            match next {
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break;
                }
                Err(e) => return Err(ws_error_kind(&e)),
            }
        }
        Ok(())
    };
    tokio::time::timeout(CLOSE_TIMEOUT, close)
        .await
        .unwrap_or(Err("close_timeout"))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.url, self.addr)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn header_parses_name_and_trimmed_value() {
        let h: Header = "Origin:  https://app.example.com ".parse().unwrap();
        assert_eq!(h.name, "origin");
        assert_eq!(h.value, "https://app.example.com");
        let h: Header = "Cookie: a=b; c=d:e".parse().unwrap();
        assert_eq!(h.value, "a=b; c=d:e");
    }

    #[test]
    fn header_without_colon_or_bad_name_is_rejected() {
        assert!("Origin".parse::<Header>().is_err());
        assert!("Bad Name: x".parse::<Header>().is_err());
    }

    fn args(url: &str, sources: &[&str]) -> TargetArgs {
        TargetArgs {
            url: url.into(),
            headers: vec![
                "Host: example.test".parse().unwrap(),
                "Cookie: a=1".parse().unwrap(),
                "Cookie: b=2".parse().unwrap(),
            ],
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn resolve_checks_scheme_and_source_family() {
        let t = Target::resolve(args("ws://127.0.0.1:9/x", &[]))
            .await
            .unwrap();
        assert_eq!(t.addr, "127.0.0.1:9".parse().unwrap());
        assert!(matches!(
            Target::resolve(args("wss://127.0.0.1:9/x", &[])).await,
            Err(TargetError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            Target::resolve(args("ws://127.0.0.1:9/", &["::1"])).await,
            Err(TargetError::SourceFamily { .. })
        ));
    }

    #[tokio::test]
    async fn reads_are_sized_for_the_message_within_bounds() {
        let mut t = Target::resolve(args("ws://127.0.0.1:9/", &[]))
            .await
            .unwrap();
        assert_eq!(t.read_buffer, MIN_READ_BUFFER, "until sized");
        for (message, want) in [
            (32, MIN_READ_BUFFER),
            (1024, MIN_READ_BUFFER),
            (64 << 10, (64 << 10) + 14),
            (1 << 20, MAX_READ_BUFFER),
            (usize::MAX, MAX_READ_BUFFER),
        ] {
            t.size_reads_for(message);
            assert_eq!(t.read_buffer, want, "message of {message} bytes");
        }
    }

    #[tokio::test]
    async fn sources_are_round_robin_and_headers_replace_then_append() {
        let t = Target::resolve(args("ws://127.0.0.1:9/", &["127.0.0.1", "127.0.0.2"]))
            .await
            .unwrap();
        let got: Vec<_> = (0..3).map(|i| t.source(i).unwrap().to_string()).collect();
        assert_eq!(got, ["127.0.0.1", "127.0.0.2", "127.0.0.1"]);
        let req = t.request().unwrap();
        let host: Vec<_> = req.headers().get_all("host").iter().collect();
        assert_eq!(host, ["example.test"]);
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(req.headers().contains_key("sec-websocket-key"));
    }
}
