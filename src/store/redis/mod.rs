//! The Redis engine: every repository on one Redis or on a Redis Cluster
//! (`connect_cluster`; the key layout in `crate::layout` keeps every script
//! and pipeline in one slot).
//!
//! Every call is bounded by the configured timeout; a timeout or connection
//! failure is `StoreError::Unavailable` (or `Backend`, with the Redis error
//! as its source). Operations that append a durable event run as one Lua
//! script (`EVALSHA`, loaded on first use), so the membership and
//! idempotency checks, `seq` assignment, the writes, the event-log trim and
//! the `PUBLISH` happen atomically and in seq order (`SPUBLISH`, a shard
//! channel, on a cluster).
//!
//! With replica acknowledgements (`RedisOptions::replica_acks` N > 0) a
//! durable write is confirmed only once N replicas have it: the script
//! writes the event without publishing it, the store runs `WAIT N` on the
//! connection that wrote it, and only then `publish.lua` publishes every
//! event up to it, in seq order, and moves the room's `published` mark.
//! Readers (the event log replay, `room.last_seq`, history) stop at that
//! mark, so no client ever sees an event a failover could still take back.
//! When the replicas do not confirm in time the caller gets
//! `StoreError::Unconfirmed`: the write may have been applied.
//!
//! | module | owns |
//! |---|---|
//! | `conn` | how a call gets a connection (`ConnMode`: shared or pooled) |
//! | `clock` | the Redis clock offset and write deadlines, with its refresh task |
//! | `throttle` | the once-a-second `active_rooms` bump |
//! | `scripts` (+ `lua/`) | the scripts, typed arguments, parsed replies |
//! | `parse` | replies → model types; error constructors |
//! | `rooms`, `messages`, `sessions`, `cache` | one trait impl each |
//! | `crowd` | big rooms: the bounded roster, member pages, the `participants.changed` gate |
//! | `moderation` | roles, bans, mutes and the moderation verbs (1.1), one script each |
//! | `reads` | read state: `room.read`, unread counts, `room.mine`, receipts |
//! | `snapshot` | what a join answers (room, roster, standings, replay) in one script |

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bb8::Pool;
use redis::RedisError;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;

use self::clock::Clock;
use self::conn::Conn;
use self::parse::unavailable;
use self::pool::RedisManager;
use self::scripts::{Bound, Publish, Published, Release, ScriptArgs, ScriptReply, Scripts};
use self::throttle::Bumps;
use super::StoreSettings;
use super::breaker::{Breaker, BreakerState};
use crate::error::{StoreError, StoreResult};
use crate::layout::Keys;
use crate::metrics::Metrics;

mod cache;
mod clock;
mod conn;
mod crowd;
mod messages;
mod moderation;
mod parse;
mod pool;
mod reads;
mod rooms;
mod scripts;
mod sessions;
mod snapshot;
mod throttle;

#[cfg(test)]
mod script_tests;

pub use self::conn::{ConnMode, cluster_client};

/// The Redis engine. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// Where a store's connections come from.
enum Links {
    /// One Redis server.
    Single {
        /// How calls get connections.
        mode: ConnMode,
        /// Connections for `ConnMode::Pool`.
        pool: Pool<RedisManager>,
        /// The self-reconnecting connection of `ConnMode::Shared` (made on
        /// first use), on which the bus also publishes.
        shared: ConnectionManager,
    },
    /// A Redis Cluster: the crate's cluster connection (connects on first
    /// use, follows the topology), on which the bus also publishes.
    Cluster(ClusterConnection),
}

/// What every Redis store needs besides its connections.
#[derive(Clone)]
pub struct RedisOptions {
    /// The bound on every call.
    pub timeout: Duration,
    /// Key names (`Keys::clustered` on a cluster).
    pub keys: Keys,
    /// TTLs and the log length.
    pub settings: StoreSettings,
    /// Per-call latency and the breaker gauge.
    pub metrics: Arc<Metrics>,
    /// Replicas that must have a durable write before it is acknowledged
    /// (`WAIT`); 0 acknowledges once the master has it.
    pub replica_acks: u32,
}

struct Inner {
    /// Where connections come from.
    links: Links,
    /// With replica acknowledgements on a shared or cluster connection: the
    /// connections durable writes and their `WAIT` go on, taken in turn.
    /// Redis holds a connection's later commands until its `WAIT` returns,
    /// so on the shared connection every call would queue behind each
    /// write's replication (and behind a stalled replica for half the
    /// timeout); here only the writes on the same waiter do.
    waiters: Vec<Conn<'static>>,
    /// The next waiter.
    next_waiter: AtomicUsize,
    /// Replicas that must confirm a durable write (0: none).
    replica_acks: u32,
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
    /// No unsplit room index is left to move into the shards (a cluster).
    index_split: AtomicBool,
}

