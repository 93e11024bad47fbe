//! How a store call gets a Redis connection (`ConnMode`).
//!
//! - `Shared` (the default): every call clones one multiplexed connection,
//!   which pipelines concurrent calls; a broken one is replaced on the next
//!   call.
//! - `Pool`: each call checks a connection out of the bb8 pool.
//!
//! Both go through the circuit breaker first: while it is open, no
//! connection is made and the call fails with `StoreError::CircuitOpen`.

use bb8::PooledConnection;

use super::RedisStore;
use super::parse::unavailable;
use crate::error::{StoreError, StoreResult};
use crate::store::pool::{PooledRedis, RedisManager};

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
pub(super) enum Conn<'a> {
    /// Checked out of the pool; returns to it on drop.
    Pooled(PooledConnection<'a, RedisManager>),
    /// A clone of the shared connection.
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

impl RedisStore {
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

    /// A connection, unless the breaker is open.
    pub(super) async fn conn(&self) -> StoreResult<Conn<'_>> {
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
}
