//! Validation of the `[gateway]` section: values that parse but make no sense (zero timeouts,
//! a ticket lifetime over 30 s, header bounds, rates, origins, forwarded headers).
//!
//! Owns those rules and their messages. It must not build routes (`routes.rs`) or read files.

use std::time::Duration;

use super::{ConfigErrors, GatewayConfig};
use crate::origin::OriginPolicy;

/// Validates the `[gateway]` numbers: every problem, each naming its key.
pub fn validate(g: &GatewayConfig) -> Result<(), ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut nonzero = vec![
        ("gateway.handshake_timeout", g.handshake_timeout),
        ("gateway.upstream_timeout", g.upstream_timeout),
        ("gateway.ticket_ttl", g.ticket_ttl),
        ("gateway.pong_timeout", g.pong_timeout),
        ("gateway.send_timeout", g.send_timeout),
        ("gateway.upstream_backoff", g.upstream_backoff),
    ];
    if let Some(h) = &g.health_check {
        nonzero.push(("gateway.health_check.interval", h.interval));
        nonzero.push(("gateway.health_check.timeout", h.timeout));
        if h.path
            .as_deref()
            .is_some_and(|p| crate::target::normalise(p).ok().as_deref() != Some(p))
        {
            errors.push(
                "gateway.health_check.path",
                "must be an absolute path in normal form, like \"/healthz\"",
            );
        }
    }
    for (key, d) in nonzero {
        if d.is_zero() {
            errors.push(key, "must be more than zero");
        }
    }
    if g.ticket_ttl > Duration::from_secs(30) {
        errors.push("gateway.ticket_ttl", "must be at most 30s");
    }
    if !(1024..=1024 * 1024).contains(&g.max_header_bytes) {
        errors.push(
            "gateway.max_header_bytes",
            "must be between 1024 and 1048576",
        );
    }
    if !(8..=1024).contains(&g.max_headers) {
        errors.push("gateway.max_headers", "must be between 8 and 1024");
    }
    if let Some(r) = g.handshake_rate_per_ip
        && r.quota().is_none()
    {
        errors.push(
            "gateway.handshake_rate_per_ip",
            "per_second and burst must be more than zero",
        );
    }
    for (i, e) in OriginPolicy::problems(&g.allowed_origins) {
        errors.push(format!("gateway.allowed_origins[{i}]"), e.to_string());
    }
    if let Err(e) = crate::forward::Forwarding::new(
        &g.forward_headers,
        &g.client_headers,
        g.forward_session_cookie,
    ) {
        errors.extend(e);
    }
    errors.or(())
}
