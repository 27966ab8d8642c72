//! Dialling an upstream: TCP, TLS for `wss://` (rustls, verified against the route's roots),
//! the WebSocket client handshake, and the checks on the answer (101, `Upgrade`, `Connection`,
//! `Sec-WebSocket-Accept`, no extension unless permessage-deflate was offered, and then only
//! an answer valid for the offer: `crate::deflate::check_answer`).
//!
//! The handshake is one request head written out and one answer head read back, parsed by
//! `httparse` (hyper's parser): an HTTP client (hyper's, with its own connection task,
//! channels and upgrade hand-over) cost about a quarter of a public handshake's instructions
//! for that.
//! The answer is read into a buffer sized to it (at most [`MAX_ANSWER`]) and freed once the
//! handshake is done, so an idle proxied socket keeps only the relay's state; the TLS state is
//! boxed so a plain `ws://` socket does not carry its size. It must not decide anything about
//! the client: the headers it sends are chosen by the server (identity headers, forwarded
//! headers).

use std::io::{self, Write as _};
use std::sync::Arc;

use crate::deflate::Compression;
use crate::forward::HeadLines;
use crate::handshake::has_token;
use crate::stream::UpstreamStream;
use http::StatusCode;
use http::header::{self, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The upstream's byte stream once the handshake is done (frames are the relay's business),
/// and any bytes of it already read with the handshake's answer.
pub type UpstreamSocket = (UpstreamStream, Vec<u8>);

/// Largest answer head read from an upstream.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Most header lines in an answer head.
const MAX_ANSWER_HEADERS: usize = 64;

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
    /// The request target is not an origin-form path of visible ASCII (the server builds it
    /// from parsed parts; kept so that nothing else can reach the request line).
    #[error("request target is not an origin-form path of visible ASCII")]
    BadTarget,
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

impl DialError {
    /// Whether the upstream itself failed (no connection, no TLS, the connection lost before
    /// an answer), rather than answered: another upstream of the pool may be tried, and this
    /// one is passed over for a while. An answer that refuses the handshake (a status, a bad
    /// 101) is the application's and is not retried.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DialError::Connect(_) | DialError::Tls(_) | DialError::Http(_)
        )
    }
}

/// What the upstream agreed besides the socket: its subprotocol and its permessage-deflate
/// windows, if any.
pub type Agreed = (Option<HeaderValue>, Option<Compression>);

/// Dials `url` and performs the WebSocket handshake for the origin-form `target` (path and
/// query), sending `headers` after the handshake's own, and offering permessage-deflate
/// ([`crate::deflate::UPSTREAM_OFFER`]) if `compression`. Returns the socket, the subprotocol
/// the upstream chose and the compression it agreed, if any.
pub async fn dial(
    url: &url::Url,
    target: &str,
    headers: &HeadLines,
    tls: Option<&Arc<rustls::ClientConfig>>,
    compression: bool,
) -> Result<(UpstreamSocket, Agreed), DialError> {
    let host = url.host_str().ok_or(DialError::NoHost)?;
    let port = url.port_or_known_default().unwrap_or(80);
    // `[::1]` in a URL is `::1` to the resolver.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let head = request_head(url, target, &key, headers, compression)?;
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| DialError::Connect(e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let mut io = match tls {
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
    io.write_all(&head)
        .await
        .map_err(|e| DialError::Http(e.to_string()))?;
    io.flush()
        .await
        .map_err(|e| DialError::Http(e.to_string()))?;
    drop(head);
    let (agreed, rest) = read_answer(&mut io, &crate::handshake::accept_key(&key)).await?;
    if agreed.1.is_some() && !compression {
        return Err(DialError::BadAnswer("extension not offered"));
    }
    Ok(((io, rest), agreed))
}

/// The request head: request line, the handshake's headers (with the permessage-deflate offer
/// if `compression`), then `headers`.
fn request_head(
    url: &url::Url,
    target: &str,
    key: &str,
    headers: &HeadLines,
    compression: bool,
) -> Result<Vec<u8>, DialError> {
    // The target is built from a parsed URL and a parsed request, but it goes on the request
    // line as it is: nothing but visible ASCII. (Header lines cannot hold CR, LF or NUL:
    // `HeadLines` refuses them.)
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DialError::BadTarget);
    }
    let host = url.host_str().ok_or(DialError::NoHost)?;
    let size = headers.as_bytes().len() + target.len() + host.len() + 160;
    let mut head = Vec::with_capacity(size);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(host.as_bytes());
    if let Some(port) = url.port() {
        let _ = write!(head, ":{port}");
    }
    head.extend_from_slice(
        b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    head.extend_from_slice(key.as_bytes());
    head.extend_from_slice(b"\r\n");
    if compression {
        head.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        head.extend_from_slice(crate::deflate::UPSTREAM_OFFER.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(headers.as_bytes());
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// Reads the answer head and checks it accepts the handshake with `accept`. Returns the
/// chosen subprotocol, the compression agreed (valid for [`crate::deflate::UPSTREAM_OFFER`];
/// the caller refuses it if nothing was offered) and the bytes read past the head.
async fn read_answer<S>(io: &mut S, accept: &str) -> Result<(Agreed, Vec<u8>), DialError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_ANSWER {
                return Err(DialError::BadAnswer("answer head too large"));
            }
            buf.reserve_exact(buf.len().min(MAX_ANSWER - buf.len()));
        }
        // `read_buf` reads into the spare capacity (never past it), so the limit holds.
        let n = io
            .read_buf(&mut buf)
            .await
            .map_err(|e| DialError::Http(e.to_string()))?;
        if n == 0 {
            return Err(DialError::Http(
                "connection closed before the answer".into(),
            ));
        }
        let mut lines = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
        let mut answer = httparse::Response::new(&mut lines);
        match answer.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) => {
                let agreed = check_answer(&answer, accept)?;
                return Ok((agreed, buf[len..].to_vec()));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(DialError::BadAnswer("too many header lines"));
            }
            Err(_) => return Err(DialError::BadAnswer("not an HTTP/1.1 answer")),
        }
    }
}

