//! `SessionStore` on Redis: session records, the rooms they joined, node
//! heartbeats and user activity.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStore;
use super::parse::{corrupt, user_json};
use crate::error::StoreResult;
use crate::model::{User, now_ms};
use crate::store::{SessionRecord, SessionStore};

fn pexpire(key: &str, ms: i64) -> redis::Cmd {
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key).arg(ms);
    cmd
}

fn del(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(key);
    cmd
}

fn srem(key: &str, member: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SREM");
    cmd.arg(key).arg(member);
    cmd
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn open(&self, session: &SessionRecord, ttl: Duration) -> StoreResult<()> {
        self.idempotent(|| async move {
            let k = self.k();
            let ttl_ms = ttl.as_millis() as i64;
            let mut c = self.conn().await?;
            let key = k.session(&session.conn);
            let users = k.user_sessions(&session.user.id);
            // Three keys in up to three slots, so not one atomic step: the
            // node's set first, so the janitor finds the connection whatever
            // else fails; a failed open is retried whole (every step is
            // idempotent) and an abandoned one expires with its TTL.
            let mut node = redis::cmd("SADD");
            node.arg(k.node_sessions(&session.instance))
                .arg(&session.conn);
            let mut record = redis::cmd("HSET");
            record.arg(&key).arg(&[
                ("user", user_json(&session.user)),
                ("node", session.node.clone()),
                ("instance", session.instance.clone()),
                ("connected_at", session.connected_at.to_string()),
            ]);
            let mut user = redis::cmd("SADD");
            user.arg(&users).arg(&session.conn);
            let groups = vec![
                vec![node],
                vec![record, pexpire(&key, ttl_ms)],
                vec![user, pexpire(&users, ttl_ms)],
            ];
            self.scatter(&mut c, "session_open", groups).await?;
            Ok(())
        })
        .await
    }

    async fn session(&self, conn: &str) -> StoreResult<Option<SessionRecord>> {
        self.idempotent(|| async move {
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
        })
        .await
    }

    async fn user_sessions(&self, user: &str) -> StoreResult<Vec<String>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let mut conns: Vec<String> = self
                .timed("user_sessions", c.smembers(self.k().user_sessions(user)))
                .await?;
            conns.sort();
            Ok(conns)
        })
        .await
    }

    async fn close(&self, conn: &str, user: &str) -> StoreResult<()> {
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            let instance: Option<String> = self
                .timed("session_get", c.hget(k.session(conn), "instance"))
                .await?;
            // The node's set last: until the rest is gone, the janitor can
            // still find the connection.
            let mut groups = vec![
                vec![del(&k.session(conn))],
                vec![del(&k.session_rooms(conn))],
                vec![srem(&k.user_sessions(user), conn)],
            ];
            if let Some(instance) = instance {
                groups.push(vec![srem(&k.node_sessions(&instance), conn)]);
            }
            self.scatter(&mut c, "session_close", groups).await?;
            Ok(())
        })
        .await
    }

    async fn track_room(&self, conn: &str, room: &str, joined: bool) -> StoreResult<()> {
        self.idempotent(|| async move {
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
            self.timed("session_rooms", pipe.query_async(&mut c)).await
        })
        .await
    }

    async fn session_rooms(&self, conn: &str) -> StoreResult<Vec<String>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let mut rooms: Vec<String> = self
                .timed("session_rooms", c.smembers(self.k().session_rooms(conn)))
                .await?;
            rooms.sort();
            Ok(rooms)
        })
        .await
    }

    async fn heartbeat(&self, instance: &str, refresh: Option<Duration>) -> StoreResult<()> {
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
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
                let groups = chunk
                    .iter()
                    .flat_map(|conn| {
                        [
                            vec![pexpire(&k.session(conn), ttl_ms)],
                            vec![pexpire(&k.session_rooms(conn), ttl_ms)],
                        ]
                    })
                    .collect();
                self.scatter(&mut c, "session_refresh", groups).await?;
            }
            Ok(())
        })
        .await
    }

    async fn dead_nodes(&self, before_ms: u64) -> StoreResult<Vec<String>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            self.timed(
                "dead_nodes",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.k().nodes())
                    .arg("-inf")
                    .arg(format!("({before_ms}"))
                    .query_async(&mut c),
            )
            .await
        })
        .await
    }

    async fn node_sessions(&self, instance: &str) -> StoreResult<Vec<String>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let mut conns: Vec<String> = self
                .timed(
                    "node_sessions",
                    c.smembers(self.k().node_sessions(instance)),
                )
                .await?;
            conns.sort();
            Ok(conns)
        })
        .await
    }

    async fn forget_node(&self, instance: &str) -> StoreResult<()> {
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            let mut gone = redis::cmd("ZREM");
            gone.arg(k.nodes()).arg(instance);
            let groups = vec![vec![gone], vec![del(&k.node_sessions(instance))]];
            self.scatter(&mut c, "forget_node", groups).await?;
            Ok(())
        })
        .await
    }

    async fn record_activity(
        &self,
        user: &str,
        messages_sent: u64,
        ttl: Duration,
    ) -> StoreResult<()> {
        let key = self.k().activity(user);
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.hset(&key, "last_seen", now_ms()).ignore();
        pipe.hincr(&key, "messages", messages_sent).ignore();
        pipe.pexpire(&key, (ttl.as_millis() as i64).max(1)).ignore();
        self.timed("activity", pipe.query_async(&mut c)).await
    }

    async fn activity(&self, user: &str) -> StoreResult<Option<(u64, u64)>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let (seen, count): (Option<u64>, Option<u64>) = self
                .timed(
                    "activity",
                    redis::cmd("HMGET")
                        .arg(self.k().activity(user))
                        .arg("last_seen")
                        .arg("messages")
                        .query_async(&mut c),
                )
                .await?;
            Ok(seen.map(|s| (s, count.unwrap_or(0))))
        })
        .await
    }
}
