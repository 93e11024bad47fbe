//! The Redis engine: every repository on one Redis (or a Redis Cluster, as
//! the key layout allows), through a bb8 pool of multiplexed connections.
//!
//! Every call is bounded by the configured timeout; a timeout or connection
//! failure is `StoreError::Unavailable`. Operations that append a durable
//! event run as one Lua script (`EVALSHA`, loaded on first use), so the
//! membership and idempotency checks, `seq` assignment, the writes, the
//! event-log trim and the `PUBLISH` happen atomically and in seq order.
//!
//! ## Script contracts
//!
//! All scripts share `COMMON`: `append_event(room, events, channel, tail,
//! log_len, now)` increments `room.seq`, builds the envelope as
//! `0x01 ‖ seq (u64 BE) ‖ tail` (see `crate::codec`), adds it to the event log
//! scored by seq, trims the log to `log_len`, sets `last_activity` and
//! publishes it; `write_message` stores the envelope as the message's state
//! with its TTL and indexes the id by seq. Each script returns a status
//! string first (`ok`, `no_room`, `not_member`, `duplicate`, `full`,
//! `not_joined`, `exists`) and then its data.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::pool::{PooledRedis, RedisManager};
use async_trait::async_trait;
use bb8::{Pool, PooledConnection};
use redis::{AsyncCommands, RedisError, Script, Value};

use super::breaker::{Breaker, BreakerState};
use super::{
    AppendOutcome, CacheStore, CreateOutcome, HistoryPage, JoinOutcome, LeaveOutcome, MessageStore,
    ReplaceOutcome, Replay, RoomStore, SessionRecord, SessionStore, StoreError, StoreHealth,
    StoreResult, StoreSettings, StoredMessage,
};
use crate::codec;
use crate::events::{EventLog, RawReplay};
use crate::layout::Keys;
use crate::metrics::Metrics;
use crate::model::{Event, Message, Room, User, now_ms, now_us};

const COMMON: &str = r#"
local function be64(n)
  local out = {}
  for i = 8, 1, -1 do
    local b = n % 256
    out[i] = string.char(b)
    n = (n - b) / 256
  end
  return table.concat(out)
end
local function append_event(room_key, events_key, channel, tail, log_len, now)
  local seq = redis.call('HINCRBY', room_key, 'seq', 1)
  local env = string.char(1) .. be64(seq) .. tail
  redis.call('ZADD', events_key, seq, env)
  redis.call('ZREMRANGEBYRANK', events_key, 0, -(tonumber(log_len) + 1))
  redis.call('HSET', room_key, 'last_activity', now)
  redis.call('PUBLISH', channel, env)
  return seq, env
end
local function write_message(msg_key, messages_key, msg_id, seq, env, ttl)
  redis.call('SET', msg_key, env, 'PX', ttl)
  redis.call('ZADD', messages_key, seq, msg_id)
end
local function trim_expired(messages_key, events_key, msg_prefix, max_remove)
  local removed = 0
  while removed < max_remove do
    local batch = redis.call('ZRANGE', messages_key, 0, 99, 'WITHSCORES')
    if #batch == 0 then
      redis.call('DEL', events_key)
      return removed
    end
    for i = 1, #batch, 2 do
      if redis.call('EXISTS', msg_prefix .. batch[i]) == 1 then
        redis.call('ZREMRANGEBYSCORE', events_key, '-inf', '(' .. batch[i + 1])
        return removed
      end
      redis.call('ZREM', messages_key, batch[i])
      removed = removed + 1
    end
  end
  return removed
end
"#;

