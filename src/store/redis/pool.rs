//! The bb8 manager of `ConnMode::Pool`: bb8-redis's multiplexed
//! connections, with broken connections detected without a round trip.
//!
//! bb8-redis's own `RedisConnectionManager` checks connections (`PING`),
//! but is not the pool's manager. It connects with the redis crate's
//! default 500 ms response timeout, where ours connect with the store's;
//! and it never reports a connection broken (`has_broken`
//! is always false), so it can only find a dead one by sending `PING` when
//! it is checked out (`test_on_check_out`), which doubles the round trips of
//! every store call, and without it a pool would keep dead connections
//! after a Redis restart. Instead,
//! each pooled connection watches the results of its own commands: an I/O
//! error or a dropped connection marks it broken, and bb8 discards it when
//! it returns to the pool (`has_broken`). A Redis restart therefore costs
//! one failed call per pooled connection, then new connections are made.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Makes pooled connections.
#[derive(Clone)]
pub(super) struct RedisManager {
    /// bb8-redis's manager, which checks connections.
    inner: RedisConnectionManager,
    /// Makes the connections, with `config`.
    client: Client,
    /// The response timeout: the store's.
    config: AsyncConnectionConfig,
}

impl RedisManager {
    /// A manager connecting with `client`, whose connections give up on a
    /// reply after `timeout`.
    pub(super) fn new(client: Client, timeout: Duration) -> Result<RedisManager, RedisError> {
        Ok(RedisManager {
            inner: RedisConnectionManager::new(client.get_connection_info().clone())?,
            client,
            config: AsyncConnectionConfig::new().set_response_timeout(Some(timeout)),
        })
    }
}

/// A pooled multiplexed connection that remembers whether it broke.
#[derive(Clone)]
pub(super) struct PooledRedis {
    /// The connection.
    conn: MultiplexedConnection,
    /// Set when one of its commands failed in a way that broke it; shared
    /// by its clones.
    broken: Arc<AtomicBool>,
}

fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

impl PooledRedis {
    fn note<T>(&self, result: &Result<T, RedisError>) {
        if let Err(e) = result
            && breaks_connection(e)
        {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

impl ConnectionLike for PooledRedis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.note(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.note(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = PooledRedis;
    type Error = RedisError;

    async fn connect(&self) -> Result<PooledRedis, RedisError> {
        Ok(PooledRedis {
            conn: self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, conn: &mut PooledRedis) -> Result<(), RedisError> {
        self.inner.is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut PooledRedis) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}
