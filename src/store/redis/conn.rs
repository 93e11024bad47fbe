//! How a store call gets a Redis connection (`ConnMode`), and the retry of
//! idempotent calls.
//!
//! - `Shared` (the default): every call uses one multiplexed connection,
//!   which pipelines concurrent calls: the redis crate's `ConnectionManager`,
//!   made lazily on first use, which reconnects by itself (with the crate's
//!   own backoff) when the connection drops. The bus publishes on it too.
//! - `Pool`: each call checks a connection out of the bb8 pool (`pool`).
//! - On a Redis Cluster (`RedisStore::connect_cluster`), every call uses the
//!   redis crate's cluster connection, which keeps one multiplexed
//!   connection per master, routes each command by its key's slot and
//!   follows `MOVED`/`ASK` redirects, failovers and slot moves by itself.
//!   A pipeline must stay in one slot there: commands over several slots go
//!   through `RedisStore::scatter`.
//!
//! Both go through the circuit breaker first: while it is open, no
//! connection is used and the call fails with `StoreError::CircuitOpen`.
//!
//! Retries: reads and idempotent writes go through `RedisStore::idempotent`,
//! which tries a call that failed for a transient reason (not an open
//! breaker) up to `ATTEMPTS` times with jittered exponential backoff from
//! `BASE_DELAY`, all within one budget (the Redis timeout), so a retried call
//! never takes much longer than an unretried one would have. Calls that are
//! not idempotent run once: creating a room, joining and leaving (their
//! system messages), compare-and-set edits, activity counters, locks, and
//! sends without a `client_msg_id` (a send with one is idempotent by design).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bb8::PooledConnection;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::pool::{PooledRedis, RedisManager};
use super::{Links, RedisStore};
use crate::error::{StoreError, StoreResult};

/// Tries in all, the first included.
const ATTEMPTS: usize = 3;
/// Backoff before the second try; doubled each time, plus up to 100 %
/// jitter.
const BASE_DELAY: Duration = Duration::from_millis(25);

/// How store calls get a Redis connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    /// Each call checks a connection out of the bb8 pool.
    Pool,
    /// Every call shares one multiplexed connection, which pipelines
    /// concurrent calls and reconnects by itself.
    Shared,
}

/// The shared connection's settings: the redis crate's connect timeout
/// (1 s), its response timeout set to the store's `timeout` (as the pooled
/// and cluster connections have it), and two quick reconnect attempts after
/// a drop (each call is bounded by the store timeout anyway, and a later
/// failure starts a new reconnect).
///
/// The crate's own response timeout is 500 ms: below the store's default
/// of 1 s, it failed calls that `--redis-timeout-ms` allowed, and on a node
/// busy enough to read a reply late, a few of those in a row opened the
/// breaker against a healthy Redis (docs/storm.md).
pub(super) fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_response_timeout(Some(timeout))
}

/// A connection for one store call.
pub(super) enum Conn<'a> {
    /// Checked out of the pool; returns to it on drop.
    Pooled(PooledConnection<'a, RedisManager>),
    /// A clone of a pooled connection, for a second concurrent command.
    Twin(PooledRedis),
    /// The shared, self-reconnecting connection.
    Shared(ConnectionManager),
    /// The cluster connection (one multiplexed connection per master).
    Cluster(ClusterConnection),
}

