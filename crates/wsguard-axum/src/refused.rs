//! Refusals on the wire: the one place in this crate where a [`Refusal`] becomes an HTTP answer
//! (the reason table's status, fixed body and headers) and is logged.
//!
//! It decides no refusal (`checks.rs`, the extractors and the ticket endpoint do) and echoes
//! nothing of the request: the log line holds the reason's code and detail, never a token,
//! cookie or ticket.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use wsguard_policy::reason::Refusal;

/// A refused request, answered as the gateway answers it: the reason table's status, its body
/// (`unauthenticated: session_expired`) and headers (`Retry-After`, `Allow`, …), with
/// `Cache-Control: no-store`.
///
/// The rejection of [`GuardedSession`](crate::GuardedSession), and what [`WsGuardLayer`]
/// answers a refused upgrade with.
///
/// [`WsGuardLayer`]: crate::WsGuardLayer
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub(crate) Refusal);

impl Refused {
    /// Why: the reason in the table (`wsguard_policy::reason`).
    pub fn refusal(&self) -> Refusal {
        self.0
    }

    /// Logs the refusal (`event=handshake_refused`, at info, as the gateway does) and builds its
    /// answer.
    pub(crate) fn logged(refusal: Refusal, path: &str) -> Response {
        tracing::info!(
            event = "handshake_refused",
            reason = refusal.code(),
            status = refusal.status(),
            detail = refusal.detail().unwrap_or("-"),
            route = %loggable_path(path),
        );
        Refused(refusal).into_response()
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let refusal = self.0;
        let mut r = Response::new(Body::from(refusal.body()));
        // Every status in the table is a valid one (the table's own test checks 400..600).
        *r.status_mut() =
            StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in refusal.headers() {
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        r
    }
}

/// A request path safe to log: bounded, and only printable ASCII.
fn loggable_path(path: &str) -> String {
    path.chars()
        .take(128)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_answers_with_the_tables_status_body_and_headers() {
        for refusal in Refusal::all() {
            let r = Refused(refusal).into_response();
            assert_eq!(r.status().as_u16(), refusal.status(), "{}", refusal.code());
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
            for (name, value) in refusal.headers() {
                assert_eq!(r.headers()[*name], *value, "{}", refusal.code());
            }
        }
    }

    #[test]
    fn logged_paths_are_bounded_and_printable() {
        assert_eq!(loggable_path("/chat\n\u{e9}"), "/chat??");
        assert_eq!(loggable_path(&"/a".repeat(200)).len(), 128);
    }
}
