//! One-time connect tickets, for clients that cannot send the session cookie on the upgrade.
//!
//! Owns the ticket table: a random 256-bit ticket maps to the cookie it was issued for and an
//! expiry (at most 30 s). Redeeming removes it, so a ticket works once; the caller then
//! re-authenticates the cookie, so a session revoked after the ticket was issued is still refused.
//! The table is bounded, in all and per user (so one user cannot fill it for everyone). Time is a
//! parameter (milliseconds); no I/O besides the OS random source.

use std::collections::HashMap;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Longest ticket lifetime allowed by configuration, milliseconds.
pub const MAX_TTL_MS: u64 = 30_000;

/// Most tickets outstanding at once; beyond this, issuing fails until some expire or are used.
pub const MAX_OUTSTANDING: usize = 100_000;

/// Most tickets one user may have outstanding.
pub const MAX_PER_USER: usize = 16;

/// The ticket table.
pub struct Tickets {
    ttl_ms: u64,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    tickets: HashMap<String, Entry>,
    per_user: HashMap<String, usize>,
}

struct Entry {
    user: String,
    cookie: Zeroizing<String>,
    expires_at_ms: u64,
}

impl Table {
    fn forget_user(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
    }

    /// Drops expired tickets; returns how many.
    fn purge(&mut self, now_ms: u64) -> usize {
        let expired: Vec<String> = self
            .tickets
            .iter()
            .filter(|(_, e)| e.expires_at_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            if let Some(e) = self.tickets.remove(k) {
                self.forget_user(&e.user);
            }
        }
        expired.len()
    }
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.table.lock().map(|t| t.tickets.len()).unwrap_or(0);
        f.debug_struct("Tickets")
            .field("ttl_ms", &self.ttl_ms)
            .field("outstanding", &n)
            .finish()
    }
}

/// Why a ticket could not be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Too many tickets outstanding.
    #[error("too many outstanding tickets")]
    Full,
    /// This user has too many tickets outstanding.
    #[error("too many outstanding tickets for this user")]
    UserFull,
}

impl Tickets {
    /// A table whose tickets live `ttl_ms` (clamped to [`MAX_TTL_MS`]).
    pub fn new(ttl_ms: u64) -> Tickets {
        Tickets {
            ttl_ms: ttl_ms.clamp(1, MAX_TTL_MS),
            table: Mutex::new(Table::default()),
        }
    }

    /// Ticket lifetime, milliseconds.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// Issues a ticket for `cookie` (an already authenticated session cookie of `user`) at
    /// `now_ms`.
    pub fn issue(&self, user: &str, cookie: &str, now_ms: u64) -> Result<String, TicketError> {
        let mut bytes = [0u8; 32];
        // The OS random source failing is not recoverable for a security gateway.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut bytes).expect("OS random generator unavailable");
        let ticket =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let full = |t: &Table| {
            if t.per_user.get(user).copied().unwrap_or(0) >= MAX_PER_USER {
                Some(TicketError::UserFull)
            } else if t.tickets.len() >= MAX_OUTSTANDING {
                Some(TicketError::Full)
            } else {
                None
            }
        };
        if full(&table).is_some() {
            table.purge(now_ms);
            if let Some(e) = full(&table) {
                return Err(e);
            }
        }
        table.tickets.insert(
            ticket.clone(),
            Entry {
                user: user.to_owned(),
                cookie: Zeroizing::new(cookie.to_owned()),
                expires_at_ms: now_ms + self.ttl_ms,
            },
        );
        *table.per_user.entry(user.to_owned()).or_default() += 1;
        Ok(ticket)
    }

    /// Redeems a ticket at `now_ms`: returns the cookie it was issued for if the ticket exists
    /// and has not expired. Either way the ticket is gone afterwards.
    pub fn redeem(&self, ticket: &str, now_ms: u64) -> Option<Zeroizing<String>> {
        if ticket.len() != 43 {
            return None;
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let entry = table.tickets.remove(ticket)?;
        table.forget_user(&entry.user);
        (now_ms < entry.expires_at_ms).then_some(entry.cookie)
    }

    /// Drops expired tickets; returns how many.
    pub fn purge(&self, now_ms: u64) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .purge(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use() {
        let t = Tickets::new(30_000);
        let ticket = t.issue("u", "cookie", 1000).unwrap();
        assert_eq!(ticket.len(), 43);
        assert_eq!(t.redeem(&ticket, 1001).unwrap().as_str(), "cookie");
        assert!(t.redeem(&ticket, 1002).is_none(), "second use");
    }

    #[test]
    fn expires_exactly() {
        let t = Tickets::new(30_000);
        let a = t.issue("u", "c", 0).unwrap();
        let b = t.issue("u", "c", 0).unwrap();
        assert!(
            t.redeem(&a, 29_999).is_some(),
            "valid through the last millisecond"
        );
        assert!(t.redeem(&b, 30_000).is_none());
        let c = t.issue("u", "c", 0).unwrap();
        assert_eq!(t.purge(30_000), 1);
        assert!(t.redeem(&c, 1).is_none());
    }

    #[test]
    fn one_user_cannot_fill_the_table() {
        let t = Tickets::new(1000);
        let mine: Vec<String> = (0..MAX_PER_USER)
            .map(|_| t.issue("mallory", "c", 0).unwrap())
            .collect();
        assert_eq!(t.issue("mallory", "c", 0), Err(TicketError::UserFull));
        assert!(t.issue("alice", "c", 0).is_ok(), "others are not affected");
        // A used ticket frees a place; so does expiry.
        assert!(t.redeem(&mine[0], 1).is_some());
        assert!(t.issue("mallory", "c", 1).is_ok());
        assert_eq!(t.issue("mallory", "c", 1), Err(TicketError::UserFull));
        assert!(
            t.issue("mallory", "c", 1000).is_ok(),
            "expired ones are purged when full"
        );
    }

    #[test]
    fn ttl_is_capped_and_garbage_is_refused() {
        assert_eq!(Tickets::new(3_600_000).ttl_ms(), MAX_TTL_MS);
        let t = Tickets::new(1000);
        assert!(t.redeem("", 0).is_none());
        assert!(t.redeem(&"x".repeat(10_000), 0).is_none());
        let ticket = t.issue("u", "c", 0).unwrap();
        assert!(t.redeem(&ticket.to_uppercase(), 0).is_none() || ticket == ticket.to_uppercase());
    }
}
