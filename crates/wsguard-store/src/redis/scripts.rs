//! The Lua scripts of the Redis store: everything that runs inside Redis, in one place.
//!
//! Owns each script's source and its contract (KEYS, ARGV, reply), [`Scripts`] (every script
//! hashed once per store), [`SOURCES`] (what `SCRIPT LOAD` sends after a `NOSCRIPT`) and
//! `script_cmd!`, which builds an `EVALSHA` call. Each script touches one key, or keys of one hash
//! tag, so each is atomic, also on Redis Cluster. Scripts that need the time read the server's
//! `TIME`, so nodes with different clocks agree. The callers are `sessions.rs` (sessions),
//! `feed.rs` (the revocation stream) and `shared.rs` (tickets, connection counts, rates,
//! nodes). It must not decide anything: scripts store and report.

use redis::{Cmd, Script};

// Sessions (`sessions.rs`).

/// Creates a session unless its id exists (live or tombstoned). KEYS: session. ARGV: uid,
/// data, created, last_active, expires_at. Returns 1 if created.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'd', ARGV[2], 'c', ARGV[3], 'a', ARGV[4], 'e', ARGV[5])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
return 1
";

/// Adds a session id to its user's index, forgetting entries that expired before it was
/// created, and keeps the index until its latest entry expires. KEYS: index. ARGV: sid,
/// expires_at, created.
const INDEX_ADD: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local cur = redis.call('EXPIRETIME', KEYS[1])
if cur < tonumber(ARGV[2]) then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return 1
";

/// `last_active = max(stored, ARGV[1])` if the session is live. KEYS: session. Returns 1 if
/// live.
const TOUCH: &str = r"
local a = redis.call('HGET', KEYS[1], 'a')
if not a then return 0 end
if tonumber(ARGV[1]) > tonumber(a) then redis.call('HSET', KEYS[1], 'a', ARGV[1]) end
return 1
";

/// Turns a session into a tombstone kept until max(`ARGV[1]`, its expiry, an older keep).
/// With `ARGV[2]` (a uid) non-empty, only a live session of that user created at or before
/// `ARGV[3]` is ended. KEYS: session. Returns {ended (0/1), uid or nil, keep}.
const REVOKE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'u', 'c', 'e', 'k')
if ARGV[2] ~= '' then
  if (not f[1]) or f[1] ~= ARGV[2] or tonumber(f[2]) > tonumber(ARGV[3]) then
    return {0, false, 0}
  end
end
local keep = tonumber(ARGV[1])
if f[3] and tonumber(f[3]) > keep then keep = tonumber(f[3]) end
if f[4] and tonumber(f[4]) > keep then keep = tonumber(f[4]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', '1', 'k', string.format('%d', keep))
redis.call('EXPIREAT', KEYS[1], string.format('%d', keep))
return {1, f[1] or false, keep}
";

/// Moves the user's revocation marker forward (never back) and returns the user's indexed
/// session ids. KEYS: marker, index (one user: same hash tag). ARGV: now, keep_until.
const MARK_USER: &str = r"
local f = redis.call('HMGET', KEYS[1], 'a', 'k')
local at, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
if f[1] and tonumber(f[1]) > at then at = tonumber(f[1]) end
if f[2] and tonumber(f[2]) > keep then keep = tonumber(f[2]) end
redis.call('HSET', KEYS[1], 'a', string.format('%d', at), 'k', string.format('%d', keep))
redis.call('EXPIREAT', KEYS[1], string.format('%d', keep))
return redis.call('ZRANGE', KEYS[2], 0, -1)
";

/// Deletes a session, tombstone or marker whose own expiry is at or before `ARGV[1]` (so one
/// whose expiry was extended meanwhile stays). KEYS: the key. Returns 1 if deleted.
const PURGE_ONE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'e', 'k')
if not (f[1] or f[2]) then return 0 end
local t = math.max(tonumber(f[1] or '0'), tonumber(f[2] or '0'))
if t <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) return 1 end
return 0
";

// The revocation stream (`feed.rs`).

/// Appends an entry to the revocation stream with the next sequence number. KEYS: stream,
/// seq (same hash tag). ARGV: maxlen, kind (s/u/p), sid, uid, at, origin. Returns {seq, id}.
const ANNOUNCE: &str = r"
local n = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'n', n, 'k', ARGV[2], 's', ARGV[3], 'u', ARGV[4], 'a', ARGV[5], 'o', ARGV[6])
return {n, id}
";

/// The stream's position: {seq, last entry id}. KEYS: stream, seq.
const POSITION: &str = r"
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then return {n, last[1][1]} end
return {n, '0-0'}
";