// Prepended to every script that writes on a client's behalf. Its last
// ARGV is a deadline in Redis time (ms): a call that reaches Redis after its
// caller has given up (answered `unavailable`) must not be applied later.
const GUARD: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local now_t = redis.call('TIME')
if tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000) > tonumber(ARGV[#ARGV]) then
  return {'late'}
end
"#;

// KEYS: room, members, messages, events, message, dedupe
// ARGV: user, msg_id, tail, ttl_ms, log_len, now, channel, dedupe_mode, dedupe_ttl_ms
// dedupe_mode: 0 none, 1 check then remember, 2 remember (the original expired)
const SEND: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
if ARGV[8] == '1' then
  local prior = redis.call('GET', KEYS[6])
  if prior then return {'duplicate', prior} end
end
local seq, env = append_event(KEYS[1], KEYS[4], ARGV[7], ARGV[3], ARGV[5], ARGV[6])
write_message(KEYS[5], KEYS[3], ARGV[2], seq, env, ARGV[4])
if ARGV[8] ~= '0' then redis.call('SET', KEYS[6], ARGV[2], 'PX', ARGV[9]) end
return {'ok', seq}
"#;

// KEYS: room, members, member_conns, presence, messages, events, message
// ARGV: id, code, name, created_by, created_at, max, private, user_id,
//       user_json, conn, presence_member, msg_id, tail, ttl_ms, log_len, now, channel
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'code', ARGV[2], 'name', ARGV[3],
  'created_by', ARGV[4], 'created_at', ARGV[5], 'max_participants', ARGV[6],
  'private', ARGV[7], 'seq', 0, 'last_activity', ARGV[16])
redis.call('HSET', KEYS[2], ARGV[8], ARGV[9])
redis.call('SADD', KEYS[3], ARGV[10])
redis.call('ZADD', KEYS[4], ARGV[16], ARGV[11])
local seq, env = append_event(KEYS[1], KEYS[6], ARGV[17], ARGV[13], ARGV[15], ARGV[16])
write_message(KEYS[7], KEYS[5], ARGV[12], seq, env, ARGV[14])
return {'ok', seq}
"#;

// KEYS: room, members, member_conns, presence, messages, events, message
// ARGV: user_id, user_json, conn, presence_member, now, msg_id, tail, ttl_ms, log_len, channel
const JOIN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local first = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0
if first then
  local max = tonumber(redis.call('HGET', KEYS[1], 'max_participants'))
  if redis.call('HLEN', KEYS[2]) >= max then return {'full'} end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
if first then
  local seq, env = append_event(KEYS[1], KEYS[6], ARGV[10], ARGV[7], ARGV[9], ARGV[5])
  write_message(KEYS[7], KEYS[5], ARGV[6], seq, env, ARGV[8])
  return {'ok', 1}
end
return {'ok', 0}
"#;

// KEYS: room, members, member_conns, presence, messages, events, message
// ARGV: user_id, conn, presence_member, now, msg_id, tail, ttl_ms, log_len, channel
const LEAVE: &str = r#"
redis.call('ZREM', KEYS[4], ARGV[3])
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return {'not_joined'} end
if redis.call('SCARD', KEYS[3]) > 0 then return {'ok', 0} end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local seq, env = append_event(KEYS[1], KEYS[6], ARGV[9], ARGV[6], ARGV[8], ARGV[4])
  write_message(KEYS[7], KEYS[5], ARGV[5], seq, env, ARGV[7])
end
return {'ok', 1}
"#;

// KEYS: room, events, messages   ARGV: since, message key prefix
// Drops expired messages (and the events about them), then reads the room's
// seq and the retained events after `since` consistently.
const SINCE: &str = r#"
trim_expired(KEYS[3], KEYS[2], ARGV[2], 1000)
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local evs = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
return {seq, evs}
"#;

// KEYS: messages, events   ARGV: message key prefix
// Drops expired messages from the index and the events about them; returns
// how many were dropped (at most 1000 a call).
const TRIM: &str = r#"
return trim_expired(KEYS[1], KEYS[2], ARGV[1], 1000)
"#;

// KEYS: room, events, message   ARGV: expected, tail, log_len, now, channel
// Compare-and-set of a message's state, appending its event.
const REPLACE: &str = r#"
local cur = redis.call('GET', KEYS[3])
if not cur then return {'gone'} end
if cur ~= ARGV[1] then return {'changed'} end
local seq, env = append_event(KEYS[1], KEYS[2], ARGV[5], ARGV[2], ARGV[3], ARGV[4])
redis.call('SET', KEYS[3], env, 'KEEPTTL')
return {'ok', seq}
"#;

// KEYS: room, members, messages, events, presence
// ARGV: member_conns key prefix, idle-before ms
// Deletes an idle room nobody is connected to; returns its code.
const CLOSE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
if redis.call('ZCARD', KEYS[5]) > 0 then return {'busy'} end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_activity') or '0')
if last >= tonumber(ARGV[2]) then return {'busy'} end
local code = redis.call('HGET', KEYS[1], 'code') or ''
for _, u in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('DEL', ARGV[1] .. u) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {'ok', code}
"#;

// KEYS: room_code   ARGV: room id — deletes the code if it still names the room.
const RELEASE_CODE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

struct Scripts {
    send: Script,
    create: Script,
    join: Script,
    leave: Script,
    since: Script,
    trim: Script,
    replace: Script,
    close: Script,
    release_code: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        let guarded = |body: &str| Script::new(&format!("{GUARD}\n{COMMON}\n{body}"));
        Scripts {
            send: guarded(SEND),
            create: guarded(CREATE),
            join: guarded(JOIN),
            leave: guarded(LEAVE),
            since: with_common(SINCE),
            trim: with_common(TRIM),
            replace: guarded(REPLACE),
            close: Script::new(CLOSE),
            release_code: Script::new(RELEASE_CODE),
        }
    }
}

/// The Redis engine. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool<RedisManager>,
    keys: Keys,
    settings: StoreSettings,
    timeout: Duration,
    scripts: Scripts,
    metrics: Arc<Metrics>,
    breaker: Breaker,
    /// In `ConnMode::Shared`, the connection every call clones.
    shared: Option<std::sync::Mutex<Option<PooledRedis>>>,
    /// Redis clock minus ours, in ms, measured with each heartbeat; write
    /// deadlines are given in Redis time.
    clock_offset_ms: AtomicI64,
    bumps: Bumps,
}

/// How often a node moves a busy room forward in `active_rooms`.
const BUMP_EVERY_MS: u64 = 1000;

/// Rooms this node recently moved forward in `active_rooms`, so a busy room
/// costs one `ZADD` a second rather than one per message. The room hash's
/// `last_activity` stays exact; the listing order is exact to a second.
#[derive(Default)]
struct Bumps {
    last: std::sync::Mutex<HashMap<String, u64>>,
}

impl Bumps {
    /// Whether `room` is due a bump at `now` (ms), recording it if so.
    fn due(&self, room: &str, now: u64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(room)
            .is_some_and(|at| now < at.saturating_add(BUMP_EVERY_MS))
        {
            return false;
        }
        if last.len() >= 4096 {
            last.retain(|_, at| now < at.saturating_add(BUMP_EVERY_MS));
        }
        last.insert(room.to_owned(), now);
        true
    }
}

/// How store calls get a Redis connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    /// Each call checks a connection out of the bb8 pool.
    Pool,
    /// Every call shares one multiplexed connection, which pipelines
    /// concurrent calls; replaced when it breaks.
    Shared,
}

/// A connection for one store call.
enum Conn<'a> {
    Pooled(PooledConnection<'a, RedisManager>),
    Shared(PooledRedis),
}

