//! What gateway nodes share on Redis beyond sessions: one-time tickets, per-user connection
//! counts, per-user rates (GCRA) and node heartbeats.
//!
//! Owns the inherent methods of [`RedisStore`] for them, their types, and
//! [`ConnectionCounter`]. Their Lua scripts are in `scripts.rs`: each touches one key (or one
//! user's keys, tagged `{UID}`), so each is atomic, also on Redis Cluster. Times for expiry and
//! rates come from the server's `TIME` inside the scripts, so nodes with different clocks agree;
//! nothing here reads the local clock for a decision. It must not decide policy (which limit, which rule, what to do
//! when Redis is down): the gateway does, and these calls only report.
//!
//! - **Tickets**: [`RedisStore::issue_ticket`] stores the SHA-256 of the ticket (never the
//!   ticket) with the cookie it was issued for, for at most [`MAX_TICKET_TTL`], at most
//!   `max_per_user` outstanding per user; [`RedisStore::redeem_ticket`] hands the cookie back
//!   exactly once (`GETDEL`), on any node.
//! - **Connections**: [`ConnectionCounter`] adds `conn@node` to the user's sorted set scored by
//!   a heartbeat deadline, refusing past a limit (check-and-add in one script); a node
//!   refreshes its entries with [`ConnectionCounter::heartbeat`], and a crashed node's entries
//!   stop counting when their deadline passes.
//! - **Rates**: [`RedisStore::take_rate`] is GCRA on one key per user and rule; it can take
//!   several units at once (a lease), so a caller can spend them locally instead of asking per
//!   message.
//! - **Nodes**: [`RedisStore::node_heartbeat`] and [`RedisStore::list_nodes`] for a cluster
//!   listing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wsguard_token::UserId;

use super::scripts::script_cmd;
use super::store::RedisStore;
use crate::store::StoreError;

/// Longest a ticket may live.
pub const MAX_TICKET_TTL: Duration = Duration::from_secs(30);

/// What [`RedisStore::issue_ticket`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketIssue {
    /// Stored: redeemable once, on any node, until its TTL.
    Issued,
    /// The user already has `max_per_user` tickets outstanding (issued within the TTL).
    TooMany,
}

/// A rate: `per_second` units refill continuously, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcraRate {
    /// Units per second (> 0).
    pub per_second: f64,
    /// Most units available at once (≥ 1).
    pub burst: u64,
}

/// What [`RedisStore::take_rate`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateGrant {
    /// Units granted (0: none; the caller is over its rate).
    pub granted: u64,
    /// When nothing was granted: how long until the units asked for (one, for a partial take)
    /// are there; `None` if never (more than the burst asked for at once).
    pub retry_after: Option<Duration>,
}

/// What [`ConnectionCounter::acquire`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The connection is counted (it must be released).
    pub admitted: bool,
    /// The user's connections across nodes, this one included if admitted.
    pub count: u64,
}

/// A node's heartbeat, for a cluster listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHeartbeat {
    /// The node's id (printable, no spaces).
    pub id: String,
    /// Where it can be reached (e.g. its public listener), no spaces.
    pub address: String,
    /// Its open sockets.
    pub sockets: u64,
}

/// A node as [`RedisStore::list_nodes`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    /// The node's id.
    pub id: String,
    /// Its address.
    pub address: String,
    /// Its open sockets at its last heartbeat.
    pub sockets: u64,
    /// Its last heartbeat, Unix milliseconds by the Redis server's clock.
    pub last_seen_ms: u64,
    /// How long ago that was, by the same clock.
    pub age: Duration,
}