// Shared between nodes (`shared.rs`).

/// Records a ticket's hash in its user's set unless `max` are outstanding. KEYS: the user's
/// ticket set. ARGV: hash, ttl ms, max. Returns 1 if recorded.
const TICKET_BOUND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// Check-and-add of a connection. KEYS: the user's connection set. ARGV: member, ttl ms,
/// limit (0: none). Returns {admitted 0/1, count after}.
const CONN_ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if tonumber(ARGV[3]) > 0 and n >= tonumber(ARGV[3]) then return {0, n} end
  n = n + 1
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1, n}
";

/// Moves the deadline of this node's connections of one user. KEYS: the user's set. ARGV:
/// ttl ms, members... Members are re-added if they had expired (they are still open).
const CONN_REFRESH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return #ARGV - 1
";

/// GCRA. KEYS: the rule's key (theoretical arrival time, µs). ARGV: emission interval µs,
/// burst (units), wanted, partial (1: grant what is there, up to wanted). Returns {granted,
/// retry after µs (when nothing was granted; -1: never, wanted exceeds the burst)}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local partial = ARGV[4] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local avail = math.floor((now + cap * T - tat) / T)
if avail < 0 then avail = 0 end
local grant = want
if avail < want then
  if partial then grant = avail else grant = 0 end
end
if grant <= 0 then
  local need = want
  if partial then need = 1 end
  if need > cap then return {0, -1} end
  return {0, math.ceil(tat + need * T - cap * T - now)}
end
tat = tat + grant * T
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {grant, 0}
";

/// Records a node's heartbeat. KEYS: the nodes hash. ARGV: id, sockets, address. The value is
/// `seen_ms sockets address`.
const NODE_BEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now) .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return now
";

/// Lists nodes seen within `ARGV[1]` ms, forgetting older ones. KEYS: the nodes hash. Returns
/// {now ms, id, value, id, value, ...}.
const NODE_LIST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {now}
for i = 1, #all, 2 do
  local seen = tonumber(string.match(all[i + 1], '^(%d+)'))
  if seen and now - seen <= tonumber(ARGV[1]) then
    table.insert(out, all[i]); table.insert(out, all[i + 1])
  elseif not seen or now - seen > 10 * tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
";

/// The store's Lua scripts (hashed once; loaded on first use and again after `NOSCRIPT`).
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) index_add: Script,
    pub(super) touch: Script,
    pub(super) revoke: Script,
    pub(super) mark_user: Script,
    pub(super) purge_one: Script,
    pub(super) announce: Script,
    pub(super) position: Script,
    pub(super) ticket_bound: Script,
    pub(super) conn_acquire: Script,
    pub(super) conn_refresh: Script,
    pub(super) gcra: Script,
    pub(super) node_beat: Script,
    pub(super) node_list: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            create: Script::new(CREATE),
            index_add: Script::new(INDEX_ADD),
            touch: Script::new(TOUCH),
            revoke: Script::new(REVOKE),
            mark_user: Script::new(MARK_USER),
            purge_one: Script::new(PURGE_ONE),
            announce: Script::new(ANNOUNCE),
            position: Script::new(POSITION),
            ticket_bound: Script::new(TICKET_BOUND),
            conn_acquire: Script::new(CONN_ACQUIRE),
            conn_refresh: Script::new(CONN_REFRESH),
            gcra: Script::new(GCRA),
            node_beat: Script::new(NODE_BEAT),
            node_list: Script::new(NODE_LIST),
        }
    }
}

/// The source of every script, for `SCRIPT LOAD`.
pub(super) const SOURCES: [&str; 14] = [
    CREATE,
    INDEX_ADD,
    TOUCH,
    REVOKE,
    MARK_USER,
    PURGE_ONE,
    ANNOUNCE,
    POSITION,
    TICKET_BOUND,
    CONN_ACQUIRE,
    CONN_REFRESH,
    GCRA,
    NODE_BEAT,
    NODE_LIST,
];

/// An `EVALSHA` command without its arguments (see [`script_cmd!`]).
pub(super) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

/// `script_cmd!(script, [key, ...], arg, ...)`: an `EVALSHA` command for [`RedisStore::eval`](super::store::RedisStore::eval)
/// or a pipeline (see [`RedisStore::pipe`](super::store::RedisStore::pipe) for `NOSCRIPT`).
macro_rules! script_cmd {
    ($script:expr, [$($key:expr),* $(,)?] $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_mut)]
        let mut cmd = $crate::redis::scripts::evalsha($script, &[$(AsRef::<str>::as_ref(&$key)),*]);
        $(cmd.arg($arg);)*
        cmd
    }};
}
pub(super) use script_cmd;
