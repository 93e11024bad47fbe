//! Retries of transient store failures, as a decorator over any engine.
//!
//! Reads and idempotent writes that fail with `StoreError::Unavailable` are
//! tried again with jittered exponential backoff, all within one budget (by
//! default the Redis timeout), so a retried call never takes much longer than
//! an unretried one would have. Calls that are not idempotent are passed
//! through once: creating a room, joining and leaving (their system
//! messages), compare-and-set edits, activity counters, locks, and sends
//! without a `client_msg_id` (a send with one is idempotent by design). An
//! open circuit breaker (`StoreError::CircuitOpen`) is never retried.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngExt;

use super::{
    AppendOutcome, CacheStore, CreateOutcome, HistoryPage, JoinOutcome, LeaveOutcome, MessageStore,
    ReplaceOutcome, Replay, RoomStore, SessionRecord, SessionStore, Store, StoreError, StoreHealth,
    StoreResult, StoredMessage,
};
use crate::model::{Event, Message, Room, User};

/// How retries are spaced and bounded.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Backoff before the second try; doubled each time, plus up to 100 %
    /// jitter.
    pub base_delay: Duration,
    /// Time for all tries together.
    pub budget: Duration,
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails for good, or the policy is spent.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.budget;
        let mut delay = self.base_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(StoreError::Unavailable(reason)) if attempt < self.attempts => {
                    let jitter = rand::rng().random_range(0..=delay.as_micros() as u64);
                    let wait = delay + Duration::from_micros(jitter);
                    if tokio::time::Instant::now() + wait >= deadline {
                        return Err(StoreError::Unavailable(reason));
                    }
                    tracing::debug!(attempt, %reason, "retrying a store call");
                    tokio::time::sleep(wait).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// An engine whose idempotent calls are retried.
pub struct Retrying {
    inner: Arc<dyn Store>,
    policy: RetryPolicy,
}

impl Retrying {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, policy: RetryPolicy) -> Retrying {
        Retrying { inner, policy }
    }
}

