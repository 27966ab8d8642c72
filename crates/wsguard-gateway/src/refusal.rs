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

/// `Retry-After` of the refusals that a client may retry (limits, shutdown, store down).
const RETRY_AFTER: &str = "5";

/// Logs a refusal and builds its response.
pub(crate) fn refuse(refusal: Refusal, peer: SocketAddr, path: &str) -> Response<Body> {
    tracing::info!(
        event = "handshake_refused",
        reason = refusal.code(),
        status = refusal.status(),
        peer = %peer,
        route = %loggable_path(path),
    );
    let mut r = text_response(refusal.status(), refusal.body());
    match refusal {
        Refusal::BadVersion | Refusal::NotWebSocket => {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        Refusal::NotGet => {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        Refusal::NotPost => {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        Refusal::StoreUnavailable
        | Refusal::NoUpstream
        | Refusal::ShuttingDown
        | Refusal::TooManyConnections
        | Refusal::TooManyFromClient
        | Refusal::TooManyForUser => {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
        }
        _ => {}
    }
    if refusal.closes_connection() {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The response to a connection refused before its request was read, from the reason table.
pub(crate) fn unread_refusal(refusal: Refusal) -> String {
    let status = refusal.status();
    let phrase = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body = refusal.body();
    format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         cache-control: no-store\r\nretry-after: {RETRY_AFTER}\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A request path safe to log: bounded, and only printable ASCII.
pub(crate) fn loggable_path(path: &str) -> String {
    path.chars()
        .take(128)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
