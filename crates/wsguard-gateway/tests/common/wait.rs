//! Waiting on state, never on time: each wait is bounded and names what it waited for when it
//! panics.

use super::*;

/// Waits until the gateway counts `n` connections not yet upgraded.
pub async fn wait_pending(h: &Harness, n: usize) {
    let needle = format!("wsguard_pending_handshakes {n}");
    assert!(h.wait_for_metric(&needle).await.is_some(), "never {needle}");
}