impl Conn<'_> {
    /// A handle on the same connection, for a command sent concurrently
    /// (the multiplexed connection pipelines both).
    pub(super) fn twin(&self) -> Conn<'static> {
        match self {
            Conn::Pooled(c) => Conn::Twin((**c).clone()),
            Conn::Twin(c) => Conn::Twin(c.clone()),
            Conn::Shared(c) => Conn::Shared(c.clone()),
            Conn::Cluster(c) => Conn::Cluster(c.clone()),
        }
    }

    /// Whether this is a cluster connection (a pipeline must stay in one slot).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(c) => c.req_packed_command(cmd),
            Conn::Twin(c) => c.req_packed_command(cmd),
            Conn::Shared(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Pooled(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Twin(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Shared(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c) => c.get_db(),
            Conn::Twin(c) => c.get_db(),
            Conn::Shared(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A cluster client on `seeds`: the redis crate's connect and response
/// timeouts bounded by the store timeout, RESP3 with `push` for the bus's
/// subscriber (which passes a push sender), RESP2 otherwise.
pub fn cluster_client(
    seeds: &[String],
    timeout: Duration,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> redis::RedisResult<redis::cluster::ClusterClient> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // Redirects during a slot move or a failover, and TRYAGAIN while a
        // room's keys move, take a few tries; the store timeout bounds
        // them all.
        .retries(5)
        .min_retry_wait(25)
        .max_retry_wait(timeout.as_millis().min(500) as u64);
    if let Some(push) = push {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push);
    }
    builder.build()
}

/// The per-connection settings of a cluster connection.
pub(super) fn cluster_config(timeout: Duration) -> redis::cluster::ClusterConfig {
    redis::cluster::ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
}

impl RedisStore {
    /// Connections: (in use, idle). In `ConnMode::Shared` and on a cluster
    /// the shared connection counts as one busy connection while its last
    /// round trip succeeded.
    pub fn pool_state(&self) -> (u32, u32) {
        match &self.inner.links {
            Links::Single {
                mode: ConnMode::Pool,
                pool,
                ..
            } => {
                let s = pool.state();
                (s.connections - s.idle_connections, s.idle_connections)
            }
            _ => (u32::from(self.inner.up.load(Ordering::Relaxed)), 0),
        }
    }

    /// The shared connection to one Redis, for publishing on the same
    /// connection as the commands (in `ConnMode::Pool` it carries only what
    /// is published); `None` on a cluster.
    pub fn publisher(&self) -> Option<ConnectionManager> {
        match &self.inner.links {
            Links::Single { shared, .. } => Some(shared.clone()),
            Links::Cluster(_) => None,
        }
    }

    /// The cluster connection, for `SPUBLISH`; `None` on one Redis.
    pub fn cluster_publisher(&self) -> Option<ClusterConnection> {
        match &self.inner.links {
            Links::Single { .. } => None,
            Links::Cluster(c) => Some(c.clone()),
        }
    }

    /// A connection, unless the breaker is open.
    pub(super) async fn conn(&self) -> StoreResult<Conn<'_>> {
        if !self.inner.breaker.admit() {
            return Err(StoreError::CircuitOpen);
        }
        let pool = match &self.inner.links {
            Links::Cluster(c) => return Ok(Conn::Cluster(c.clone())),
            Links::Single {
                mode: ConnMode::Shared,
                shared,
                ..
            } => return Ok(Conn::Shared(shared.clone())),
            Links::Single { pool, .. } => pool,
        };
        match pool.get().await {
            Ok(c) => Ok(Conn::Pooled(c)),
            Err(e) => {
                let e = StoreError::Unavailable(format!("no Redis connection: {e}"));
                if self.inner.breaker.record(false) {
                    tracing::warn!(error = %e, "the Redis circuit breaker opened");
                }
                Err(e)
            }
        }
    }

    /// Runs groups of commands whose keys may be in different slots: every
    /// group must stay in one slot. On one Redis all groups go in one
    /// pipeline (one round trip); on a cluster each group is a pipeline of
    /// its own, all sent at once. Not atomic either way: callers order
    /// their commands so that a partial failure is retried or harmless.
    /// The replies come back per group, in order.
    pub(super) async fn scatter(
        &self,
        c: &mut Conn<'_>,
        op: &'static str,
        groups: Vec<Vec<Cmd>>,
    ) -> StoreResult<Vec<Vec<Value>>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        if !c.is_cluster() {
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            let mut pipe = redis::pipe();
            for cmd in groups.into_iter().flatten() {
                pipe.add_command(cmd);
            }
            let mut flat: Vec<Value> = self.timed(op, pipe.query_async(&mut *c)).await?;
            let mut out = Vec::with_capacity(sizes.len());
            let mut rest = flat.drain(..);
            for size in sizes {
                out.push(rest.by_ref().take(size).collect());
            }
            return Ok(out);
        }
        let sends = groups.into_iter().map(|group| {
            let mut conn = c.twin();
            async move {
                let mut pipe = redis::pipe();
                for cmd in group {
                    pipe.add_command(cmd);
                }
                pipe.query_async::<Vec<Value>>(&mut conn).await
            }
        });
        self.timed(op, futures_util::future::try_join_all(sends))
            .await
    }

    /// Runs an idempotent call, trying it again after a transient failure
    /// (see the module docs for the policy).
    pub(super) async fn idempotent<T, F, Fut>(&self, call: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        retry(ATTEMPTS, BASE_DELAY, self.inner.timeout, call).await
    }
}

/// Runs `call` until it succeeds, fails for good, or `attempts` tries or
/// the `budget` are spent.
async fn retry<T, F, Fut>(
    attempts: usize,
    base_delay: Duration,
    budget: Duration,
    call: F,
) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let backoff = ExponentialBuilder::new()
        .with_min_delay(base_delay)
        .with_factor(2.0)
        .with_max_times(attempts.saturating_sub(1))
        .with_jitter();
    call.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(StoreError::is_transient)
        .adjust(move |_, wait| wait.filter(|w| tokio::time::Instant::now() + *w < deadline))
        .notify(|e, wait| tracing::debug!(error = %e, ?wait, "retrying a store call"))
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    const FAST: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn retries_transient_failures_then_succeeds() {
        let calls = AtomicU32::new(0);
        let out = retry(3, FAST, Duration::from_secs(1), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(StoreError::Unavailable("blip".into())),
                1 => Err(StoreError::backend(std::io::Error::other("reset"))),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(out.expect("third try"), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_and_never_retries_other_errors() {
        let calls = AtomicU32::new(0);
        let out: StoreResult<()> = retry(3, FAST, Duration::from_secs(1), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Unavailable("down".into()))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        for err in [StoreError::CircuitOpen, StoreError::Corrupt("x".into())] {
            let calls = AtomicU32::new(0);
            let out: StoreResult<()> = retry(3, FAST, Duration::from_secs(1), || {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = err.clone();
                async move { Err(e) }
            })
            .await;
            assert!(out.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_the_waiting() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let out: StoreResult<()> = retry(
            10,
            Duration::from_millis(200),
            Duration::from_millis(300),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Unavailable("down".into()))
            },
        )
        .await;
        assert!(out.is_err());
        assert!(
            started.elapsed() <= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert!(calls.load(Ordering::SeqCst) <= 2);
    }
}
