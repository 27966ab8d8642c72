//! The key layout: every key the Redis store writes, named in one place.
//!
//! Owns [`Keys`], which builds these names from the configured prefix (`P`, default
//! `wsguard:`). The hash tags (`{…}`) decide which keys share a slot on Redis Cluster (see
//! `redis.rs`). It must not talk to Redis.
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `P s:{SID}` | hash | a live session (`u` uid, `d` data, `c` created, `a` last active, `e` expires) or its tombstone (`r`, `k` keep until) | `e`, then `k` |
//! | `P u:{UID}:s` | zset | the user's session ids, scored by expiry (index for list/revoke) | latest expiry |
//! | `P u:{UID}:r` | hash | the user revocation marker (`a` revoked at, `k` keep until) | `k` |
//! | `P u:{UID}:t` | zset | hashes of the user's outstanding tickets (per-user bound) | ticket TTL |
//! | `P u:{UID}:c` | zset | `conn@node` → heartbeat deadline (ms), cross-node connection count | latest deadline |
//! | `P u:{UID}:g:RULE` | string | GCRA theoretical arrival time (µs) | when full again |
//! | `P t:{SHA256}` | string | a ticket, by the SHA-256 of its value: the cookie it was issued for | ticket TTL (≤ 30 s) |
//! | `P {rev}:stream`, `P {rev}:seq` | stream, counter | revocation announcements (`MAXLEN ~`), their sequence | never (trimmed) |
//! | `P purge` | zset | purge ledger: `s:SID` / `r:UID` → expiry, so [`SessionStore::purge`](crate::SessionStore::purge) can count | trimmed by purge |
//! | `P nodes` | hash | node heartbeats for a cluster listing | entries pruned when listed |

use wsguard_token::UserId;

/// Key names (see the module doc).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    p: String,
}

impl Keys {
    /// The names under `prefix` (no `{` or `}`: checked by the configuration).
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            p: prefix.to_owned(),
        }
    }

    /// The prefix of every name.
    pub(super) fn prefix(&self) -> &str {
        &self.p
    }

    pub(super) fn session(&self, sid: &str) -> String {
        format!("{}s:{{{sid}}}", self.p)
    }
    pub(super) fn user_index(&self, uid: &UserId) -> String {
        format!("{}u:{{{}}}:s", self.p, uid.as_str())
    }
    pub(super) fn user_mark(&self, uid: &str) -> String {
        format!("{}u:{{{uid}}}:r", self.p)
    }
    pub(super) fn user_tickets(&self, uid: &UserId) -> String {
        format!("{}u:{{{}}}:t", self.p, uid.as_str())
    }
    pub(super) fn user_conns(&self, uid: &UserId) -> String {
        format!("{}u:{{{}}}:c", self.p, uid.as_str())
    }
    pub(super) fn user_rate(&self, uid: &UserId, rule: &str) -> String {
        format!("{}u:{{{}}}:g:{rule}", self.p, uid.as_str())
    }
    pub(super) fn ticket(&self, hash_hex: &str) -> String {
        format!("{}t:{{{hash_hex}}}", self.p)
    }
    pub(super) fn stream(&self) -> String {
        format!("{}{{rev}}:stream", self.p)
    }
    pub(super) fn seq(&self) -> String {
        format!("{}{{rev}}:seq", self.p)
    }
    pub(super) fn ledger(&self) -> String {
        format!("{}purge", self.p)
    }
    pub(super) fn nodes(&self) -> String {
        format!("{}nodes", self.p)
    }
    /// The key a ledger member stands for.
    pub(super) fn ledger_key(&self, member: &str) -> Option<String> {
        if let Some(sid) = member.strip_prefix("s:") {
            Some(self.session(sid))
        } else {
            member.strip_prefix("r:").map(|uid| self.user_mark(uid))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_members_map_back_to_keys() {
        let k = Keys::new("w:");
        assert_eq!(k.ledger_key("s:abc").as_deref(), Some("w:s:{abc}"));
        assert_eq!(k.ledger_key("r:bob").as_deref(), Some("w:u:{bob}:r"));
        assert_eq!(k.ledger_key("x"), None);
    }
}