impl std::ops::Deref for Conn<'_> {
    type Target = PooledRedis;
    fn deref(&self) -> &PooledRedis {
        match self {
            Conn::Pooled(c) => c,
            Conn::Shared(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PooledRedis {
        match self {
            Conn::Pooled(c) => c,
            Conn::Shared(c) => c,
        }
    }
}

/// Consecutive failed round trips that open the breaker.
const BREAKER_THRESHOLD: u32 = 5;
/// How long the breaker stays open before a probe.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl RedisStore {
    /// Connects a pool of `pool_size` connections to `url`. Fails when the
    /// URL is invalid; an unreachable Redis is not an error here (the pool
    /// connects lazily, readiness reports it).
    pub fn connect(
        url: &str,
        pool_size: u32,
        timeout: Duration,
        keys: Keys,
        settings: StoreSettings,
        metrics: Arc<Metrics>,
    ) -> Result<RedisStore, StoreError> {
        Self::connect_with(
            url,
            pool_size,
            timeout,
            keys,
            settings,
            metrics,
            ConnMode::Pool,
        )
    }

    /// Like `connect`, choosing how calls get connections.
    pub fn connect_with(
        url: &str,
        pool_size: u32,
        timeout: Duration,
        keys: Keys,
        settings: StoreSettings,
        metrics: Arc<Metrics>,
        mode: ConnMode,
    ) -> Result<RedisStore, StoreError> {
        let manager = RedisManager::new(url).map_err(unavailable)?;
        // No PING on checkout: broken connections are found by their own
        // failed commands (see `pool`).
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle((mode == ConnMode::Pool).then_some(1))
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .build_unchecked(manager);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                pool,
                keys,
                settings,
                timeout,
                scripts: Scripts::new(),
                metrics,
                breaker: Breaker::new(BREAKER_THRESHOLD, BREAKER_COOLDOWN, timeout * 2),
                shared: (mode == ConnMode::Shared).then(|| std::sync::Mutex::new(None)),
                clock_offset_ms: AtomicI64::new(0),
                bumps: Bumps::default(),
            }),
        })
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Connections of the pool: (in use, idle).
    /// In `ConnMode::Shared` the shared connection counts as one busy
    /// connection while it is up.
    pub fn pool_state(&self) -> (u32, u32) {
        if let Some(slot) = &self.inner.shared {
            let up = slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|c| !c.is_broken());
            return (u32::from(up), 0);
        }
        let s = self.inner.pool.state();
        (s.connections - s.idle_connections, s.idle_connections)
    }

    /// The circuit breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// A pooled connection, unless the breaker is open.
    async fn conn(&self) -> StoreResult<Conn<'_>> {
        if !self.inner.breaker.admit() {
            return Err(StoreError::CircuitOpen);
        }
        if let Some(slot) = &self.inner.shared {
            let current = slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|c| !c.is_broken());
            if let Some(c) = current {
                return Ok(Conn::Shared(c));
            }
            let fresh =
                tokio::time::timeout(self.inner.timeout, self.inner.pool.dedicated_connection())
                    .await
                    .map_err(|_| StoreError::Unavailable("Redis connect timed out".into()))
                    .and_then(|r| r.map_err(unavailable));
            return match fresh {
                Ok(c) => {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                    Ok(Conn::Shared(c))
                }
                Err(e) => {
                    self.inner.breaker.record(false);
                    Err(e)
                }
            };
        }
        match self.inner.pool.get().await {
            Ok(c) => Ok(Conn::Pooled(c)),
            Err(e) => {
                self.inner.breaker.record(false);
                Err(StoreError::Unavailable(format!("no Redis connection: {e}")))
            }
        }
    }

    /// The deadline (Redis time, ms) for a write starting now: half the
    /// timeout, so that a write Redis applies is answered well before the
    /// caller gives up on it.
    fn deadline(&self) -> i64 {
        now_ms() as i64
            + self.inner.clock_offset_ms.load(Ordering::Relaxed)
            + (self.inner.timeout.as_millis() / 2) as i64
    }

    /// Decides a send whose answer was lost (timeout, dropped connection):
    /// once Redis's clock is past the script's deadline the script can no
    /// longer run, so whether the message exists is the final answer. Only
    /// when Redis cannot be asked does the send stay ambiguous (the client's
    /// `client_msg_id` retry then settles it).
    async fn settle(
        &self,
        message: &Message,
        deadline: i64,
        reason: String,
    ) -> StoreResult<AppendOutcome> {
        let offset = self.inner.clock_offset_ms.load(Ordering::Relaxed);
        let past = deadline - offset + 20 - now_ms() as i64;
        if past > 0 {
            tokio::time::sleep(Duration::from_millis(past as u64)).await;
        }
        // A short look: a Redis that does not answer now will not settle it.
        let look = tokio::time::timeout(
            self.inner.timeout / 2,
            MessageStore::message(self, &message.room, &message.id),
        )
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("settling timed out".into())));
        match look {
            Ok(Some(stored)) => {
                tracing::info!(message = %message.id, "a send whose answer was lost was applied");
                Ok(AppendOutcome::Appended(stored.message))
            }
            Ok(None) => Err(StoreError::Unavailable(reason)),
            Err(e) => {
                tracing::warn!(message = %message.id, error = %e, "cannot tell whether a send was applied");
                Err(StoreError::Unavailable(reason))
            }
        }
    }

    /// Measures the offset between the Redis clock and ours.
    async fn sync_clock(&self, c: &mut Conn<'_>) -> StoreResult<()> {
        let before = now_ms() as i64;
        let (secs, micros): (i64, i64) = self
            .timed("time", redis::cmd("TIME").query_async(&mut **c))
            .await?;
        let after = now_ms() as i64;
        let redis_ms = secs * 1000 + micros / 1000;
        self.inner
            .clock_offset_ms
            .store(redis_ms - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    /// Runs one Redis round trip with the timeout, recording its latency.
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let out = match tokio::time::timeout(self.inner.timeout, fut).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis did not answer {op} within {:?}",
                self.inner.timeout
            ))),
        };
        self.inner
            .metrics
            .redis_latency(op, start.elapsed().as_secs_f64());
        self.inner.breaker.record(out.is_ok());
        out
    }

    fn k(&self) -> &Keys {
        &self.inner.keys
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.settings.message_ttl.as_millis() as u64
    }

    /// Reads message records by id (`None` for expired ones), in order.
    async fn read_messages(
        &self,
        c: &mut Conn<'_>,
        room: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.k().message(room, id)).collect();
        self.timed(
            "message_mget",
            redis::cmd("MGET").arg(&keys).query_async(&mut **c),
        )
        .await
    }

    /// Drops expired messages from the room's index and their events.
    async fn trim(&self, c: &mut Conn<'_>, room: &str) -> StoreResult<()> {
        let k = self.k();
        let mut inv = self.inner.scripts.trim.prepare_invoke();
        inv.key(k.room_messages(room))
            .key(k.room_events(room))
            .arg(k.message_prefix(room));
        let _: i64 = self
            .timed("trim_expired", inv.invoke_async(&mut **c))
            .await?;
        Ok(())
    }

    /// The KEYS of the join and leave scripts, in their order.
    fn membership_keys(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        room: &str,
        user: &str,
        note: &str,
    ) {
        let k = self.k();
        inv.key(k.room(room))
            .key(k.room_members(room))
            .key(k.member_conns(room, user))
            .key(k.presence(room))
            .key(k.room_messages(room))
            .key(k.room_events(room))
            .key(k.message(room, note));
    }

    fn session_ttl_ms(&self) -> i64 {
        self.inner.settings.session_ttl.as_millis() as i64
    }

    async fn read_rooms(&self, c: &mut Conn<'_>, ids: &[String]) -> StoreResult<Vec<Option<Room>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.k().room(id))
                .hlen(self.k().room_members(id));
        }
        let raw: Vec<Value> = self.timed("room_read", pipe.query_async(&mut **c)).await?;
        let mut out = Vec::with_capacity(ids.len());
        for pair in raw.chunks(2) {
            let fields: HashMap<String, String> =
                redis::from_redis_value_ref(&pair[0]).map_err(corrupt)?;
            let count: u32 = redis::from_redis_value_ref(&pair[1]).map_err(corrupt)?;
            out.push(parse_room(&fields, count)?);
        }
        Ok(out)
    }
}

