//! The ticket endpoint (`POST /wsguard/ticket`): a valid session cookie from an allowed origin
//! gets a one-time ticket for clients that cannot send the cookie on the upgrade; CORS for the
//! allowed origins only.
//!
//! The ticket table itself is `tickets.rs`; redeeming happens in the pipeline's authentication.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::cookie;
use crate::reason::Refusal;
use crate::refusal::Body;
use crate::state::{Gateway, now_ms};

impl Gateway {
    /// The origin to name in the ticket endpoint's CORS headers: the request's `Origin` if the
    /// ticket origins allow it (re-serialised), never `*` and never for `null` or none.
    pub(crate) fn cors_origin(&self, headers: &http::HeaderMap) -> Option<HeaderValue> {
        match self
            .state
            .load()
            .ticket_origins
            .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))
        {
            Ok(o @ crate::origin::Allowed::Origin(_)) => o.header_value(),
            _ => None,
        }
    }

    /// `POST /wsguard/ticket`: a valid cookie and an allowed Origin get a one-time ticket.
    /// `OPTIONS` answers a CORS preflight from an allowed origin (a page on another origin
    /// that asks with `credentials: "include"` and a `Content-Type`).
    pub(crate) async fn ticket(&self, req: &Request<Incoming>) -> Result<Response<Body>, Refusal> {
        if req.method() == Method::OPTIONS {
            return self.preflight(req.headers());
        }
        if req.method() != Method::POST {
            return Err(Refusal::NotPost);
        }
        let headers = req.headers();
        self.state
            .load()
            .ticket_origins
            .check(headers.get_all(header::ORIGIN).iter().map(|v| v.as_bytes()))?;
        let token = cookie::session_cookie(
            headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
            &self.cookie_name,
            self.cookie_values(),
        )
        .map_err(Refusal::from)?
        .ok_or(Refusal::NoCredentials)?
        .to_owned();
        let session = self.authenticate(&token).await?;
        let ticket = self
            .tickets
            .issue(session.uid().as_str(), &token, now_ms())
            .map_err(Refusal::from)?;
        let body = serde_json::json!({ "ticket": ticket, "expires_in_ms": self.tickets.ttl_ms() });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    /// A CORS preflight for the ticket endpoint: only from an allowed origin, only for POST.
    pub(crate) fn preflight(&self, headers: &http::HeaderMap) -> Result<Response<Body>, Refusal> {
        if self.cors_origin(headers).is_none() {
            return Err(match headers.get(header::ORIGIN) {
                None => Refusal::OriginMissing,
                Some(_) => Refusal::OriginNotAllowed,
            });
        }
        let method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        if method.is_none_or(|m| m.as_bytes() != b"POST") {
            return Err(Refusal::NotPost);
        }
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
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
}
