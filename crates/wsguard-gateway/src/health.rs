//! Active health checks of upstreams (`[gateway.health_check]`, off unless set).
//!
//! Owns the probe: a TCP connect (and the TLS handshake for `wss://`), then, with a `path`, one
//! `GET path` whose answer must be 2xx or 3xx, all within the probe's timeout. The outcome goes
//! to the upstream's shared state ([`crate::pool::Backend::probed`]); changes are logged. It
//! decides nothing about sockets: `pool.rs` chooses upstreams from what the probes found.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer head read from a probe.
const MAX_HEAD: usize = 8 * 1024;

/// Probes `url`'s server; `true` if healthy within `timeout`.
pub async fn probe(
    url: &url::Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: Option<&str>,
    timeout: Duration,
) -> bool {
    tokio::time::timeout(timeout, probe_once(url, tls, path))
        .await
        .unwrap_or(false)
}

async fn probe_once(
    url: &url::Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: Option<&str>,
) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(tcp) = TcpStream::connect((bare, port)).await else {
        return false;
    };
    match (url.scheme(), tls) {
        ("wss", Some(config)) => {
            let Ok(name) = rustls::pki_types::ServerName::try_from(bare.to_owned()) else {
                return false;
            };
            match tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
            {
                Ok(stream) => answer_ok(stream, url, path).await,
                Err(_) => false,
            }
        }
        ("wss", None) => false,
        _ => answer_ok(tcp, url, path).await,
    }
}

/// Without a path, a connection is health; with one, a 2xx or 3xx answer to `GET path`.
async fn answer_ok<S>(mut io: S, url: &url::Url, path: Option<&str>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(path) = path else {
        return true;
    };
    let host = url.host_str().unwrap_or("");
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: wsguard-health-check\r\n\
         Connection: close\r\n\r\n"
    );
    if io.write_all(request.as_bytes()).await.is_err() || io.flush().await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(512);
    loop {
        if buf.len() >= MAX_HEAD {
            return false;
        }
        buf.reserve(MAX_HEAD - buf.len());
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        match answer.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return answer.code.is_some_and(|c| (200..400).contains(&c));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers every connection with `answer` (or nothing, if empty).
    async fn server(answer: &'static str) -> url::Url {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    if !answer.is_empty() {
                        let _ = s.write_all(answer.as_bytes()).await;
                    } else {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                });
            }
        });
        url::Url::parse(&format!("ws://{addr}")).unwrap()
    }

    #[tokio::test]
    async fn probes_judge_connects_and_answers() {
        let t = Duration::from_secs(2);
        let ok = server("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert!(probe(&ok, None, None, t).await, "a connection is enough");
        assert!(probe(&ok, None, Some("/healthz"), t).await);
        let redirect = server("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n").await;
        assert!(probe(&redirect, None, Some("/healthz"), t).await);
        let broken = server("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert!(!probe(&broken, None, Some("/healthz"), t).await);
        assert!(probe(&broken, None, None, t).await, "TCP only");
        let noise = server("garbage\r\n\r\n").await;
        assert!(!probe(&noise, None, Some("/healthz"), t).await);
        let silent = server("").await;
        assert!(
            !probe(&silent, None, Some("/healthz"), Duration::from_millis(200)).await,
            "no answer within the timeout"
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let a = l.local_addr().unwrap();
            drop(l);
            url::Url::parse(&format!("ws://{a}")).unwrap()
        };
        assert!(!probe(&closed, None, None, t).await);
    }
}
