//! A guarded route from `wsguard.toml`'s own types ([`WsGuardLayer::from_config`]), so an app and
//! the gateway read one configuration alike.
//!
//! Owns which keys of `[gateway]` and `[[route]]` mean something in an app and how they become a
//! [`WsGuardLayer`]: the origins (the route's, else the gateway's), `allow_missing_origin`,
//! `[route.messages]` (validated by `wsguard-policy`, its JSON Schema file read and compiled
//! here, at startup) and `gateway.ticket_ttl`; the whole `[gateway]` table is validated as the
//! gateway validates it. Every problem is reported, each naming its key.
//! It must not guess: a `public` route is refused rather than left unauthenticated.

use std::sync::Arc;

use wsguard_policy::config::{ConfigErrors, GatewayConfig, RouteConfig};
use wsguard_policy::origin::OriginPolicy;
use wsguard_policy::policy::RoutePolicy;
use wsguard_policy::tickets::Tickets;
use wsguard_session::Sessions;

use crate::checks::Guard;
use crate::layer::WsGuardLayer;

impl WsGuardLayer {
    /// Guards a route as the gateway would guard `route` under `gateway`, with `sessions` and
    /// the session cookie `cookie_name` (`sessions.cookie_name`).
    ///
    /// Used: `route.allowed_origins` (else `gateway.allowed_origins`),
    /// `route.allow_missing_origin` (else `gateway.allow_missing_origin`), `route.messages`
    /// (with its `json_schema` file, read now: a relative path is relative to the working
    /// directory, so resolve it against the file's directory first, as `wsguard` does) and
    /// `gateway.ticket_ttl`. The whole `[gateway]` table is validated as the gateway validates
    /// it. The app's router decides the path, and the app is the backend, so `path`, the
    /// upstream keys and `compression` (axum negotiates no extension) are not looked at; nor
    /// are the gateway's listeners, connection limits and timeouts. Of `[route.messages]`,
    /// `max_fragments` and `assembly_timeout` are not enforced: axum hands over whole messages
    /// only (a message's size is still bounded by `max_message_bytes` while it is assembled).
    /// `public = true` is an error: this layer guards routes that need a session.
    pub fn from_config(
        sessions: Sessions,
        gateway: &GatewayConfig,
        route: &RouteConfig,
        cookie_name: &str,
    ) -> Result<WsGuardLayer, ConfigErrors> {
        let mut problems = ConfigErrors::default();
        if route.public {
            problems.push(
                "route.public",
                "wsguard-axum guards routes that need a session; serve a public route without \
                 this layer",
            );
        }
        // The whole `[gateway]` table, as the gateway validates it: a file one accepts, the
        // other accepts (its origins included).
        if let Err(e) = wsguard_policy::config::validate(gateway) {
            problems.extend(e);
        }
        if let Some(own) = &route.allowed_origins {
            for (i, e) in OriginPolicy::problems(own) {
                problems.push(format!("route.allowed_origins[{i}]"), e.to_string());
            }
        }
        let origins = OriginPolicy::new(
            route
                .allowed_origins
                .as_ref()
                .unwrap_or(&gateway.allowed_origins),
            route
                .allow_missing_origin
                .unwrap_or(gateway.allow_missing_origin),
        );
        if let Err(e) = route.messages.validate("route.messages") {
            problems.extend(e);
        }
        let schema = match &route.messages.json_schema {
            None => None,
            Some(path) => match load_schema(path) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push("route.messages.json_schema", e);
                    None
                }
            },
        };
        let origins = match origins {
            Ok(o) if problems.is_empty() => o,
            _ => return Err(problems.or(()).err().unwrap_or_default()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use wsguard_policy::policy::Kind;
    use wsguard_session::Mode;
    use wsguard_store::MemoryStore;
    use wsguard_token::{KeyRing, TokenPolicy, Verifier};

    fn sessions() -> Sessions {
        let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default());
        Sessions::new(verifier, Arc::new(MemoryStore::new()), Mode::Stateful, 60)
    }

    fn gateway() -> GatewayConfig {
        GatewayConfig {
            allowed_origins: vec!["https://app.example".to_owned()],
            ..GatewayConfig::default()
        }
    }

    fn problems(gateway: &GatewayConfig, route: &RouteConfig) -> Vec<String> {
        match WsGuardLayer::from_config(sessions(), gateway, route, "wsguard_session") {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_valid_route_guards() {
        let route = RouteConfig::new("/chat", "ws://unused:1");
        assert_eq!(problems(&gateway(), &route), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut gateway = gateway();
        gateway.ticket_ttl = std::time::Duration::from_secs(60);
        let mut route = RouteConfig::new("/chat", "ws://unused:1");
        route.public = true;
        route.allowed_origins = Some(vec!["not an origin".to_owned()]);
        route.messages.max_message_bytes = 0;
        route.messages.kind = Kind::Json;
        route.messages.json_schema = Some("/nonexistent/wsguard-axum/schema.json".into());
        let found = problems(&gateway, &route);
        for key in [
            "route.public:",
            "gateway.ticket_ttl:",
            "route.allowed_origins[0]:",
            "route.messages.max_message_bytes:",
            "route.messages.json_schema: cannot read",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(key)),
                "{key} not in {found:#?}"
            );
        }
    }

    #[test]
    fn an_empty_allowlist_allows_no_origin() {
        let layer = WsGuardLayer::from_config(
            sessions(),
            &GatewayConfig::default(),
            &RouteConfig::new("/chat", "ws://unused:1"),
            "wsguard_session",
        )
        .unwrap();
        let origin: &[u8] = b"https://app.example";
        assert_eq!(
            layer.guard.origins.check([origin].into_iter()),
            Err(wsguard_policy::reason::Refusal::OriginNotAllowed)
        );
    }
}
