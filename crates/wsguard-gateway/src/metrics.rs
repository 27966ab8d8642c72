//! Prometheus metrics, served as text at `/metrics` on the admin listener.
//!
//! Owns the metric set: open connections, connections not yet upgraded, handshakes by outcome
//! and reason, messages and bytes relayed by direction, closes by code and reason, the
//! revocation → close latency histogram, and per upstream: open sockets, health, draining and
//! failed dials. Labels come only from the reason table (`reason.rs`), fixed words and the
//! configured upstreams (`host:port`), never from requests, so cardinality is bounded. Label sets are static
//! strings and numbers (nothing is allocated to count), and hot-path counters are plain atomics
//! obtained once.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reason::{CloseReason, Refusal};

/// `N` label names and their values.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The labels of a close.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    code: Code,
    reason: &'static str,
}

/// The label of an upstream (`host:port`, from the configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

/// A close code, `none` if the close frame had none.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Code(Option<u16>);

impl EncodeLabelValue for Code {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        match self.0 {
            Some(c) => write!(encoder, "{c}"),
            None => encoder.write_str("none"),
        }
    }
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Proxied sockets open now.
    pub open: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Connections accepted and not yet upgraded (set from the limits when scraped).
    pub pending: Gauge<i64, std::sync::atomic::AtomicI64>,
    handshakes: Family<Labels<2>, Counter>,
    /// Accepted handshakes (one member of `handshakes`).
    accepted: Counter,
    closes: Family<CloseLabels, Counter>,
    reloads: Family<Labels<1>, Counter>,
    /// Client → upstream messages.
    pub messages_up: Counter<u64, AtomicU64>,
    /// Upstream → client messages.
    pub messages_down: Counter<u64, AtomicU64>,
    /// Client → upstream payload bytes.
    pub bytes_up: Counter<u64, AtomicU64>,
    /// Upstream → client payload bytes.
    pub bytes_down: Counter<u64, AtomicU64>,
    /// Seconds from a revocation reaching the gateway to the close frame being written.
    pub revocation_close: Histogram,
    upstream_open: Family<UpstreamLabel, Gauge>,
    upstream_up: Family<UpstreamLabel, Gauge>,
    upstream_draining: Family<UpstreamLabel, Gauge>,
    upstream_failures: Family<UpstreamLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh metric set.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wsguard");
        let open = Gauge::default();
        let pending = Gauge::default();
        let handshakes = Family::<Labels<2>, Counter>::default();
        let closes = Family::<CloseLabels, Counter>::default();
        let reloads = Family::<Labels<1>, Counter>::default();
        let messages = Family::<Labels<1>, Counter>::default();
        let bytes = Family::<Labels<1>, Counter>::default();
        let revocation_close = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let upstream_open = Family::<UpstreamLabel, Gauge>::default();
        let upstream_up = Family::<UpstreamLabel, Gauge>::default();
        let upstream_draining = Family::<UpstreamLabel, Gauge>::default();
        let upstream_failures = Family::<UpstreamLabel, Counter>::default();
        registry.register(
            "upstream_open_connections",
            "Sockets open to each upstream (and handshakes being dialled)",
            upstream_open.clone(),
        );
        registry.register(
            "upstream_up",
            "1 if the upstream is believed up (no recent failed dial, no failed probe), else 0",
            upstream_up.clone(),
        );
        registry.register(
            "upstream_draining",
            "1 if the upstream takes no new sockets (drained through the admin API), else 0",
            upstream_draining.clone(),
        );
        registry.register(
            "upstream_failures",
            "Failed dials or handshakes by upstream",
            upstream_failures.clone(),
        );
        registry.register(
            "open_connections",
            "Proxied WebSocket connections open now",
            open.clone(),
        );
        registry.register(
            "pending_handshakes",
            "Connections accepted and not yet upgraded (request or TLS handshake not finished)",
            pending.clone(),
        );
        registry.register(
            "handshakes",
            "Upgrade requests by outcome and reason",
            handshakes.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads by outcome (applied, refused)",
            reloads.clone(),
        );
        registry.register(
            "closes",
            "Closed proxied connections by close code and reason",
            closes.clone(),
        );
        registry.register(
            "messages",
            "Data messages relayed, by direction",
            messages.clone(),
        );
        registry.register(
            "bytes",
            "Payload bytes relayed, by direction",
            bytes.clone(),
        );
        registry.register(
            "revocation_close_seconds",
            "From a revocation reaching the gateway to the close frame written to the client",
            revocation_close.clone(),
        );
        let dir = |d: &'static str| [("direction", d)];
        Metrics {
            accepted: handshakes.get_or_create_owned(&[("outcome", "accepted"), ("reason", "ok")]),
            messages_up: messages.get_or_create_owned(&dir("client_to_upstream")),
            messages_down: messages.get_or_create_owned(&dir("upstream_to_client")),
            bytes_up: bytes.get_or_create_owned(&dir("client_to_upstream")),
            bytes_down: bytes.get_or_create_owned(&dir("upstream_to_client")),
            registry,
            open,
            pending,
            handshakes,
            closes,
            reloads,
            revocation_close,
            upstream_open,
            upstream_up,
            upstream_draining,
            upstream_failures,
        }
    }

    /// Counts a failed dial or handshake of an upstream.
    pub fn upstream_failed(&self, upstream: &str) {
        self.upstream_failures
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    /// Sets the per-upstream gauges to the upstreams configured now (those a reload removed are
    /// dropped).
    pub fn set_upstreams(&self, states: &[crate::pool::BackendState]) {
        self.upstream_open.clear();
        self.upstream_up.clear();
        self.upstream_draining.clear();
        for s in states {
            let label = UpstreamLabel {
                upstream: s.upstream.clone(),
            };
            self.upstream_open
                .get_or_create(&label)
                .set(i64::try_from(s.open).unwrap_or(i64::MAX));
            self.upstream_up.get_or_create(&label).set(i64::from(s.up));
            self.upstream_draining
                .get_or_create(&label)
                .set(i64::from(s.draining));
        }
    }

    /// Counts a configuration reload (`applied` or `refused`).
    pub fn reloaded(&self, outcome: &'static str) {
        self.reloads.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// Counts an accepted handshake.
    pub fn accepted(&self) {
        self.accepted.inc();
    }

    /// Counts a refused handshake.
    pub fn refused(&self, r: Refusal) {
        self.handshakes
            .get_or_create(&[("outcome", "refused"), ("reason", r.code())])
            .inc();
    }

    /// Counts a close: by the gateway (its reason), or by a peer (`client` / `upstream`).
    pub fn closed(&self, code: Option<u16>, reason: &'static str) {
        self.closes
            .get_or_create(&CloseLabels {
                code: Code(code),
                reason,
            })
            .inc();
    }

    /// Counts a gateway close.
    pub fn closed_by_gateway(&self, r: CloseReason) {
        self.closed(Some(r.close_code()), r.code());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.accepted();
        m.refused(Refusal::OriginNotAllowed);
        m.closed_by_gateway(CloseReason::SessionRevoked);
        m.closed(None, "client");
        m.closed(Some(1000), "upstream");
        m.messages_up.inc();
        m.bytes_down.inc_by(5);
        m.revocation_close.observe(0.0001);
        m.reloaded("refused");
        let text = m.render();
        for needle in [
            "wsguard_open_connections 0",
            "wsguard_pending_handshakes 0",
            r#"wsguard_handshakes_total{outcome="refused",reason="origin_not_allowed"} 1"#,
            r#"wsguard_handshakes_total{outcome="accepted",reason="ok"} 1"#,
            r#"wsguard_closes_total{code="1008",reason="session_revoked"} 1"#,
            r#"wsguard_closes_total{code="none",reason="client"} 1"#,
            r#"wsguard_closes_total{code="1000",reason="upstream"} 1"#,
            r#"wsguard_messages_total{direction="client_to_upstream"} 1"#,
            r#"wsguard_bytes_total{direction="upstream_to_client"} 5"#,
            "wsguard_revocation_close_seconds_count 1",
            r#"wsguard_reloads_total{outcome="refused"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
