//! How a store call gets a Redis connection (`ConnMode`), and the retry of
//! idempotent calls.
//!
//! - `Shared` (the default): every call uses one multiplexed connection,
//!   which pipelines concurrent calls: the redis crate's `ConnectionManager`,
//!   made lazily on first use, which reconnects by itself (with the crate's
//!   own backoff) when the connection drops. The bus publishes on it too.
//! - `Pool`: each call checks a connection out of the bb8 pool (`pool`).
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
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::RedisStore;
use super::pool::{PooledRedis, RedisManager};
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

/// The shared connection's settings: the redis crate's connect (1 s) and
/// response (500 ms) timeouts, as the pooled connections have, and two
/// quick reconnect attempts after a drop (each call is bounded by the store
/// timeout anyway, and a later failure starts a new reconnect).
pub(super) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new().set_number_of_retries(2)
}

/// A connection for one store call.
pub(super) enum Conn<'a> {
    /// Checked out of the pool; returns to it on drop.
    Pooled(PooledConnection<'a, RedisManager>),
    /// A clone of a pooled connection, for a second concurrent command.
    Twin(PooledRedis),
    /// The shared, self-reconnecting connection.
    Shared(ConnectionManager),
}

impl Conn<'_> {
    /// A handle on the same connection, for a command sent concurrently
    /// (the multiplexed connection pipelines both).
    pub(super) fn twin(&self) -> Conn<'static> {
        match self {
            Conn::Pooled(c) => Conn::Twin((**c).clone()),
            Conn::Twin(c) => Conn::Twin(c.clone()),
            Conn::Shared(c) => Conn::Shared(c.clone()),
        }
    }
}

impl ConnectionLike for Conn<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(c) => c.req_packed_command(cmd),
            Conn::Twin(c) => c.req_packed_command(cmd),
            Conn::Shared(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c) => c.get_db(),
            Conn::Twin(c) => c.get_db(),
            Conn::Shared(c) => c.get_db(),
        }
    }
}

impl RedisStore {
    /// Connections: (in use, idle). In `ConnMode::Shared` the shared
    /// connection counts as one busy connection while its last round trip
    /// succeeded.
    pub fn pool_state(&self) -> (u32, u32) {
        if self.inner.mode == ConnMode::Shared {
            return (u32::from(self.inner.up.load(Ordering::Relaxed)), 0);
        }
        let s = self.inner.pool.state();
        (s.connections - s.idle_connections, s.idle_connections)
    }

    /// The shared connection, for publishing on the same connection as the
    /// commands (in `ConnMode::Pool` it carries only what is published).
    pub fn publisher(&self) -> ConnectionManager {
        self.inner.shared.clone()
    }

    /// A connection, unless the breaker is open.
    pub(super) async fn conn(&self) -> StoreResult<Conn<'_>> {
        if !self.inner.breaker.admit() {
            return Err(StoreError::CircuitOpen);
        }
        if self.inner.mode == ConnMode::Shared {
            return Ok(Conn::Shared(self.inner.shared.clone()));
        }
        match self.inner.pool.get().await {
            Ok(c) => Ok(Conn::Pooled(c)),
            Err(e) => {
                self.inner.breaker.record(false);
                Err(StoreError::Unavailable(format!("no Redis connection: {e}")))
            }
        }
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
