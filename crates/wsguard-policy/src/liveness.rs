//! When a relayed socket must end for lack of life, or be pinged: absolute session expiry, the
//! idle timeout, keepalive pings to both peers and the pong each one owes.
//!
//! Owns [`Liveness`], a state machine over instants the caller supplies: it says when it next
//! needs to be woken ([`Liveness::next_wake`]) and, when woken, what to do
//! ([`Liveness::on_wake`]). It reads no clock and arms no timer (the gateway's relay does, on
//! tokio's clock, so its tests can run in paused time), and sends nothing itself.

use std::time::{Duration, Instant};

use crate::frames::Peer;
use crate::reason::CloseReason;

/// Liveness and backpressure settings of a relayed socket.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Close (1008 `idle timeout`) after this long without a data message in either direction.
    pub idle: Option<Duration>,
    /// Ping both peers this often.
    pub ping: Option<Duration>,
    /// A peer that has not answered a ping within this is gone (half-open): close both sides.
    pub pong: Duration,
    /// A peer that does not accept a message within this is too slow: close it (1013). Until
    /// then the other side is simply not read (bounded buffers, natural backpressure).
    pub send: Duration,
}

/// What a wake-up calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Close the socket, for this reason.
    Close(CloseReason),
    /// Send a ping to both peers (each now owes a pong).
    Ping,
    /// Nothing yet.
    Nothing,
}

/// The liveness of one socket.
#[derive(Debug, Clone)]
pub struct Liveness {
    timing: Timing,
    expires_at: Option<Instant>,
    period: Option<Duration>,
    next_tick: Option<Instant>,
    seen_activity: u64,
    quiet_since: Instant,
    next_ping: Option<Instant>,
    client_pong_due: Option<Instant>,
    upstream_pong_due: Option<Instant>,
}

impl Liveness {
    /// A socket opened at `now`, whose session ends `expires_in` later (none: never).
    pub fn new(now: Instant, timing: Timing, expires_in: Option<Duration>) -> Liveness {
        let period = tick_period(&timing);
        Liveness {
            timing,
            expires_at: expires_in.map(|d| now + d),
            period,
            next_tick: period.map(|p| now + p),
            seen_activity: 0,
            quiet_since: now,
            next_ping: timing.ping.map(|p| now + p),
            client_pong_due: None,
            upstream_pong_due: None,
        }
    }