/// Whether Redis did not know a script (`NOSCRIPT`).
fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Connections for durable writes with replica acknowledgements (shared and
/// cluster modes; `Inner::waiters`).
const WAIT_CONNECTIONS: usize = 8;

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
        let options = RedisOptions {
            timeout,
            keys,
            settings,
            metrics,
            replica_acks: 0,
        };
        Self::connect_single(url, pool_size, mode, options)
    }

    /// Connects to one Redis server at `url`, with every option.
    pub fn connect_single(
        url: &str,
        pool_size: u32,
        mode: ConnMode,
        options: RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        let timeout = options.timeout;
        let client = redis::Client::open(url).map_err(unavailable)?;
        let manager = RedisManager::new(client.clone(), timeout).map_err(unavailable)?;
        // No PING on checkout: broken connections are found by their own
        // failed commands (see `pool`).
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle((mode == ConnMode::Pool).then_some(1))
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .build_unchecked(manager);
        let lazy = || {
            ConnectionManager::new_lazy_with_config(client.clone(), conn::manager_config(timeout))
                .map_err(unavailable)
        };
        let shared = lazy()?;
        // Pooled calls each have their own connection already; a shared
        // connection must not queue every call behind a `WAIT`.
        let waiters = if options.replica_acks > 0 && mode == ConnMode::Shared {
            (0..WAIT_CONNECTIONS)
                .map(|_| lazy().map(Conn::Shared))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let links = Links::Single { mode, pool, shared };
        Ok(Self::assemble(links, waiters, Publish::Classic, options))
    }

    /// Connects to the Redis Cluster whose seed nodes are `seeds`
    /// (`redis://` or `rediss://` URLs). The topology is discovered on first
    /// use and followed afterwards; an unreachable cluster is not an error
    /// here (readiness reports it).
    pub fn connect_cluster(
        seeds: &[String],
        options: RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        let client = conn::cluster_client(seeds, options.timeout, None).map_err(unavailable)?;
        let connect = || {
            client.get_pending_async_connection_with_config(conn::cluster_config(options.timeout))
        };
        let cluster = connect();
        let waiters = if options.replica_acks > 0 {
            (0..WAIT_CONNECTIONS)
                .map(|_| Conn::Cluster(connect()))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self::assemble(
            Links::Cluster(cluster),
            waiters,
            Publish::Sharded,
            options,
        ))
    }

    fn assemble(
        links: Links,
        waiters: Vec<Conn<'static>>,
        publish: Publish,
        options: RedisOptions,
    ) -> RedisStore {
        let cluster = matches!(links, Links::Cluster(_));
        let RedisOptions {
            timeout,
            keys,
            settings,
            metrics,
            replica_acks,
        } = options;
        let inner = Arc::new(Inner {
            links,
            waiters,
            next_waiter: AtomicUsize::new(0),
            replica_acks,
            up: AtomicBool::new(false),
            keys,
            settings,
            timeout,
            scripts: Scripts::new(publish, replica_acks > 0),
            metrics,
            // On a cluster one dead master must not shut out the others:
            // the breaker opens only when nothing succeeds any more.
            breaker: if cluster {
                Breaker::whole_backend(
                    BREAKER_THRESHOLD,
                    BREAKER_COOLDOWN,
                    timeout * 2,
                    timeout * 2,
                )
            } else {
                Breaker::new(BREAKER_THRESHOLD, BREAKER_COOLDOWN, timeout * 2)
            },
            clock: Clock::default(),
            bumps: Bumps::default(),
            public_index: AtomicBool::new(false),
            index_split: AtomicBool::new(false),
        });
        clock::spawn_refresh(&inner);
        RedisStore { inner }
    }

    /// Whether this store is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.links, Links::Cluster(_))
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
        self.inner.metrics.redis_outcome(op, out.is_ok());
        if self.inner.breaker.record(out.is_ok())
            && let Err(e) = &out
        {
            tracing::warn!(op, error = %e, "the Redis circuit breaker opened");
        }
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

    /// Runs a script with its typed arguments; the raw reply. A script the
    /// server does not know yet (first use, a restarted or promoted node) is
    /// loaded and run again.
    async fn invoke(
        &self,
        c: &mut Conn<'_>,
        op: &'static str,
        script: &redis::Script,
        args: &impl ScriptArgs,
    ) -> StoreResult<redis::Value> {
        let cmd = Bound::of(args).evalsha(script);
        self.timed(op, async {
            match cmd.query_async::<redis::Value>(&mut *c).await {
                Err(e) if is_noscript(&e) => {
                    script.load_async(&mut *c).await?;
                    cmd.query_async(&mut *c).await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs the script of a durable write. With replica acknowledgements,
    /// `WAIT` follows it in the same pipeline, so it runs on the connection
    /// that wrote and waits for exactly that write; the reply comes with
    /// how many replicas confirmed it (`None` without acknowledgements).
    async fn invoke_durable(
        &self,
        c: &mut Conn<'_>,
        op: &'static str,
        script: &redis::Script,
        args: &impl ScriptArgs,
    ) -> StoreResult<(redis::Value, Option<u32>)> {
        let wanted = self.inner.replica_acks;
        if wanted == 0 {
            return Ok((self.invoke(c, op, script, args).await?, None));
        }
        // `WAIT` waits `wait_ms` in all: a retry after NOSCRIPT (the first
        // `WAIT` ran too, for nothing) gets what is left, so the call still
        // ends within the store timeout, `Unconfirmed` if replicas are gone.
        let started = std::time::Instant::now();
        let pipeline = |wait_ms: u64| {
            let mut pipe = redis::pipe();
            pipe.add_command(Bound::of(args).evalsha(script))
                .cmd("WAIT")
                .arg(wanted)
                .arg(wait_ms.max(1));
            pipe
        };
        let mut pipe = pipeline(self.wait_ms());
        let mut waiter = self.waiter();
        let c: &mut Conn<'_> = match waiter.as_mut() {
            Some(w) => w,
            None => c,
        };
        self.timed(op, async {
            let mut loaded = false;
            loop {
                let mut out = c.req_packed_commands(&pipe, 0, 2).await?.into_iter();
                let (Some(reply), Some(acks)) = (out.next(), out.next()) else {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "a script and WAIT pipeline answered too few replies",
                    )));
                };
                let reply = match reply.extract_error() {
                    Err(e) if is_noscript(&e) && !loaded => {
                        script.load_async(&mut *c).await?;
                        loaded = true;
                        let spent = started.elapsed().as_millis() as u64;
                        pipe = pipeline(self.wait_ms().saturating_sub(spent));
                        continue;
                    }
                    other => other?,
                };
                let acks: u32 = redis::from_redis_value(acks.extract_error()?)?;
                return Ok((reply, Some(acks)));
            }
        })
        .await
    }

    /// The next of the connections for durable writes (`Inner::waiters`);
    /// `None` when calls have connections of their own (the pool).
    fn waiter(&self) -> Option<Conn<'static>> {
        let waiters = &self.inner.waiters;
        if waiters.is_empty() {
            return None;
        }
        let i = self.inner.next_waiter.fetch_add(1, Ordering::Relaxed) % waiters.len();
        Some(waiters[i].twin())
    }

    /// How long `WAIT` may block: half the store timeout, so a refusal
    /// still reaches the caller within the timeout.
    fn wait_ms(&self) -> u64 {
        (self.inner.timeout.as_millis() as u64 / 2).max(1)
    }

    /// Checks the acknowledgements of a durable write that appended no
    /// event (a moderation verb, a refusal): fewer than wanted are
    /// `StoreError::Unconfirmed`, whatever the script answered (`None`:
    /// acknowledgements are off).
    fn acked(&self, acks: Option<u32>) -> StoreResult<()> {
        let wanted = self.inner.replica_acks;
        match acks {
            Some(acks) if acks < wanted => {
                self.inner.metrics.redis_unconfirmed.inc();
                Err(StoreError::Unconfirmed(format!(
                    "{acks} of {wanted} replicas confirmed within {} ms",
                    self.wait_ms()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Finishes a durable write of the event `seq` that `acks` replicas
    /// confirmed (`None`: acknowledgements are off, nothing to do). Enough
    /// confirmations publish every event up to it (`publish.lua`); too few
    /// are `StoreError::Unconfirmed`, and the event stays unpublished until
    /// a later confirmed write of the room publishes it.
    async fn confirm(
        &self,
        c: &mut Conn<'_>,
        room: &str,
        seq: u64,
        acks: Option<u32>,
    ) -> StoreResult<()> {
        let Some(acks) = acks else {
            return Ok(());
        };
        let wanted = self.inner.replica_acks;
        if acks < wanted {
            self.inner.metrics.redis_unconfirmed.inc();
            return Err(StoreError::Unconfirmed(format!(
                "{acks} of {wanted} replicas confirmed within {} ms",
                self.wait_ms()
            )));
        }
        let event = self.event_keys(room);
        let args = Release {
            event: &event,
            upto: seq,
        };
        match self
            .script::<Published>(c, "publish", &self.inner.scripts.release, &args)
            .await
        {
            Ok(Published(n)) => {
                if n > 1 {
                    tracing::debug!(room, seq, events = n, "published confirmed events");
                }
                Ok(())
            }
            Err(e) => Err(StoreError::Unconfirmed(format!(
                "replicas confirmed it, but publishing failed: {e}"
            ))),
        }
    }

    /// Whether durable writes wait for replicas (and readers stop at the
    /// room's `published` mark).
    fn deferred(&self) -> bool {
        self.inner.replica_acks > 0
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