fn parse_room(fields: &HashMap<String, String>, count: u32) -> StoreResult<Option<Room>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .ok_or_else(|| corrupt(format!("room hash has no {k}")))
    };
    let num = |k: &str| -> StoreResult<u64> {
        get(k)?
            .parse::<u64>()
            .map_err(|e| corrupt(format!("room field {k}: {e}")))
    };
    Ok(Some(Room {
        id: get("id")?.clone(),
        code: get("code")?.clone(),
        name: get("name")?.clone(),
        created_by: get("created_by")?.clone(),
        created_at: num("created_at")?,
        max_participants: num("max_participants")? as u32,
        private: get("private")? == "1",
        participant_count: count,
        last_seq: num("seq")?,
    }))
}

/// The first data item of a script reply, or its default when absent.
fn first<T: redis::FromRedisValue + Default>(data: &[Value]) -> StoreResult<T> {
    data.first()
        .map(redis::from_redis_value_ref)
        .transpose()
        .map_err(corrupt)
        .map(Option::unwrap_or_default)
}

/// Splits a script reply into its status and data. `late` (the write's
/// deadline passed before Redis ran it) is `Unavailable`: nothing was written.
fn status(value: Value) -> StoreResult<(String, Vec<Value>)> {
    let mut items: Vec<Value> = redis::from_redis_value(value).map_err(corrupt)?;
    if items.is_empty() {
        return Err(corrupt("empty script reply"));
    }
    let head: String = redis::from_redis_value(items.remove(0)).map_err(corrupt)?;
    if head == "late" {
        return Err(StoreError::Unavailable(
            "Redis ran the write after its deadline and refused it; nothing was written".into(),
        ));
    }
    Ok((head, items))
}

fn user_json(user: &User) -> String {
    serde_json::to_string(user).unwrap_or_default()
}

fn presence_member(user: &str, conn: &str) -> String {
    format!("{user}:{conn}")
}

fn note_tail(note: &Message) -> Vec<u8> {
    let mut stored = note.clone();
    stored.seq = 0;
    codec::encode_tail(&Event::MessageCreated(stored), now_us())
}