    /// When to be woken next (`None`: never): the next check, the session's expiry or a pong
    /// falling due, whichever comes first, so an owed pong closes at its deadline.
    pub fn next_wake(&self) -> Option<Instant> {
        [
            self.next_tick,
            self.expires_at,
            self.client_pong_due,
            self.upstream_pong_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A pong arrived from `peer`: it owes none now.
    pub fn pong(&mut self, peer: Peer) {
        match peer {
            Peer::Client => self.client_pong_due = None,
            Peer::Upstream => self.upstream_pong_due = None,
        }
    }

    /// Woken at `now`, with `activity` the count of data messages relayed so far: expiry first,
    /// then idleness, then a pong overdue, then a ping due.
    pub fn on_wake(&mut self, now: Instant, activity: u64) -> Wake {
        if self.expires_at.is_some_and(|e| now >= e) {
            return Wake::Close(CloseReason::SessionExpired);
        }
        if activity != self.seen_activity {
            (self.seen_activity, self.quiet_since) = (activity, now);
        }
        if self
            .timing
            .idle
            .is_some_and(|idle| now.duration_since(self.quiet_since) >= idle)
        {
            return Wake::Close(CloseReason::Idle);
        }
        if self.client_pong_due.is_some_and(|d| now >= d)
            || self.upstream_pong_due.is_some_and(|d| now >= d)
        {
            return Wake::Close(CloseReason::NoPong);
        }
        // Woken early (a pong's deadline that the pong met): the checks keep their rhythm.
        if self.next_tick.is_some_and(|t| now >= t) {
            self.next_tick = self.period.map(|p| now + p);
        }
        if let (Some(p), Some(at)) = (self.timing.ping, self.next_ping)
            && now >= at
        {
            self.next_ping = Some(now + p);
            let due = now + self.timing.pong;
            self.client_pong_due = self.client_pong_due.or(Some(due));
            self.upstream_pong_due = self.upstream_pong_due.or(Some(due));
            return Wake::Ping;
        }
        Wake::Nothing
    }
}

/// How often liveness is checked, given the timing: at the ping interval, and four times per
/// idle timeout (so an idle socket closes within a quarter of it), at most every 10 ms.
fn tick_period(t: &Timing) -> Option<Duration> {
    let candidates = [t.ping, t.idle.map(|i| i / 4)];
    candidates
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.max(Duration::from_millis(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing(idle: Option<u64>, ping: Option<u64>, pong: u64) -> Timing {
        Timing {
            idle: idle.map(Duration::from_secs),
            ping: ping.map(Duration::from_secs),
            pong: Duration::from_secs(pong),
            send: S * 30,
        }
    }

    #[test]
    fn a_session_ends_at_its_expiry_to_the_instant() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, timing(None, None, 10), Some(S * 60));
        assert_eq!(l.next_wake(), Some(t0 + S * 60));
        assert_eq!(
            l.on_wake(t0 + S * 60 - Duration::from_millis(1), 0),
            Wake::Nothing
        );
        assert_eq!(
            l.on_wake(t0 + S * 60, 0),
            Wake::Close(CloseReason::SessionExpired)
        );
        let never = Liveness::new(t0, timing(None, None, 10), None);
        assert_eq!(never.next_wake(), None);
    }

    #[test]
    fn idleness_counts_from_the_last_activity_seen() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, timing(Some(40), None, 10), None);
        assert_eq!(
            l.next_wake(),
            Some(t0 + S * 10),
            "a quarter of the idle timeout"
        );
        assert_eq!(l.on_wake(t0 + S * 10, 0), Wake::Nothing);
        // Activity seen at 20 s: the quiet starts again there.
        assert_eq!(l.on_wake(t0 + S * 20, 3), Wake::Nothing);
        assert_eq!(l.on_wake(t0 + S * 59, 3), Wake::Nothing);
        assert_eq!(l.on_wake(t0 + S * 60, 3), Wake::Close(CloseReason::Idle));
    }

    #[test]
    fn pings_go_out_on_time_and_an_owed_pong_closes() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, timing(None, Some(30), 10), None);
        assert_eq!(l.next_wake(), Some(t0 + S * 30));
        assert_eq!(l.on_wake(t0 + S * 30, 0), Wake::Ping);
        // Woken when the pongs fall due, not at the next ping.
        assert_eq!(l.next_wake(), Some(t0 + S * 40));
        // The client answers; the upstream does not, by 40 s.
        l.pong(Peer::Client);
        assert_eq!(l.next_wake(), Some(t0 + S * 40));
        assert_eq!(
            l.on_wake(t0 + S * 40 - Duration::from_millis(1), 0),
            Wake::Nothing
        );
        assert_eq!(l.on_wake(t0 + S * 40, 0), Wake::Close(CloseReason::NoPong));
        // Both answering: pings keep going.
        let mut l = Liveness::new(t0, timing(None, Some(30), 10), None);
        for k in 1..5 {
            assert_eq!(l.on_wake(t0 + S * 30 * k, 0), Wake::Ping);
            l.pong(Peer::Client);
            l.pong(Peer::Upstream);
            assert_eq!(l.next_wake(), Some(t0 + S * 30 * (k + 1)));
            // Woken anyway at the deadline the pongs met (a timer armed before they came):
            // nothing, and the next ping keeps its time.
            assert_eq!(l.on_wake(t0 + S * 30 * k + S * 10, 0), Wake::Nothing);
            assert_eq!(l.next_wake(), Some(t0 + S * 30 * (k + 1)));
        }
    }

    #[test]
    fn wake_ups_are_bounded_below() {
        let t0 = Instant::now();
        let l = Liveness::new(
            t0,
            Timing {
                idle: Some(Duration::from_millis(8)),
                ping: None,
                pong: S,
                send: S,
            },
            None,
        );
        assert_eq!(l.next_wake(), Some(t0 + Duration::from_millis(10)));
    }
}
