//! The ticket endpoint ([`WsGuardLayer::ticket_endpoint`]): the gateway's `POST /wsguard/ticket`
//! for an app. A valid session cookie from an allowed origin gets a one-time ticket, for clients
//! that cannot send the cookie on the upgrade; CORS for the allowed origins only.
//!
//! Owns the endpoint's order (request rules, then the method: `OPTIONS` is a CORS preflight,
//! anything but `POST` is refused; then origin, cookie, authentication, issue) and its answers.
//! The ticket table is `wsguard_policy::tickets`; redeeming happens in the layer's checks. The
//! ticket is in the answer's body only, never logged.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use wsguard_policy::handshake;
use wsguard_policy::origin::Allowed;
use wsguard_policy::reason::Refusal;

use crate::checks::Guard;
use crate::layer::WsGuardLayer;
use crate::now_ms;
use crate::refused::Refused;

impl WsGuardLayer {
    /// The ticket endpoint, to mount where the app's pages ask for tickets (the gateway's path
    /// is `/wsguard/ticket`): `POST` with the session cookie from an allowed origin answers
    /// `{"ticket": "...", "expires_in_ms": 30000}` (no-store); the client then connects with
    /// `?ticket=...` once, within that time. `OPTIONS` answers a CORS preflight from an allowed
    /// origin. Every answer, refusals included, names an allowed request origin in
    /// `Access-Control-Allow-Origin` (never `*`) with credentials allowed, so an allowed page's
    /// script can read it. Refusals are the reason table's (`405 not_post`, `403
    /// origin_not_allowed`, `401 no_credentials`, `503 store_unavailable`, …).
    pub fn ticket_endpoint<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let guard = Arc::clone(&self.guard);
        axum::routing::any(move |req: Request| {
            let guard = Arc::clone(&guard);
            async move { ticket(&guard, req).await }
        })
    }
}

/// Answers one request to the ticket endpoint, CORS headers on every answer.
async fn ticket(guard: &Guard, req: Request) -> Response {
    guard.housekeeping_if_due();
    let path = req.uri().path().to_owned();
    let cors = cors_origin(guard, req.headers());
    let mut r = match issue(guard, req).await {
        Ok(r) => r,
        Err(refusal) => Refused::logged(refusal, &path),
    };
    let h = r.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = cors {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    r
}

/// The origin to name in the CORS headers: the request's `Origin` if the route allows it
/// (re-serialised), never `*` and never for `null` or none.
fn cors_origin(guard: &Guard, headers: &HeaderMap) -> Option<HeaderValue> {
    match guard
        .origins
        .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))
    {
        Ok(o @ Allowed::Origin(_)) => o.header_value(),
        _ => None,
    }
}

async fn issue(guard: &Guard, req: Request) -> Result<Response, Refusal> {
    let headers = req.headers();
    handshake::check_request(headers)?;
    if req.method() == Method::OPTIONS {
        return preflight(guard, headers);
    }
    if req.method() != Method::POST {
        return Err(Refusal::NotPost);
    }
    guard
        .origins
        .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))?;
    let token = zeroize::Zeroizing::new(guard.session_cookie(headers)?.to_owned());
    drop(req);
    let session = guard.authenticate(&token).await?;
    let ticket = guard
        .tickets
        .issue(session.uid().as_str(), &token, now_ms())
        .map_err(Refusal::from)?;
    let body = serde_json::json!({ "ticket": ticket, "expires_in_ms": guard.tickets.ttl_ms() });
    let mut r = Response::new(Body::from(body.to_string()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// A CORS preflight: only from an allowed origin, only for POST.
fn preflight(guard: &Guard, headers: &HeaderMap) -> Result<Response, Refusal> {
    if cors_origin(guard, headers).is_none() {
        return Err(match headers.get(header::ORIGIN) {
            None => Refusal::OriginMissing,
            Some(_) => Refusal::OriginNotAllowed,
        });
    }
    let method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
    if method.is_none_or(|m| m.as_bytes() != b"POST") {
        return Err(Refusal::NotPost);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