/// The checks on a complete answer head; the chosen subprotocol and compression, if any.
fn check_answer(answer: &httparse::Response<'_, '_>, accept: &str) -> Result<Agreed, DialError> {
    if answer.version != Some(1) {
        return Err(DialError::BadAnswer("not an HTTP/1.1 answer"));
    }
    let code = answer.code.unwrap_or(0);
    if code != 101 {
        return Err(DialError::Status(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        ));
    }
    let all = |name: header::HeaderName| {
        answer
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name.as_str()))
            .map(|h| h.value)
    };
    if !has_token(all(header::UPGRADE), "websocket") {
        return Err(DialError::BadAnswer("Upgrade is not websocket"));
    }
    if !has_token(all(header::CONNECTION), "upgrade") {
        return Err(DialError::BadAnswer("Connection lacks upgrade"));
    }
    let mut accepts = all(header::SEC_WEBSOCKET_ACCEPT);
    if accepts.next() != Some(accept.as_bytes()) || accepts.next().is_some() {
        return Err(DialError::BadAnswer("wrong Sec-WebSocket-Accept"));
    }
    // The only extension wsguard offers is permessage-deflate, as `UPSTREAM_OFFER` puts it: an
    // answer that enables anything else, or agrees to something not offered, would send
    // frames the relay cannot read.
    let compression = crate::deflate::check_answer(all(header::SEC_WEBSOCKET_EXTENSIONS))
        .map_err(DialError::BadAnswer)?;
    let mut protocols = all(header::SEC_WEBSOCKET_PROTOCOL);
    let protocol = protocols.next();
    if protocols.next().is_some() {
        return Err(DialError::BadAnswer("more than one subprotocol"));
    }
    let protocol = protocol
        .map(HeaderValue::from_bytes)
        .transpose()
        .map_err(|_| DialError::BadAnswer("subprotocol"))?;
    Ok((protocol, compression))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn answer(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
        )
    }

    async fn read(bytes: &[u8]) -> Result<(Agreed, Vec<u8>), DialError> {
        let mut io = bytes;
        read_answer(&mut io, ACCEPT).await
    }

    #[test]
    fn the_request_head_carries_the_handshake_then_the_headers() {
        let url = url::Url::parse("ws://backend.test:8080/base").unwrap();
        let headers = HeadLines::of(&[("x-wsguard-user", "alice"), ("cookie", "a=1")]);
        let head = request_head(&url, "/base/chat?room=1", KEY, &headers, false).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            format!(
                "GET /base/chat?room=1 HTTP/1.1\r\nHost: backend.test:8080\r\n\
                 Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: {KEY}\r\nx-wsguard-user: alice\r\ncookie: a=1\r\n\r\n"
            )
        );
        // A default port is not written; an IPv6 host keeps its brackets.
        let url = url::Url::parse("ws://[::1]:80/").unwrap();
        let head = request_head(&url, "/", KEY, &HeadLines::default(), false).unwrap();
        assert!(head.starts_with(b"GET / HTTP/1.1\r\nHost: [::1]\r\n"));
    }

    /// On a route with compression, the offer is written with the handshake's headers, and an
    /// answer is accepted only as valid for it.
    #[tokio::test]
    async fn permessage_deflate_is_offered_and_its_answer_checked() {
        let url = url::Url::parse("ws://backend.test/").unwrap();
        let head = request_head(&url, "/", KEY, &HeadLines::default(), true).unwrap();
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.contains(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover\r\n"
            ),
            "{head}"
        );
        let ok = answer(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             server_max_window_bits=10\r\n",
        );
        let ((_, agreed), _) = read(ok.as_bytes()).await.unwrap();
        assert_eq!(
            agreed,
            Some(Compression {
                send_window: 15,
                recv_window: 10
            })
        );
        for bad in [
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover, x-other",
        ] {
            let text = answer(&format!("Sec-WebSocket-Extensions: {bad}\r\n"));
            assert!(
                matches!(read(text.as_bytes()).await, Err(DialError::BadAnswer(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_target_that_could_split_the_request_line_is_refused() {
        let url = url::Url::parse("ws://backend.test/").unwrap();
        for target in ["/a b", "/a\r\nX-Evil: 1", "/a\n", "a", "", "/é"] {
            assert!(
                matches!(
                    request_head(&url, target, KEY, &HeadLines::default(), false),
                    Err(DialError::BadTarget)
                ),
                "{target:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_answer_split_across_reads_is_read_whole_with_what_follows() {
        let mut bytes = answer("Sec-WebSocket-Protocol: chat.v1\r\n").into_bytes();
        let frame = [0x81u8, 0x02, b'h', b'i'];
        bytes.extend_from_slice(&frame);
        // The head arrives in two reads, the second with the upstream's first frame.
        let (first, second) = bytes.split_at(20);
        let mut io = first.chain(second);
        let ((protocol, _), rest) = read_answer(&mut io, ACCEPT).await.unwrap();
        assert_eq!(protocol.unwrap(), "chat.v1");
        assert_eq!(rest, frame, "bytes read past the head are handed on");
    }

    #[tokio::test]
    async fn answers_that_do_not_accept_the_handshake_are_refused() {
        let cases: [(&str, &str); 10] = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "status"),
            ("HTTP/1.0 101 Switching Protocols\r\n\r\n", "version"),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
                "upgrade",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n",
                "connection",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: bm90IHRoZSBhbnN3ZXI=\r\n\r\n",
                "accept",
            ),
            (
                &answer(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
                "two accepts",
            ),
            (
                &answer("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                "extension",
            ),
            (
                &answer("Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n"),
                "two protocols",
            ),
            ("HTTP/1.1 101 Switching\x01Protocols\r\n\r\n", "garbage"),
            (
                &format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade, caf\u{e9}\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
                ),
                "a Connection value that is not visible ASCII",
            ),
        ];
        for (text, what) in cases {
            let got = read(text.as_bytes()).await;
            assert!(got.is_err(), "{what}: {got:?}");
        }
        assert!(matches!(
            read(b"HTTP/1.1 404 Not Found\r\n\r\n").await,
            Err(DialError::Status(StatusCode::NOT_FOUND))
        ));
        // Closed before the head is complete.
        assert!(matches!(
            read(&answer("").as_bytes()[..30]).await,
            Err(DialError::Http(_))
        ));
        // Tokens are matched in any case, in lists.
        let text = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
                    connection: keep-alive, UPGRADE\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            read(text.as_bytes()).await.unwrap(),
            ((None, None), Vec::new())
        );
    }

    #[tokio::test]
    async fn an_endless_answer_head_stops_at_the_limit() {
        let mut lines = String::from("HTTP/1.1 101 Switching Protocols\r\n");
        for i in 0..10_000 {
            lines.push_str(&format!("x-{i}: 1\r\n"));
        }
        assert!(matches!(
            read(lines.as_bytes()).await,
            Err(DialError::BadAnswer("too many header lines"))
        ));
        let mut long = String::from("HTTP/1.1 101 Switching Protocols\r\nx-long: ");
        long.push_str(&"v".repeat(MAX_ANSWER));
        let mut io = long.as_bytes().chain(tokio::io::repeat(b'v'));
        assert!(matches!(
            read_answer(&mut io, ACCEPT).await,
            Err(DialError::BadAnswer("answer head too large"))
        ));
    }

    proptest::proptest! {
        /// Whatever an upstream answers, in however many reads, the answer is accepted or
        /// refused: never a panic, and never more than the bounded head is kept.
        #[test]
        fn any_answer_is_judged_without_panic(
            valid in proptest::prelude::any::<bool>(),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            split in 0usize..1400,
        ) {
            let mut bytes = if valid { answer("").into_bytes() } else { Vec::new() };
            bytes.extend_from_slice(&noise);
            let (first, second) = bytes.split_at(split.min(bytes.len()));
            let mut io = first.chain(second);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            if let Ok((_, rest)) = rt.block_on(read_answer(&mut io, ACCEPT)) {
                proptest::prop_assert!(valid, "noise alone accepted");
                proptest::prop_assert!(rest.len() <= noise.len());
            }
        }
    }
}
