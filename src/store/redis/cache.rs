//! `CacheStore`, `LimitStore` and `StoreHealth` on Redis: the general cache,
//! named locks, the abuse-limit counters and the readiness ping.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStore;
use super::conn::Conn;
use super::parse::corrupt;
use super::scripts::{Limit, LimitReply};
use crate::error::StoreResult;
use crate::store::{CacheStore, Count, LimitStore, StoreHealth};

#[async_trait]
impl CacheStore for RedisStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            self.timed("cache_get", c.get(self.k().cache(key))).await
        })
        .await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let ms = (ttl.as_millis() as u64).max(1);
            self.timed("cache_set", c.pset_ex(self.k().cache(key), value, ms))
                .await
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            self.timed("cache_delete", c.del(self.k().cache(key))).await
        })
        .await
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
                    .query_async(&mut c),
            )
            .await?;
        Ok(taken.is_some())
    }
}

#[async_trait]
impl LimitStore for RedisStore {
    async fn count(&self, name: &str, window: Duration) -> StoreResult<Count> {
        // Not retried: a count that reached Redis and lost its answer must
        // not be counted twice.
        let args = Limit {
            key: self.k().limit(name),
            count: true,
            window_ms: window.as_millis() as u64,
        };
        let mut c = self.conn().await?;
        let reply: LimitReply = self
            .script(&mut c, "limit_count", &self.inner.scripts.limit, &args)
            .await?;
        Ok(count_of(reply))
    }

    async fn peek(&self, name: &str) -> StoreResult<Count> {
        self.idempotent(|| async move {
            let args = Limit {
                key: self.k().limit(name),
                count: false,
                window_ms: 0,
            };
            let mut c = self.conn().await?;
            let reply: LimitReply = self
                .script(&mut c, "limit_peek", &self.inner.scripts.limit, &args)
                .await?;
            Ok(count_of(reply))
        })
        .await
    }
}

fn count_of(reply: LimitReply) -> Count {
    Count {
        count: reply.count,
        resets_in: Duration::from_millis(reply.resets_in_ms),
    }
}

#[async_trait]
impl StoreHealth for RedisStore {
    /// On a cluster, any master answering is enough: one master failing
    /// over must not make every node unready (its rooms answer
    /// `unavailable` meanwhile; the others keep working).
    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn().await?;
        let pong: String = if let Conn::Cluster(cluster) = &mut c {
            use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
            let any_master = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::OneSucceeded),
            ));
            let value = self
                .timed(
                    "ping",
                    cluster.route_command(redis::cmd("PING"), any_master),
                )
                .await?;
            redis::from_redis_value(value).map_err(corrupt)?
        } else {
            self.timed("ping", redis::cmd("PING").query_async(&mut c))
                .await?
        };
        if pong == "PONG" {
            Ok(())
        } else {
            Err(corrupt(format!("PING answered {pong}")))
        }
    }
}
