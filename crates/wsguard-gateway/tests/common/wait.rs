//! Waiting on state, never on time: each wait is bounded and names what it waited for when it
//! panics.

use super::*;

/// How long any wait here lasts before it fails the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Waits until `done()` holds, checking every 10 ms, for at most [`WAIT`]; panics naming `what`
/// otherwise. A state to wait on, not a time to sleep: it returns as soon as the state holds.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for {what}, in vain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the gateway counts `n` connections not yet upgraded.
pub async fn wait_pending(h: &Harness, n: usize) {
    let needle = format!("wsguard_pending_handshakes {n}");
    assert!(h.wait_for_metric(&needle).await.is_some(), "never {needle}");
}
