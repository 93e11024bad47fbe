//! A circuit breaker for the Redis engine.
//!
//! Closed: calls go through; `threshold` consecutive failures open it.
//! Open: calls fail at once with `StoreError::CircuitOpen` (`unavailable`
//! to clients) for `cooldown`. Half-open: after the cooldown one call, the
//! probe, goes through; its success closes the breaker, its failure opens
//! it again. A probe that never reports (its request was dropped) is
//! replaced after `probe_timeout`.
//!
//! The state sits behind a `std::sync::Mutex` held for a few instructions,
//! never across an `.await`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state, as shown in metrics (0, 1, 2) and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe call goes through.
    HalfOpen,
}

impl BreakerState {
    /// The metric value.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// The readiness name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration, probe_timeout: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
            probe_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go through now.
    pub fn admit(&self) -> bool {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { probe_since: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probe_since }
                if now.duration_since(probe_since) >= self.probe_timeout =>
            {
                *state = State::HalfOpen { probe_since: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// Reports how an admitted call went.
    pub fn record(&self, ok: bool) {
        self.record_at(ok, Instant::now())
    }

    fn record_at(&self, ok: bool, now: Instant) {
        let mut state = self.lock();
        *state = match (&*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (State::Open { until }, false) => State::Open { until: *until },
            (_, false) => State::Open {
                until: now + self.cooldown,
            },
        };
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_probe() {
        let b = Breaker::new(3, Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(b.admit_at(t0));
            b.record_at(false, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_at(true, t0);
        for _ in 0..3 {
            assert!(b.admit_at(t0));
            b.record_at(false, t0);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(
            !b.admit_at(t0 + Duration::from_millis(500)),
            "fails fast while open"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.admit_at(t1), "the probe goes through after the cooldown");
        assert!(!b.admit_at(t1), "only one probe at a time");
        b.record_at(true, t1);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit_at(t1));
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let b = Breaker::new(1, Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        b.record_at(false, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.admit_at(t1));
        b.record_at(false, t1);
        assert!(!b.admit_at(t1 + Duration::from_millis(999)));
        assert!(b.admit_at(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn a_lost_probe_is_replaced() {
        let b = Breaker::new(1, Duration::from_secs(1), Duration::from_secs(2));
        let t0 = Instant::now();
        b.record_at(false, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.admit_at(t1));
        assert!(!b.admit_at(t1 + Duration::from_secs(1)));
        assert!(
            b.admit_at(t1 + Duration::from_secs(2)),
            "probe timed out: another"
        );
    }
}
