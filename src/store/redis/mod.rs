//! The Redis engine: every repository on one Redis (or a Redis Cluster, as
//! the key layout in `crate::layout` allows).
//!
//! Every call is bounded by the configured timeout; a timeout or connection
//! failure is `StoreError::Unavailable` (or `Backend`, with the Redis error
//! as its source). Operations that append a durable event run as one Lua
//! script (`EVALSHA`, loaded on first use), so the membership and
//! idempotency checks, `seq` assignment, the writes, the event-log trim and
//! the `PUBLISH` happen atomically and in seq order.
//!
//! | module | owns |
//! |---|---|
//! | `conn` | how a call gets a connection (`ConnMode`: shared or pooled) |
//! | `clock` | the Redis clock offset and write deadlines, with its refresh task |
//! | `throttle` | the once-a-second `active_rooms` bump |
//! | `scripts` (+ `lua/`) | the scripts, typed arguments, parsed replies |
//! | `parse` | replies → model types; error constructors |
//! | `rooms`, `messages`, `sessions`, `cache` | one trait impl each |

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bb8::Pool;
use redis::RedisError;
use redis::aio::ConnectionManager;

use self::clock::Clock;
use self::conn::Conn;
use self::parse::unavailable;
use self::pool::RedisManager;
use self::scripts::{ScriptArgs, ScriptReply, Scripts};
use self::throttle::Bumps;
use super::StoreSettings;
use super::breaker::{Breaker, BreakerState};
use crate::error::{StoreError, StoreResult};
use crate::layout::Keys;
use crate::metrics::Metrics;

mod cache;
mod clock;
mod conn;
mod messages;
mod parse;
mod pool;
mod rooms;
mod scripts;
mod sessions;
mod throttle;

#[cfg(test)]
mod script_tests;

pub use self::conn::ConnMode;

/// The Redis engine. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// How calls get connections.
    mode: ConnMode,
    /// Connections for `ConnMode::Pool`.
    pool: Pool<RedisManager>,
    /// The self-reconnecting connection of `ConnMode::Shared` (made on
    /// first use), on which the bus also publishes.
    shared: ConnectionManager,
    /// Whether the last round trip succeeded (`pool_state` in shared mode).
    up: AtomicBool,
    /// Key names.
    keys: Keys,
    /// TTLs and the log length.
    settings: StoreSettings,
    /// The bound on every call.
    timeout: Duration,
    /// The Lua scripts.
    scripts: Scripts,
    /// Per-call latency.
    metrics: Arc<Metrics>,
    /// Stops asking a Redis that keeps failing.
    breaker: Breaker,
    /// Redis time, for write deadlines.
    clock: Clock,
    /// The `active_rooms` bump throttle.
    bumps: Bumps,
    /// `public_rooms` is known to hold every public room.
    public_index: AtomicBool,
}

/// Consecutive failed round trips that open the breaker.
const BREAKER_THRESHOLD: u32 = 5;
/// How long the breaker stays open before a probe.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

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

    /// Like `connect`, choosing how calls get connections. Starts the task
    /// that keeps the Redis clock offset fresh (`clock`).
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
        let client = redis::Client::open(url).map_err(unavailable)?;
        let shared = ConnectionManager::new_lazy_with_config(client, conn::manager_config())
            .map_err(unavailable)?;
        let inner = Arc::new(Inner {
            mode,
            pool,
            shared,
            up: AtomicBool::new(false),
            keys,
            settings,
            timeout,
            scripts: Scripts::new(),
            metrics,
            breaker: Breaker::new(BREAKER_THRESHOLD, BREAKER_COOLDOWN, timeout * 2),
            clock: Clock::default(),
            bumps: Bumps::default(),
            public_index: AtomicBool::new(false),
        });
        clock::spawn_refresh(&inner);
        Ok(RedisStore { inner })
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The circuit breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
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
        self.inner.up.store(out.is_ok(), Ordering::Relaxed);
        out
    }

    /// Runs a script with its typed arguments and parses its reply.
    async fn script<R: ScriptReply>(
        &self,
        c: &mut Conn<'_>,
        op: &'static str,
        script: &redis::Script,
        args: &impl ScriptArgs,
    ) -> StoreResult<R> {
        R::parse(self.invoke(c, op, script, args).await?)
    }

    /// Runs a script with its typed arguments; the raw reply.
    async fn invoke(
        &self,
        c: &mut Conn<'_>,
        op: &'static str,
        script: &redis::Script,
        args: &impl ScriptArgs,
    ) -> StoreResult<redis::Value> {
        let mut inv = script.prepare_invoke();
        args.bind(&mut inv);
        self.timed(op, inv.invoke_async(c)).await
    }

    fn k(&self) -> &Keys {
        &self.inner.keys
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.settings.message_ttl.as_millis() as u64
    }

    fn session_ttl_ms(&self) -> i64 {
        self.inner.settings.session_ttl.as_millis() as i64
    }

    /// The deadline (Redis time, ms) for a write starting now.
    fn deadline(&self) -> i64 {
        self.inner.clock.deadline(self.inner.timeout)
    }

    /// The keys of a room's durable events.
    fn event_keys(&self, room: &str) -> scripts::EventKeys {
        let k = self.k();
        scripts::EventKeys {
            room: k.room(room),
            events: k.room_events(room),
            channel: k.channel(room),
        }
    }
}
