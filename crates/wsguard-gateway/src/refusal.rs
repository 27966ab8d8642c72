//! Refusals on the wire: the one place a [`Refusal`] becomes an HTTP answer (status, fixed body,
//! the headers its reason calls for), is logged and counted.
//!
//! Nothing of the request is echoed; the path is logged printable and bounded. It decides no
//! refusal: the phases in `pipeline.rs` and the admission in `accept.rs` do.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::metrics::Metrics;
use crate::reason::Refusal;

pub(crate) type Body = Full<Bytes>;

pub(crate) fn text_response(status: u16, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The one way a refusal is answered on a read request: logged (`handshake_refused`, at info,
/// with the reason's detail if any, never the client's bytes), counted, and answered with the
/// table's status, body and headers.
pub(crate) fn refuse(
    metrics: &Metrics,
    refusal: Refusal,
    peer: SocketAddr,
    path: &str,
) -> Response<Body> {
    metrics.refused(refusal);
    tracing::info!(
        event = "handshake_refused",
        reason = refusal.code(),
        status = refusal.status(),
        detail = refusal.detail().unwrap_or("-"),
        peer = %peer,
        route = %loggable_path(path),
    );
    let mut r = text_response(refusal.status(), refusal.body());
    for (name, value) in refusal.headers() {
        r.headers_mut().insert(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    r
}

/// The same for a connection refused before its request was read (admission): counted, logged
/// at debug level (these come in floods, which must not flood the log too; the metric shows
/// them), and the answer's bytes, to be written once if the socket takes them at once. The
/// connection is closed after it.
pub(crate) fn refuse_unread(metrics: &Metrics, refusal: Refusal, peer: SocketAddr) -> String {
    metrics.refused(refusal);
    tracing::debug!(
        event = "handshake_refused",
        reason = refusal.code(),
        status = refusal.status(),
        peer = %peer,
    );
    let status = refusal.status();
    let phrase = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body = refusal.body();
    let mut head = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         cache-control: no-store\r\n"
    );
    for (name, value) in refusal.headers() {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    format!(
        "{head}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// What the HTTP layer refused on its own (it answers or drops the connection itself):
/// classified into the table, counted and logged at debug level, so that a slowloris client cut
/// at the deadline, an oversized head or unparsable bytes leave a trace. Other errors (the peer
/// went away) are not refusals.
pub(crate) fn http_layer_refusal(metrics: &Metrics, e: &hyper::Error, peer: SocketAddr) {
    let refusal = if e.is_timeout() {
        Refusal::HandshakeTimeout
    } else if e.is_parse_too_large() {
        Refusal::HeadersTooLarge
    } else if e.is_parse() {
        Refusal::MalformedRequest
    } else {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
        return;
    };
    metrics.refused(refusal);
    tracing::debug!(
        event = "handshake_refused",
        reason = refusal.code(),
        status = refusal.status(),
        peer = %peer,
    );
}

/// A request path safe to log: bounded, and only printable ASCII.
pub(crate) fn loggable_path(path: &str) -> String {
    path.chars()
        .take(128)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every refusal is counted and logged here and nowhere else: a new path that answered,
    /// counted or logged one itself would bypass the table. Read from the sources.
    #[test]
    fn every_refusal_goes_through_this_module() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![dir.clone()];
        let mut checked = 0;
        while let Some(d) = files.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files.push(path);
                    continue;
                }
                if path.file_name().unwrap() == "refusal.rs" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for needle in [
                    "metrics.refused(",
                    "\"handshake_refused\"",
                    "refusal.status()",
                ] {
                    assert!(
                        !text.contains(needle),
                        "{} uses {needle}: refusals go through refusal.rs",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 10, "read the sources");
    }
}
