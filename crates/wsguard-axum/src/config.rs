//! A guarded route from `wsguard.toml`'s own types ([`WsGuardLayer::from_config`]), so an app and
//! the gateway read one configuration alike.
//!
//! Owns which keys of `[gateway]` and `[[route]]` mean something in an app and how they become a
//! [`WsGuardLayer`]: the origins (the route's, else the gateway's), `allow_missing_origin`,
//! `[route.messages]` (validated by `wsguard-policy`, its JSON Schema file read and compiled
//! here, at startup) and `gateway.ticket_ttl`. Every problem is reported, each naming its key.
//! It must not guess: a `public` route is refused rather than left unauthenticated.

use std::sync::Arc;

use wsguard_policy::config::{GatewayConfig, RouteConfig};
use wsguard_policy::origin::OriginPolicy;
use wsguard_policy::policy::RoutePolicy;
use wsguard_policy::tickets::Tickets;
use wsguard_session::Sessions;

use crate::checks::Guard;
use crate::layer::WsGuardLayer;

/// Why a configuration cannot guard a route: every problem found, each `key: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// Every problem, one per entry, each naming its key (`route.messages.max_message_bytes:
    /// must be between 1 and 67108864`).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl WsGuardLayer {
    /// Guards a route as the gateway would guard `route` under `gateway`, with `sessions` and
    /// the session cookie `cookie_name` (`sessions.cookie_name`).
    ///
    /// Used: `route.allowed_origins` (else `gateway.allowed_origins`),
    /// `route.allow_missing_origin` (else `gateway.allow_missing_origin`), `route.messages`
    /// (with its `json_schema` file, read now) and `gateway.ticket_ttl` (at most 30 s). The app's
    /// router decides the path, and the app is the backend, so `path`, the upstream keys and
    /// `compression` (axum negotiates no extension) are not looked at; nor are the gateway's
    /// listeners, limits and timeouts. `public = true` is an error: this layer guards routes
    /// that need a session.
    pub fn from_config(
        sessions: Sessions,
        gateway: &GatewayConfig,
        route: &RouteConfig,
        cookie_name: &str,
    ) -> Result<WsGuardLayer, ConfigError> {
        let mut problems = Vec::new();
        if route.public {
            problems.push(
                "route.public: wsguard-axum guards routes that need a session; serve a public \
                 route without this layer"
                    .to_owned(),
            );
        }
        let (key, rules) = match &route.allowed_origins {
            Some(own) => ("route.allowed_origins", own),
            None => ("gateway.allowed_origins", &gateway.allowed_origins),
        };
        for (i, e) in OriginPolicy::problems(rules) {
            problems.push(format!("{key}[{i}]: {e}"));
        }
        let origins = OriginPolicy::new(
            rules,
            route
                .allow_missing_origin
                .unwrap_or(gateway.allow_missing_origin),
        );
        if let Err(e) = route.messages.validate("route.messages") {
            problems.extend(e.lines().map(str::to_owned));
        }
        let schema = match &route.messages.json_schema {
            None => None,
            Some(path) => match load_schema(path) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(format!("route.messages.json_schema: {e}"));
                    None
                }
            },
        };
        let origins = match origins {
            Ok(o) if problems.is_empty() => o,
            _ => return Err(ConfigError { problems }),
        };
        let messages = match schema {
            Some(v) => RoutePolicy::with_schema(route.messages.clone(), v),
            None => RoutePolicy::new(route.messages.clone()),
        };
        let ttl_ms = u64::try_from(gateway.ticket_ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(WsGuardLayer {
            guard: Arc::new(Guard::new(
                sessions,
                origins,
                cookie_name.to_owned(),
                Arc::new(Tickets::new(ttl_ms)),
                messages,
            )),
        })
    }
}

/// Reads and compiles a JSON Schema file, as the gateway does. Only references inside the file
/// resolve: nothing is fetched from the network or other files.
fn load_schema(path: &std::path::Path) -> Result<jsonschema::Validator, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    jsonschema::validator_for(&schema)
        .map_err(|e| format!("{}: not a usable JSON Schema: {e}", path.display()))
}