#[async_trait]
impl RoomStore for RedisStore {
    async fn create_room(
        &self,
        room: &Room,
        creator: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<CreateOutcome> {
        let k = self.k();
        let mut c = self.conn().await?;
        let claimed: Option<String> = self
            .timed(
                "room_code_claim",
                redis::cmd("SET")
                    .arg(k.room_code(&room.code))
                    .arg(&room.id)
                    .arg("NX")
                    .query_async(&mut *c),
            )
            .await?;
        if claimed.is_none() {
            return Ok(CreateOutcome::CodeTaken);
        }
        let now = now_ms();
        let mut inv = self.inner.scripts.create.prepare_invoke();
        inv.key(k.room(&room.id))
            .key(k.room_members(&room.id))
            .key(k.member_conns(&room.id, &creator.id))
            .key(k.presence(&room.id))
            .key(k.room_messages(&room.id))
            .key(k.room_events(&room.id))
            .key(k.message(&room.id, &note.id))
            .arg(&room.id)
            .arg(&room.code)
            .arg(&room.name)
            .arg(&room.created_by)
            .arg(room.created_at)
            .arg(room.max_participants)
            .arg(if room.private { "1" } else { "0" })
            .arg(&creator.id)
            .arg(user_json(creator))
            .arg(conn)
            .arg(presence_member(&creator.id, conn))
            .arg(&note.id)
            .arg(note_tail(note))
            .arg(self.ttl_ms())
            .arg(self.inner.settings.event_log_len)
            .arg(now)
            .arg(k.channel(&room.id))
            .arg(self.deadline());
        let reply: Value = self.timed("room_create", inv.invoke_async(&mut *c)).await?;
        let (st, data) = status(reply)?;
        if st != "ok" {
            return Err(corrupt(format!("room create script said {st}")));
        }
        let seq: u64 = first(&data)?;
        let _: () = self
            .timed("active_rooms", c.zadd(k.active_rooms(), &room.id, now))
            .await?;
        let mut created = room.clone();
        created.last_seq = seq;
        created.participant_count = 1;
        Ok(CreateOutcome::Created(created))
    }

    async fn room(&self, id: &str) -> StoreResult<Option<Room>> {
        let mut c = self.conn().await?;
        Ok(self
            .read_rooms(&mut c, &[id.to_owned()])
            .await?
            .pop()
            .flatten())
    }

    async fn room_id_by_code(&self, code: &str) -> StoreResult<Option<String>> {
        let mut c = self.conn().await?;
        let key = self.k().room_code(code);
        self.timed("room_code_get", c.get(key)).await
    }

    async fn join(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<JoinOutcome> {
        let k = self.k();
        let mut c = self.conn().await?;
        let mut inv = self.inner.scripts.join.prepare_invoke();
        self.membership_keys(&mut inv, room, &user.id, &note.id);
        inv.arg(&user.id)
            .arg(user_json(user))
            .arg(conn)
            .arg(presence_member(&user.id, conn))
            .arg(now_ms())
            .arg(&note.id)
            .arg(note_tail(note))
            .arg(self.ttl_ms())
            .arg(self.inner.settings.event_log_len)
            .arg(k.channel(room))
            .arg(self.deadline());
        let reply: Value = self.timed("room_join", inv.invoke_async(&mut *c)).await?;
        match status(reply)? {
            (s, _) if s == "no_room" => Ok(JoinOutcome::NoRoom),
            (s, _) if s == "full" => Ok(JoinOutcome::Full),
            (s, data) if s == "ok" => {
                let first_join: i64 = first(&data)?;
                Ok(JoinOutcome::Joined {
                    first: first_join == 1,
                })
            }
            (s, _) => Err(corrupt(format!("join script said {s}"))),
        }
    }

    async fn leave(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<LeaveOutcome> {
        let k = self.k();
        let mut c = self.conn().await?;
        let mut inv = self.inner.scripts.leave.prepare_invoke();
        self.membership_keys(&mut inv, room, &user.id, &note.id);
        inv.arg(&user.id)
            .arg(conn)
            .arg(presence_member(&user.id, conn))
            .arg(now_ms())
            .arg(&note.id)
            .arg(note_tail(note))
            .arg(self.ttl_ms())
            .arg(self.inner.settings.event_log_len)
            .arg(k.channel(room))
            .arg(self.deadline());
        let reply: Value = self.timed("room_leave", inv.invoke_async(&mut *c)).await?;
        match status(reply)? {
            (s, _) if s == "not_joined" => Ok(LeaveOutcome::NotJoined),
            (s, data) if s == "ok" => {
                let last: i64 = first(&data)?;
                Ok(LeaveOutcome::Left { last: last == 1 })
            }
            (s, _) => Err(corrupt(format!("leave script said {s}"))),
        }
    }

    async fn participants(&self, room: &str) -> StoreResult<Vec<User>> {
        let mut c = self.conn().await?;
        let raw: Vec<String> = self
            .timed("participants", c.hvals(self.k().room_members(room)))
            .await?;
        let mut users = raw
            .iter()
            .map(|j| serde_json::from_str::<User>(j).map_err(corrupt))
            .collect::<StoreResult<Vec<User>>>()?;
        super::sort_users(&mut users);
        Ok(users)
    }

    async fn is_participant(&self, room: &str, user: &str) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        self.timed(
            "is_participant",
            c.hexists(self.k().room_members(room), user),
        )
        .await
    }

    async fn list_public(&self, limit: usize) -> StoreResult<Vec<Room>> {
        // Private rooms share `active_rooms`, so read in pages until `limit`
        // public ones are found; bounded so a node full of private rooms
        // cannot make one request scan everything.
        const MAX_PAGES: usize = 20;
        let page = (limit * 2).max(20);
        let mut c = self.conn().await?;
        let mut out = Vec::with_capacity(limit);
        for p in 0..MAX_PAGES {
            let start = (p * page) as isize;
            let ids: Vec<String> = self
                .timed(
                    "active_rooms",
                    c.zrevrange(self.k().active_rooms(), start, start + page as isize - 1),
                )
                .await?;
            let done = ids.len() < page;
            for room in self.read_rooms(&mut c, &ids).await?.into_iter().flatten() {
                if !room.private && out.len() < limit {
                    out.push(room);
                }
            }
            if done || out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn online(&self, room: &str) -> StoreResult<Vec<User>> {
        let k = self.k();
        let mut c = self.conn().await?;
        let entries: Vec<String> = self
            .timed("presence_read", c.zrange(k.presence(room), 0, -1))
            .await?;
        let mut ids: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.rsplit_once(':').map(|(user, _)| user))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = self
            .timed(
                "presence_users",
                redis::cmd("HMGET")
                    .arg(k.room_members(room))
                    .arg(&ids)
                    .query_async(&mut *c),
            )
            .await?;
        let mut users = raw
            .iter()
            .flatten()
            .map(|j| serde_json::from_str::<User>(j).map_err(corrupt))
            .collect::<StoreResult<Vec<User>>>()?;
        super::sort_users(&mut users);
        Ok(users)
    }

    async fn set_typing(
        &self,
        room: &str,
        user: &str,
        active: bool,
        ttl: Duration,
    ) -> StoreResult<()> {
        let key = self.k().typing(room, user);
        let mut c = self.conn().await?;
        if active {
            let ms = (ttl.as_millis() as u64).max(1);
            self.timed("typing", c.pset_ex(key, 1, ms)).await
        } else {
            self.timed("typing", c.del(key)).await
        }
    }

    async fn idle_rooms(&self, before_ms: u64, limit: usize) -> StoreResult<Vec<String>> {
        let mut c = self.conn().await?;
        self.timed(
            "idle_rooms",
            redis::cmd("ZRANGEBYSCORE")
                .arg(self.k().active_rooms())
                .arg("-inf")
                .arg(format!("({before_ms}"))
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut *c),
        )
        .await
    }

    async fn close_room(&self, room: &str, before_ms: u64) -> StoreResult<bool> {
        let k = self.k();
        let mut c = self.conn().await?;
        let mut inv = self.inner.scripts.close.prepare_invoke();
        inv.key(k.room(room))
            .key(k.room_members(room))
            .key(k.room_messages(room))
            .key(k.room_events(room))
            .key(k.presence(room))
            .arg(k.member_conns_prefix(room))
            .arg(before_ms);
        let reply: Value = self.timed("room_close", inv.invoke_async(&mut *c)).await?;
        let (st, data) = status(reply)?;
        match st.as_str() {
            "busy" => return Ok(false),
            "gone" | "ok" => {}
            other => return Err(corrupt(format!("close script said {other}"))),
        }
        if let Some(code) = data
            .first()
            .map(redis::from_redis_value_ref::<String>)
            .transpose()
            .map_err(corrupt)?
            .filter(|c| !c.is_empty())
        {
            let mut inv = self.inner.scripts.release_code.prepare_invoke();
            inv.key(k.room_code(&code)).arg(room);
            let _: i64 = self
                .timed("room_code_release", inv.invoke_async(&mut *c))
                .await?;
        }
        let _: i64 = self
            .timed("active_rooms", c.zrem(k.active_rooms(), room))
            .await?;
        Ok(st == "ok")
    }
}

#[async_trait]
impl MessageStore for RedisStore {
    async fn append(
        &self,
        message: &Message,
        client_msg_id: Option<&str>,
    ) -> StoreResult<AppendOutcome> {
        let k = self.k();
        let room = &message.room;
        let mut stored = message.clone();
        stored.seq = 0;
        let tail = codec::encode_tail(&Event::MessageCreated(stored.clone()), now_us());
        let dedupe_key = k.dedupe(room, &message.user.id, client_msg_id.unwrap_or(""));
        let mut mode = if client_msg_id.is_some() { "1" } else { "0" };
        let mut c = self.conn().await?;
        loop {
            let now = now_ms();
            let deadline = self.deadline();
            let mut inv = self.inner.scripts.send.prepare_invoke();
            inv.key(k.room(room))
                .key(k.room_members(room))
                .key(k.room_messages(room))
                .key(k.room_events(room))
                .key(k.message(room, &message.id))
                .key(&dedupe_key)
                .arg(&message.user.id)
                .arg(&message.id)
                .arg(&tail)
                .arg(self.ttl_ms())
                .arg(self.inner.settings.event_log_len)
                .arg(now)
                .arg(k.channel(room))
                .arg(mode)
                .arg(self.inner.settings.dedupe_ttl.as_millis() as u64)
                .arg(deadline);
            // Bump the room in `active_rooms` (at most once a second per
            // node) in the same round trip: the multiplexed connection
            // pipelines both. `XX GT` only moves an existing room forward,
            // so a refused send leaves no trace.
            let bump = self.inner.bumps.due(room, now).then(|| {
                let mut bump = redis::cmd("ZADD");
                bump.arg(k.active_rooms())
                    .arg("XX")
                    .arg("GT")
                    .arg(now)
                    .arg(room);
                bump
            });
            let mut c2 = (*c).clone();
            let (sent, bumped) = tokio::join!(
                self.timed("message_send", inv.invoke_async::<Value>(&mut *c)),
                async {
                    match &bump {
                        Some(bump) => {
                            self.timed("active_rooms", bump.query_async::<()>(&mut c2))
                                .await
                        }
                        None => Ok(()),
                    }
                },
            );
            let reply = match sent {
                Ok(reply) => reply,
                Err(StoreError::Unavailable(reason)) => {
                    return self.settle(message, deadline, reason).await;
                }
                Err(e) => return Err(e),
            };
            if let Err(e) = bumped {
                tracing::debug!(room, error = %e, "could not bump active_rooms");
            }
            let (st, data) = status(reply)?;
            return match st.as_str() {
                "no_room" => Ok(AppendOutcome::NoRoom),
                "not_member" => Ok(AppendOutcome::NotMember),
                "ok" => {
                    let seq: u64 = first(&data)?;
                    stored.seq = seq;
                    Ok(AppendOutcome::Appended(stored))
                }
                "duplicate" => {
                    let prior_id: String = first(&data)?;
                    let raw: Option<Vec<u8>> = self
                        .timed("message_get", c.get(k.message(room, &prior_id)))
                        .await?;
                    match raw {
                        Some(bytes) => Ok(AppendOutcome::Duplicate(
                            codec::decode_message(&bytes).map_err(corrupt)?,
                        )),
                        None => {
                            // The original expired before its dedupe key:
                            // write this one and let it take the key over.
                            mode = "2";
                            continue;
                        }
                    }
                }
                other => Err(corrupt(format!("send script said {other}"))),
            };
        }
    }

    async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let k = self.k();
        let mut c = self.conn().await?;
        let max = match before {
            Some(b) => format!("({b}"),
            None => "+inf".to_owned(),
        };
        // Expired messages leave their ids in the index until trimmed: when
        // a page meets one, trim (it also drops their events) and read again.
        let mut trimmed = false;
        loop {
            let ids: Vec<String> = self
                .timed(
                    "history_index",
                    redis::cmd("ZREVRANGEBYSCORE")
                        .arg(k.room_messages(room))
                        .arg(&max)
                        .arg("-inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit + 1)
                        .query_async(&mut *c),
                )
                .await?;
            let has_more = ids.len() > limit;
            let ids = &ids[..ids.len().min(limit)];
            let raw = self.read_messages(&mut c, room, ids).await?;
            if raw.iter().any(Option::is_none) && !trimmed {
                self.trim(&mut c, room).await?;
                trimmed = true;
                continue;
            }
            let mut messages = raw
                .iter()
                .flatten()
                .map(|b| codec::decode_message(b).map_err(corrupt))
                .collect::<StoreResult<Vec<Message>>>()?;
            messages.reverse();
            return Ok(HistoryPage { messages, has_more });
        }
    }

    async fn events_since(&self, room: &str, since: u64) -> StoreResult<Replay> {
        super::decode_replay(self.envelopes_since(room, since).await?)
    }

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<StoredMessage>> {
        let mut c = self.conn().await?;
        let raw: Option<Vec<u8>> = self
            .timed("message_get", c.get(self.k().message(room, id)))
            .await?;
        raw.map(|raw| {
            Ok(StoredMessage {
                message: codec::decode_message(&raw).map_err(corrupt)?,
                raw,
            })
        })
        .transpose()
    }

    async fn replace(
        &self,
        room: &str,
        expected: &[u8],
        event: &Event,
    ) -> StoreResult<ReplaceOutcome> {
        let Some(m) = event.message() else {
            return Err(corrupt(format!(
                "replace takes a message event, not {}",
                event.name()
            )));
        };
        let k = self.k();
        let mut c = self.conn().await?;
        let mut inv = self.inner.scripts.replace.prepare_invoke();
        inv.key(k.room(room))
            .key(k.room_events(room))
            .key(k.message(room, &m.id))
            .arg(expected)
            .arg(codec::encode_tail(event, now_us()))
            .arg(self.inner.settings.event_log_len)
            .arg(now_ms())
            .arg(k.channel(room))
            .arg(self.deadline());
        let reply: Value = self
            .timed("message_replace", inv.invoke_async(&mut *c))
            .await?;
        match status(reply)? {
            (s, _) if s == "gone" => Ok(ReplaceOutcome::Gone),
            (s, _) if s == "changed" => Ok(ReplaceOutcome::Changed),
            (s, data) if s == "ok" => {
                let seq: u64 = first(&data)?;
                Ok(ReplaceOutcome::Replaced(seq))
            }
            (s, _) => Err(corrupt(format!("replace script said {s}"))),
        }
    }

    async fn search(
        &self,
        room: &str,
        words: &[String],
        limit: usize,
        scan_cap: usize,
    ) -> StoreResult<Vec<Message>> {
        const PAGE: usize = 100;
        let mut c = self.conn().await?;
        self.trim(&mut c, room).await?;
        let mut found = Vec::new();
        let mut scanned = 0;
        while scanned < scan_cap && found.len() < limit {
            let take = PAGE.min(scan_cap - scanned);
            let ids: Vec<String> = self
                .timed(
                    "search_index",
                    c.zrevrange(
                        self.k().room_messages(room),
                        scanned as isize,
                        (scanned + take) as isize - 1,
                    ),
                )
                .await?;
            scanned += ids.len();
            for raw in self
                .read_messages(&mut c, room, &ids)
                .await?
                .iter()
                .flatten()
            {
                let m = codec::decode_message(raw).map_err(corrupt)?;
                if super::matches_words(&m, words) {
                    found.push(m);
                    if found.len() >= limit {
                        break;
                    }
                }
            }
            if ids.len() < take {
                break;
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn envelopes_since(&self, room: &str, since: u64) -> StoreResult<RawReplay> {
        let k = self.k();
        let mut c = self.conn().await?;
        let mut inv = self.inner.scripts.since.prepare_invoke();
        inv.key(k.room(room))
            .key(k.room_events(room))
            .key(k.room_messages(room))
            .arg(since)
            .arg(k.message_prefix(room));
        let (last_seq, events): (u64, Vec<Vec<u8>>) = self
            .timed("events_since", inv.invoke_async(&mut *c))
            .await?;
        let first = events
            .first()
            .map(|e| codec::peek_seq(e))
            .transpose()
            .map_err(corrupt)?;
        let complete = since >= last_seq || first == Some(since + 1);
        Ok(RawReplay {
            envelopes: events,
            last_seq,
            complete,
        })
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn open(&self, session: &SessionRecord, ttl: Duration) -> StoreResult<()> {
        let k = self.k();
        let ttl_ms = ttl.as_millis() as i64;
        let mut c = self.conn().await?;
        let key = k.session(&session.conn);
        let users = k.user_sessions(&session.user.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("user", user_json(&session.user)),
                    ("node", session.node.clone()),
                    ("instance", session.instance.clone()),
                    ("connected_at", session.connected_at.to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, ttl_ms)
            .ignore()
            .sadd(&users, &session.conn)
            .ignore()
            .pexpire(&users, ttl_ms)
            .ignore()
            .sadd(k.node_sessions(&session.instance), &session.conn)
            .ignore();
        self.timed("session_open", pipe.query_async(&mut *c)).await
    }

    async fn session(&self, conn: &str) -> StoreResult<Option<SessionRecord>> {
        let mut c = self.conn().await?;
        let fields: HashMap<String, String> = self
            .timed("session_get", c.hgetall(self.k().session(conn)))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let user = fields
            .get("user")
            .map(|j| serde_json::from_str::<User>(j))
            .transpose()
            .map_err(corrupt)?
            .ok_or_else(|| corrupt("session has no user"))?;
        Ok(Some(SessionRecord {
            conn: conn.to_owned(),
            user,
            node: fields.get("node").cloned().unwrap_or_default(),
            instance: fields.get("instance").cloned().unwrap_or_default(),
            connected_at: fields
                .get("connected_at")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }))
    }

    async fn user_sessions(&self, user: &str) -> StoreResult<Vec<String>> {
        let mut c = self.conn().await?;
        let mut conns: Vec<String> = self
            .timed("user_sessions", c.smembers(self.k().user_sessions(user)))
            .await?;
        conns.sort();
        Ok(conns)
    }

    async fn close(&self, conn: &str, user: &str) -> StoreResult<()> {
        let k = self.k();
        let mut c = self.conn().await?;
        let instance: Option<String> = self
            .timed("session_get", c.hget(k.session(conn), "instance"))
            .await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(k.session(conn))
            .ignore()
            .del(k.session_rooms(conn))
            .ignore()
            .srem(k.user_sessions(user), conn)
            .ignore();
        if let Some(instance) = instance {
            pipe.srem(k.node_sessions(&instance), conn).ignore();
        }
        self.timed("session_close", pipe.query_async(&mut *c)).await
    }

    async fn track_room(&self, conn: &str, room: &str, joined: bool) -> StoreResult<()> {
        let key = self.k().session_rooms(conn);
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        if joined {
            pipe.sadd(&key, room)
                .ignore()
                .pexpire(&key, self.session_ttl_ms())
                .ignore();
        } else {
            pipe.srem(&key, room).ignore();
        }
        self.timed("session_rooms", pipe.query_async(&mut *c)).await
    }

    async fn session_rooms(&self, conn: &str) -> StoreResult<Vec<String>> {
        let mut c = self.conn().await?;
        let mut rooms: Vec<String> = self
            .timed("session_rooms", c.smembers(self.k().session_rooms(conn)))
            .await?;
        rooms.sort();
        Ok(rooms)
    }

    async fn heartbeat(&self, instance: &str, refresh: Option<Duration>) -> StoreResult<()> {
        let k = self.k();
        let mut c = self.conn().await?;
        self.sync_clock(&mut c).await?;
        let _: i64 = self
            .timed("heartbeat", c.zadd(k.nodes(), instance, now_ms()))
            .await?;
        let Some(ttl) = refresh else {
            return Ok(());
        };
        let ttl_ms = ttl.as_millis() as i64;
        let conns: Vec<String> = self
            .timed("node_sessions", c.smembers(k.node_sessions(instance)))
            .await?;
        for chunk in conns.chunks(500) {
            let mut pipe = redis::pipe();
            for conn in chunk {
                pipe.pexpire(k.session(conn), ttl_ms)
                    .ignore()
                    .pexpire(k.session_rooms(conn), ttl_ms)
                    .ignore();
            }
            let () = self
                .timed("session_refresh", pipe.query_async(&mut *c))
                .await?;
        }
        Ok(())
    }

    async fn dead_nodes(&self, before_ms: u64) -> StoreResult<Vec<String>> {
        let mut c = self.conn().await?;
        self.timed(
            "dead_nodes",
            redis::cmd("ZRANGEBYSCORE")
                .arg(self.k().nodes())
                .arg("-inf")
                .arg(format!("({before_ms}"))
                .query_async(&mut *c),
        )
        .await
    }

    async fn node_sessions(&self, instance: &str) -> StoreResult<Vec<String>> {
        let mut c = self.conn().await?;
        let mut conns: Vec<String> = self
            .timed(
                "node_sessions",
                c.smembers(self.k().node_sessions(instance)),
            )
            .await?;
        conns.sort();
        Ok(conns)
    }

    async fn forget_node(&self, instance: &str) -> StoreResult<()> {
        let k = self.k();
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.zrem(k.nodes(), instance)
            .ignore()
            .del(k.node_sessions(instance))
            .ignore();
        self.timed("forget_node", pipe.query_async(&mut *c)).await
    }

    async fn record_activity(&self, user: &str, messages_sent: u64) -> StoreResult<()> {
        let key = self.k().activity(user);
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.hset(&key, "last_seen", now_ms()).ignore();
        pipe.hincr(&key, "messages", messages_sent).ignore();
        pipe.pexpire(&key, self.ttl_ms() as i64).ignore();
        self.timed("activity", pipe.query_async(&mut *c)).await
    }

    async fn activity(&self, user: &str) -> StoreResult<Option<(u64, u64)>> {
        let mut c = self.conn().await?;
        let (seen, count): (Option<u64>, Option<u64>) = self
            .timed(
                "activity",
                redis::cmd("HMGET")
                    .arg(self.k().activity(user))
                    .arg("last_seen")
                    .arg("messages")
                    .query_async(&mut *c),
            )
            .await?;
        Ok(seen.map(|s| (s, count.unwrap_or(0))))
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut c = self.conn().await?;
        self.timed("cache_get", c.get(self.k().cache(key))).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let ms = (ttl.as_millis() as u64).max(1);
        self.timed("cache_set", c.pset_ex(self.k().cache(key), value, ms))
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let mut c = self.conn().await?;
        self.timed("cache_delete", c.del(self.k().cache(key))).await
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        let taken: Option<String> = self
            .timed(
                "lock",
                redis::cmd("SET")
                    .arg(self.k().lock(name))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg((ttl.as_millis() as u64).max(1))
                    .query_async(&mut *c),
            )
            .await?;
        Ok(taken.is_some())
    }
}

#[async_trait]
impl StoreHealth for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let pong: String = self
            .timed("ping", redis::cmd("PING").query_async(&mut *c))
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(corrupt(format!("PING answered {pong}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_bumped_at_most_once_a_second_per_node() {
        let bumps = Bumps::default();
        assert!(bumps.due("r1", 10_000));
        assert!(!bumps.due("r1", 10_999));
        assert!(bumps.due("r2", 10_999), "rooms are throttled separately");
        assert!(bumps.due("r1", 11_000));
        // Old entries are dropped once there are many.
        for i in 0..5000u64 {
            assert!(bumps.due(&format!("room-{i}"), 20_000 + i));
        }
        let kept = bumps.last.lock().unwrap().len();
        assert!(kept < 5000, "{kept} entries kept");
        assert!(!bumps.due("room-4999", 24_999));
    }
}
