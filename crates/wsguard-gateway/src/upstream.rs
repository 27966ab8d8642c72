//! Dialling an upstream: TCP, TLS for `wss://` (rustls, verified against the route's roots),
//! the WebSocket client handshake over hyper's HTTP/1.1 client, and the checks on the answer
//! (101, `Upgrade`, `Connection`, `Sec-WebSocket-Accept`).
//!
//! Owns the upstream socket's shape in memory: the handshake's HTTP buffers belong to hyper and
//! are freed once the connection is upgraded, so an idle proxied socket keeps only the
//! relay's state (no read buffer), and the TLS state is boxed so a plain `ws://` socket
//! does not carry its size. It must not decide anything about the client: the request it sends
//! is built by the server (identity headers, forwarded headers).

use std::io;
use std::sync::Arc;

use crate::stream::UpstreamStream;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The upstream's byte stream once the handshake is done (frames are the relay's business),
/// and any bytes of it already read with the handshake's answer.
pub type UpstreamSocket = (UpstreamStream, Vec<u8>);

/// Why the upstream could not be reached. Logged (never shown to the client, who gets 502).
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The URL has no host (validated at configuration time; kept for completeness).
    #[error("upstream URL has no host")]
    NoHost,
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(io::ErrorKind),
    /// TLS handshake failed (certificate not trusted, wrong name, …).
    #[error("tls: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// The upstream answered something other than 101.
    #[error("upstream answered {0} instead of 101")]
    Status(StatusCode),
    /// A 101 that is not a valid WebSocket acceptance.
    #[error("invalid handshake answer: {0}")]
    BadAnswer(&'static str),
}

fn header_has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Dials `url` and performs the WebSocket handshake with `req`, whose headers (including
/// `Sec-WebSocket-Key`) are sent as they are. Returns the socket and the answer's headers.
pub async fn dial(
    url: &url::Url,
    req: Request<()>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(UpstreamSocket, HeaderMap), DialError> {
    let host = url.host_str().ok_or(DialError::NoHost)?;
    let port = url.port_or_known_default().unwrap_or(80);
    // `[::1]` in a URL is `::1` to the resolver.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| DialError::Connect(e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let io = match tls {
        None => UpstreamStream::Plain(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(bare.to_owned())
                .map_err(|e| DialError::Tls(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|e| DialError::Tls(e.to_string()))?;
            UpstreamStream::Tls(Box::new(stream))
        }
    };

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| DialError::Http(e.to_string()))?;
    // The connection task ends once the socket is handed over to the upgrade.
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

    let (mut parts, ()) = req.into_parts();
    let key = parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .map(crate::handshake::accept_key)
        .ok_or(DialError::BadAnswer("no key in the request"))?;
    // Origin-form request target: path and query only.
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
        .parse()
        .map_err(|_| DialError::BadAnswer("request target"))?;
    let request = Request::from_parts(parts, Empty::<Bytes>::new());
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| DialError::Http(e.to_string()))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(DialError::Status(response.status()));
    }
    let h = response.headers();
    if !header_has_token(h, header::UPGRADE, "websocket") {
        return Err(DialError::BadAnswer("Upgrade is not websocket"));
    }
    if !header_has_token(h, header::CONNECTION, "upgrade") {
        return Err(DialError::BadAnswer("Connection lacks upgrade"));
    }
    if h.get(header::SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) != Some(key.as_bytes()) {
        return Err(DialError::BadAnswer("wrong Sec-WebSocket-Accept"));
    }
    // wsguard offers no extension upstream (permessage-deflate is not negotiated): an answer
    // that enables one would send frames the codec cannot read.
    if h.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(DialError::BadAnswer("extension not offered"));
    }
    let headers = std::mem::take(response.headers_mut());
    let upgraded = hyper::upgrade::on(&mut response)
        .await
        .map_err(|e| DialError::Http(e.to_string()))?;
    Ok((crate::stream::unwrap_upgraded(upgraded), headers))
}
