//! Measurement containers: a latency histogram in microseconds (HdrHistogram, 3 significant
//! digits, up to one hour), counters of failures by kind, and the percentile summary that goes
//! into reports.
//!
//! Owns aggregation only. Must not read the clock or do I/O: callers decide what is in the
//! measurement window and pass durations in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency that is recorded exactly; longer ones are clamped to it.
const MAX_US: u64 = 3_600_000_000;

/// Why a statistics container could not be built or merged (never expected with fixed bounds).
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("creating histogram: {0}")]
    Create(#[from] hdrhistogram::CreationError),
    #[error("merging histograms: {0}")]
    Merge(#[from] hdrhistogram::AdditionError),
}

/// Latencies in microseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Latency {
    pub fn new() -> Result<Self, StatsError> {
        Ok(Self(Histogram::new_with_bounds(1, MAX_US, 3)?))
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Self) -> Result<(), StatsError> {
        Ok(self.0.add(&other.0)?)
    }

    pub fn summary(&self) -> LatencySummary {
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        let h = &self.0;
        LatencySummary {
            latency_p50_us: Some(h.value_at_quantile(0.50)),
            latency_p99_us: Some(h.value_at_quantile(0.99)),
            latency_p999_us: Some(h.value_at_quantile(0.999)),
            latency_max_us: Some(h.max()),
            latency_mean_us: Some(h.mean()),
        }
    }
}

/// Latency percentiles in microseconds; all `None` when nothing was measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    pub latency_p999_us: Option<u64>,
    pub latency_max_us: Option<u64>,
    pub latency_mean_us: Option<f64>,
}

impl LatencySummary {
    /// One line for the human-readable table.
    pub fn line(&self) -> String {
        let f = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}  mean {}",
            f(self.latency_p50_us),
            f(self.latency_p99_us),
            f(self.latency_p999_us),
            f(self.latency_max_us),
            self.latency_mean_us
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
        )
    }
}

/// Counters by label (failure kind, HTTP status, ...), sorted for stable output.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    pub fn add(&mut self, label: impl Into<String>) {
        *self.0.entry(label.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// "kind n, kind n" or "none".
    pub fn line(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The measurement window of a run: samples that start before `warmup_end` or finish after
/// `end` are discarded.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The run's time zero (payload timestamps count from here).
    pub base: Instant,
    pub warmup_end: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(base: Instant, warmup: Duration, duration: Duration) -> Self {
        let warmup_end = base + warmup;
        Self {
            base,
            warmup_end,
            end: warmup_end + duration,
        }
    }

    /// Whether a sample that started at `start` and finished at `done` is measured.
    pub fn counts(&self, start: Instant, done: Instant) -> bool {
        start >= self.warmup_end && done <= self.end
    }

    /// The length of the measured part.
    pub fn measured(&self) -> Duration {
        self.end.saturating_duration_since(self.warmup_end)
    }
}

/// `count / window` in events per second (0 for an empty window).
pub fn per_sec(count: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn percentiles_are_ordered_and_merged() {
        let mut a = Latency::new().unwrap();
        let mut b = Latency::new().unwrap();
        for us in 1..=1000 {
            a.record(Duration::from_micros(us));
        }
        b.record(Duration::from_secs(2));
        a.merge(&b).unwrap();
        let s = a.summary();
        assert_eq!(a.0.len(), 1001);
        let (p50, p99, max) = (
            s.latency_p50_us.unwrap(),
            s.latency_p99_us.unwrap(),
            s.latency_max_us.unwrap(),
        );
        assert!((495..=505).contains(&p50), "{p50}");
        assert!(p50 <= p99 && p99 <= max);
        assert!((1_999_000..=2_002_000).contains(&max), "{max}");
    }

    #[test]
    fn empty_summary_is_none_and_huge_values_are_clamped() {
        let mut l = Latency::new().unwrap();
        assert!(l.summary().latency_p50_us.is_none());
        l.record(Duration::from_secs(1_000_000));
        assert!(l.summary().latency_max_us.unwrap() >= MAX_US);
    }

    #[test]
    fn window_discards_warmup_and_late_samples() {
        let base = Instant::now();
        let w = Window::new(base, Duration::from_secs(2), Duration::from_secs(10));
        let at = |s: u64| base + Duration::from_secs(s);
        assert!(!w.counts(at(1), at(3)));
        assert!(w.counts(at(2), at(3)));
        assert!(w.counts(at(11), at(12)));
        assert!(!w.counts(at(11), at(13)));
        assert_eq!(w.measured(), Duration::from_secs(10));
    }

    #[test]
    fn counts_merge_and_total() {
        let mut a = Counts::default();
        a.add("refused_403");
        let mut b = Counts::default();
        b.add("refused_403");
        b.add("tcp_connect");
        a.merge(&b);
        assert_eq!(a.total(), 3);
        assert_eq!(a.line(), "refused_403 2, tcp_connect 1");
        assert_eq!(Counts::default().line(), "none");
    }
}
