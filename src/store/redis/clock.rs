//! The Redis clock, as seen from this node, and write deadlines.
//!
//! Guarded scripts (`lua/guard.lua`) refuse a write that reaches Redis after
//! its deadline, so a write the caller already answered `unavailable` is
//! never applied later. Deadlines are given in Redis time: the offset between
//! the Redis clock and ours is measured with `TIME` by a task of its own,
//! every `REFRESH` (sooner after a failure), for as long as the store lives.
//!
//! A reading is only as good as its round trip: the true offset lies
//! anywhere between `TIME` − (after) and `TIME` − (before), and a node
//! stalled on a busy machine between sending `TIME` and reading its answer
//! (or before sending it) would move deadlines by up to the stall, letting a
//! late write through. So a reading whose round trip is slower than
//! `GOOD_RTT_MS` (or than twice the best one seen, for a Redis that is far
//! away) is set aside and taken again soon; until a good reading, the offset
//! is 0 (clocks kept by NTP agree to a few ms).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Inner, RedisStore};
use crate::error::StoreResult;
use crate::model::now_ms;

/// How often the offset is measured again.
const REFRESH: Duration = Duration::from_secs(10);
/// How soon a failed measurement is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// A `TIME` round trip this fast is always good enough.
const GOOD_RTT_MS: i64 = 25;

/// Redis clock minus ours.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// The offset in ms; 0 until first measured (our clock is then the best
    /// guess).
    offset_ms: AtomicI64,
    /// The fastest `TIME` round trip seen, ms (0: none yet).
    best_rtt_ms: AtomicI64,
}

impl Clock {
    /// The current offset, ms.
    pub(super) fn offset(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// The deadline (Redis time, ms) for a write starting now: half the
    /// timeout, so that a write Redis applies is answered well before the
    /// caller gives up on it.
    pub(super) fn deadline(&self, timeout: Duration) -> i64 {
        now_ms() as i64 + self.offset() + (timeout.as_millis() / 2) as i64
    }

    /// Records a `TIME` reading taken between `before` and `after` (our
    /// ms); false when its round trip was too slow to trust (see the module
    /// docs) and the offset was left as it was.
    fn record(&self, before: i64, after: i64, redis_ms: i64) -> bool {
        let rtt = (after - before).max(0);
        let best = self.best_rtt_ms.load(Ordering::Relaxed);
        if best == 0 || rtt < best {
            self.best_rtt_ms.store(rtt.max(1), Ordering::Relaxed);
        }
        let best = self.best_rtt_ms.load(Ordering::Relaxed);
        if rtt > GOOD_RTT_MS && rtt > 2 * best {
            return false;
        }
        self.offset_ms
            .store(redis_ms - (before + after) / 2, Ordering::Relaxed);
        true
    }
}

impl RedisStore {
    /// Measures the offset between the Redis clock and ours; false when the
    /// reading was too slow to use.
    pub(super) async fn sync_clock(&self) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        let before = now_ms() as i64;
        let (secs, micros): (i64, i64) = self
            .timed("time", redis::cmd("TIME").query_async(&mut c))
            .await?;
        let after = now_ms() as i64;
        Ok(self
            .inner
            .clock
            .record(before, after, secs * 1000 + micros / 1000))
    }
}

/// Starts the refresh task when a tokio runtime is running (it always is
/// in a node; a store built outside one keeps offset 0). The task holds the
/// store weakly and ends with it.
pub(super) fn spawn_refresh(inner: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Inner> = Arc::downgrade(inner);
    runtime.spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let store = RedisStore { inner };
            let wait = match store.sync_clock().await {
                Ok(true) => REFRESH,
                Ok(false) => {
                    tracing::debug!("the Redis clock reading was slow; taking it again");
                    RETRY
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the Redis clock");
                    RETRY
                }
            };
            drop(store);
            tokio::time::sleep(wait).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_in_redis_time() {
        let clock = Clock::default();
        assert!(clock.record(1_000, 1_010, 6_005));
        assert_eq!(clock.offset(), 5_000);
        let timeout = Duration::from_millis(400);
        let d = clock.deadline(timeout);
        let expected = now_ms() as i64 + 5_000 + 200;
        assert!((d - expected).abs() < 50, "{d} vs {expected}");
    }

    #[test]
    fn a_slow_reading_does_not_move_deadlines() {
        let clock = Clock::default();
        assert!(clock.record(1_000, 1_004, 1_002));
        assert_eq!(clock.offset(), 0);
        // Stalled 3 s before sending TIME: the midpoint would say Redis is
        // 1.5 s ahead, and deadlines would let late writes through.
        assert!(!clock.record(10_000, 13_004, 13_002));
        assert_eq!(clock.offset(), 0, "set aside");
        // A far Redis whose every round trip is slow is still measured.
        let far = Clock::default();
        assert!(far.record(0, 80, 5_040));
        assert_eq!(far.offset(), 5_000);
        assert!(far.record(1_000, 1_120, 6_060), "within twice the best");
        assert!(!far.record(2_000, 2_400, 7_200), "a stall");
        assert_eq!(far.offset(), 5_000);
    }
}