fn invalid(what: &str) -> StoreError {
    StoreError::Backend(format!("invalid argument: {what}"))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Hex SHA-256 of a ticket: what the store keeps instead of the ticket.
fn ticket_hash(ticket: &str) -> String {
    let digest = Sha256::digest(ticket.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

fn plain_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

impl RedisStore {
    /// Stores `ticket` (by its SHA-256 only) for `uid`, redeemable once for `cookie` within
    /// `ttl` (capped at [`MAX_TICKET_TTL`]), unless `max_per_user` are outstanding. One round
    /// trip.
    pub async fn issue_ticket(
        &self,
        ticket: &str,
        uid: &UserId,
        cookie: &str,
        ttl: Duration,
        max_per_user: u32,
    ) -> Result<TicketIssue, StoreError> {
        let ttl = ms(ttl.min(MAX_TICKET_TTL));
        let hash = ticket_hash(ticket);
        let key = self.keys().ticket(&hash);
        let mut pipe = redis::pipe();
        pipe.add_command(script_cmd!(
            &self.scripts().ticket_bound,
            [self.keys().user_tickets(uid)],
            &hash,
            ttl,
            max_per_user
        ));
        // Written in the same round trip; taken back below if the bound refused it (the
        // caller never hands that ticket out, so nobody can redeem it meanwhile).
        pipe.cmd("SET")
            .arg(&key)
            .arg(cookie)
            .arg("PX")
            .arg(ttl)
            .arg("NX")
            .ignore();
        let (recorded,): (u8,) = self.pipe(&pipe).await?;
        if recorded == 1 {
            return Ok(TicketIssue::Issued);
        }
        let _: u64 = self.query(redis::cmd("DEL").arg(&key)).await?;
        Ok(TicketIssue::TooMany)
    }

    /// Redeems `ticket`: the cookie it was issued for, exactly once across every node
    /// (`GETDEL`); `None` if unknown, expired or already redeemed.
    pub async fn redeem_ticket(&self, ticket: &str) -> Result<Option<String>, StoreError> {
        self.query(redis::cmd("GETDEL").arg(self.keys().ticket(&ticket_hash(ticket))))
            .await
    }

    /// Takes up to `wanted` units of the user's `rule` (GCRA, one key per user and rule, the
    /// server's clock). With `partial`, grants what is available up to `wanted` (a lease: spend
    /// the units locally, ask again when they are gone); without, all or nothing. `rule` is a
    /// short name (`[a-z0-9_-]`, e.g. `messages`, `bytes`). One round trip.
    pub async fn take_rate(
        &self,
        uid: &UserId,
        rule: &str,
        rate: GcraRate,
        wanted: u64,
        partial: bool,
    ) -> Result<RateGrant, StoreError> {
        let rule_ok = !rule.is_empty()
            && rule.len() <= 32
            && rule
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !rule_ok {
            return Err(invalid("rate rule name"));
        }
        if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
            return Err(invalid("rate: per_second must be > 0 and burst ≥ 1"));
        }
        if wanted == 0 {
            return Ok(RateGrant {
                granted: 0,
                retry_after: Some(Duration::ZERO),
            });
        }
        let interval_us = 1e6 / rate.per_second;
        let (granted, retry_us): (u64, i64) = self
            .eval(script_cmd!(
                &self.scripts().gcra,
                [self.keys().user_rate(uid, rule)],
                interval_us,
                rate.burst,
                wanted,
                if partial { "1" } else { "0" }
            ))
            .await?;
        Ok(RateGrant {
            granted,
            retry_after: if granted > 0 {
                None
            } else {
                u64::try_from(retry_us).ok().map(Duration::from_micros)
            },
        })
    }

    /// Records this node's heartbeat (the server's time is its "last seen").
    pub async fn node_heartbeat(&self, node: &NodeHeartbeat) -> Result<(), StoreError> {
        if !plain_token(&node.id) || !plain_token(&node.address) {
            return Err(invalid(
                "node id and address: printable ASCII without spaces",
            ));
        }
        let _: u64 = self
            .eval(script_cmd!(
                &self.scripts().node_beat,
                [self.keys().nodes()],
                &node.id,
                node.sockets,
                &node.address
            ))
            .await?;
        Ok(())
    }

    /// The nodes whose last heartbeat is at most `max_age` old (by the server's clock), by id.
    /// Nodes silent for ten times that are forgotten.
    pub async fn list_nodes(&self, max_age: Duration) -> Result<Vec<NodeSeen>, StoreError> {
        let reply: Vec<String> = self
            .eval(script_cmd!(
                &self.scripts().node_list,
                [self.keys().nodes()],
                ms(max_age)
            ))
            .await?;
        let mut it = reply.into_iter();
        let now: u64 = it
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("redis: node list without time".into()))?;
        let rest: Vec<String> = it.collect();
        let mut out = Vec::new();
        for pair in rest.chunks(2) {
            let [id, value] = pair else { continue };
            let mut parts = value.splitn(3, ' ');
            let (Some(seen), Some(sockets), Some(address)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(seen), Ok(sockets)) = (seen.parse::<u64>(), sockets.parse::<u64>()) else {
                continue;
            };
            out.push(NodeSeen {
                id: id.clone(),
                address: address.to_owned(),
                sockets,
                last_seen_ms: seen,
                age: Duration::from_millis(now.saturating_sub(seen)),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// A counter of this node's connections per user, shared with every node (see
    /// [`ConnectionCounter`]). `node` names this node (printable, no spaces); `ttl` is how
    /// long an entry counts without a heartbeat (call [`ConnectionCounter::heartbeat`] well
    /// within it, e.g. every ttl/3).
    pub fn connection_counter(
        &self,
        node: &str,
        ttl: Duration,
    ) -> Result<ConnectionCounter, StoreError> {
        if !plain_token(node) || node.contains('@') {
            return Err(invalid("node id: printable ASCII without spaces or @"));
        }
        Ok(ConnectionCounter {
            store: self.clone(),
            node: node.to_owned(),
            ttl,
            held: Mutex::new(HashMap::new()),
        })
    }
}

/// Per-user connection counts across nodes: each user's sorted set holds `conn@node` scored by
/// a heartbeat deadline. This node remembers what it added, to refresh and release it.
#[derive(Debug)]
pub struct ConnectionCounter {
    store: RedisStore,
    node: String,
    ttl: Duration,
    /// uid → connection ids this node holds.
    held: Mutex<HashMap<UserId, Vec<String>>>,
}

impl ConnectionCounter {
    fn member(&self, conn: &str) -> String {
        format!("{conn}@{}", self.node)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<String>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts connection `conn` (unique on this node, no spaces) of `uid` unless the user
    /// already has `limit` across all nodes (0: no limit). Atomic check-and-add, one round
    /// trip. An admitted connection must be [`ConnectionCounter::release`]d.
    pub async fn acquire(
        &self,
        uid: &UserId,
        conn: &str,
        limit: u64,
    ) -> Result<Admission, StoreError> {
        if !plain_token(conn) {
            return Err(invalid("connection id: printable ASCII without spaces"));
        }
        let (admitted, count): (u8, u64) = self
            .store
            .eval(script_cmd!(
                &self.store.scripts().conn_acquire,
                [self.store.keys().user_conns(uid)],
                self.member(conn),
                ms(self.ttl),
                limit
            ))
            .await?;
        let admitted = admitted == 1;
        if admitted {
            let mut held = self.held();
            let conns = held.entry(uid.clone()).or_default();
            if !conns.iter().any(|c| c == conn) {
                conns.push(conn.to_owned());
            }
        }
        Ok(Admission { admitted, count })
    }

    /// Stops counting a connection (it closed). Forgotten locally even if Redis cannot be
    /// reached: its entry then expires with its deadline.
    pub async fn release(&self, uid: &UserId, conn: &str) -> Result<(), StoreError> {
        {
            let mut held = self.held();
            if let Some(conns) = held.get_mut(uid) {
                conns.retain(|c| c != conn);
                if conns.is_empty() {
                    held.remove(uid);
                }
            }
        }
        let _: u64 = self
            .store
            .query(
                redis::cmd("ZREM")
                    .arg(self.store.keys().user_conns(uid))
                    .arg(self.member(conn)),
            )
            .await?;
        Ok(())
    }

    /// Moves the deadline of every connection this node holds (one pipelined round trip for
    /// all users). Returns how many entries were refreshed.
    pub async fn heartbeat(&self) -> Result<usize, StoreError> {
        let held: Vec<(UserId, Vec<String>)> = self
            .held()
            .iter()
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect();
        if held.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for (uid, conns) in &held {
            let mut cmd = script_cmd!(
                &self.store.scripts().conn_refresh,
                [self.store.keys().user_conns(uid)],
                ms(self.ttl)
            );
            for c in conns {
                cmd.arg(self.member(c));
            }
            pipe.add_command(cmd).ignore();
        }
        let () = self.store.pipe(&pipe).await?;
        Ok(held.iter().map(|(_, c)| c.len()).sum())
    }

    /// How many connections this node holds (all users).
    pub fn held_here(&self) -> usize {
        self.held().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_stored_as_sha256() {
        assert_eq!(
            ticket_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