#[async_trait]
impl RoomStore for Retrying {
    async fn create_room(
        &self,
        room: &Room,
        creator: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<CreateOutcome> {
        self.inner.create_room(room, creator, conn, note).await
    }
    async fn room(&self, id: &str) -> StoreResult<Option<Room>> {
        self.policy.run(|| self.inner.room(id)).await
    }
    async fn room_id_by_code(&self, code: &str) -> StoreResult<Option<String>> {
        self.policy.run(|| self.inner.room_id_by_code(code)).await
    }
    async fn join(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<JoinOutcome> {
        self.inner.join(room, user, conn, note).await
    }
    async fn leave(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<LeaveOutcome> {
        self.inner.leave(room, user, conn, note).await
    }
    async fn participants(&self, room: &str) -> StoreResult<Vec<User>> {
        self.policy.run(|| self.inner.participants(room)).await
    }
    async fn is_participant(&self, room: &str, user: &str) -> StoreResult<bool> {
        self.policy
            .run(|| self.inner.is_participant(room, user))
            .await
    }
    async fn list_public(&self, limit: usize) -> StoreResult<Vec<Room>> {
        self.policy.run(|| self.inner.list_public(limit)).await
    }
    async fn online(&self, room: &str) -> StoreResult<Vec<User>> {
        self.policy.run(|| self.inner.online(room)).await
    }
    async fn set_typing(
        &self,
        room: &str,
        user: &str,
        active: bool,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.policy
            .run(|| self.inner.set_typing(room, user, active, ttl))
            .await
    }
    async fn idle_rooms(&self, before_ms: u64, limit: usize) -> StoreResult<Vec<String>> {
        self.policy
            .run(|| self.inner.idle_rooms(before_ms, limit))
            .await
    }
    async fn close_room(&self, room: &str, before_ms: u64) -> StoreResult<bool> {
        self.policy
            .run(|| self.inner.close_room(room, before_ms))
            .await
    }
}

#[async_trait]
impl MessageStore for Retrying {
    async fn append(
        &self,
        message: &Message,
        client_msg_id: Option<&str>,
    ) -> StoreResult<AppendOutcome> {
        match client_msg_id {
            Some(_) => {
                self.policy
                    .run(|| self.inner.append(message, client_msg_id))
                    .await
            }
            None => self.inner.append(message, None).await,
        }
    }
    async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        self.policy
            .run(|| self.inner.history(room, before, limit))
            .await
    }
    async fn events_since(&self, room: &str, since: u64) -> StoreResult<Replay> {
        self.policy
            .run(|| self.inner.events_since(room, since))
            .await
    }
    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<StoredMessage>> {
        self.policy.run(|| self.inner.message(room, id)).await
    }
    async fn replace(
        &self,
        room: &str,
        expected: &[u8],
        event: &Event,
    ) -> StoreResult<ReplaceOutcome> {
        self.inner.replace(room, expected, event).await
    }
    async fn search(
        &self,
        room: &str,
        words: &[String],
        limit: usize,
        scan_cap: usize,
    ) -> StoreResult<Vec<Message>> {
        self.policy
            .run(|| self.inner.search(room, words, limit, scan_cap))
            .await
    }
}

#[async_trait]
impl SessionStore for Retrying {
    async fn open(&self, session: &SessionRecord, ttl: Duration) -> StoreResult<()> {
        self.policy.run(|| self.inner.open(session, ttl)).await
    }
    async fn session(&self, conn: &str) -> StoreResult<Option<SessionRecord>> {
        self.policy.run(|| self.inner.session(conn)).await
    }
    async fn user_sessions(&self, user: &str) -> StoreResult<Vec<String>> {
        self.policy.run(|| self.inner.user_sessions(user)).await
    }
    async fn close(&self, conn: &str, user: &str) -> StoreResult<()> {
        self.policy.run(|| self.inner.close(conn, user)).await
    }
    async fn track_room(&self, conn: &str, room: &str, joined: bool) -> StoreResult<()> {
        self.policy
            .run(|| self.inner.track_room(conn, room, joined))
            .await
    }
    async fn session_rooms(&self, conn: &str) -> StoreResult<Vec<String>> {
        self.policy.run(|| self.inner.session_rooms(conn)).await
    }
    async fn heartbeat(&self, instance: &str, refresh: Option<Duration>) -> StoreResult<()> {
        self.policy
            .run(|| self.inner.heartbeat(instance, refresh))
            .await
    }
    async fn dead_nodes(&self, before_ms: u64) -> StoreResult<Vec<String>> {
        self.policy.run(|| self.inner.dead_nodes(before_ms)).await
    }
    async fn node_sessions(&self, instance: &str) -> StoreResult<Vec<String>> {
        self.policy.run(|| self.inner.node_sessions(instance)).await
    }
    async fn forget_node(&self, instance: &str) -> StoreResult<()> {
        self.policy.run(|| self.inner.forget_node(instance)).await
    }
    async fn record_activity(&self, user: &str, messages_sent: u64) -> StoreResult<()> {
        self.inner.record_activity(user, messages_sent).await
    }
    async fn activity(&self, user: &str) -> StoreResult<Option<(u64, u64)>> {
        self.policy.run(|| self.inner.activity(user)).await
    }
}

#[async_trait]
impl CacheStore for Retrying {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.policy.run(|| self.inner.get(key)).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        self.policy.run(|| self.inner.set(key, value, ttl)).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.policy.run(|| self.inner.delete(key)).await
    }
    async fn try_lock(&self, name: &str, ttl: Duration) -> StoreResult<bool> {
        self.inner.try_lock(name, ttl).await
    }
}

#[async_trait]
impl StoreHealth for Retrying {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            budget: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_then_succeeds() {
        let calls = AtomicU32::new(0);
        let out = policy()
            .run(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(StoreError::Unavailable("blip".into())),
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
        let out: StoreResult<()> = policy()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Unavailable("down".into()))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        for err in [StoreError::CircuitOpen, StoreError::Corrupt("x".into())] {
            let calls = AtomicU32::new(0);
            let e = err.clone();
            let out: StoreResult<()> = policy()
                .run(|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let e = e.clone();
                    async move { Err(e) }
                })
                .await;
            assert!(out.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_the_waiting() {
        let slow = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(200),
            budget: Duration::from_millis(300),
        };
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let out: StoreResult<()> = slow
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Unavailable("down".into()))
            })
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
