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
    Closed {
        failures: u32,
        /// When the last call succeeded (see `Breaker::quiet`).
        last_ok: Option<Instant>,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probe_since: Instant,
    },
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
    /// With `whole_backend`: failures within this long of a success do not
    /// count.
    quiet: Option<Duration>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration, probe_timeout: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed {
                failures: 0,
                last_ok: None,
            }),
            threshold: threshold.max(1),
            cooldown,
            probe_timeout,
            quiet: None,
        }
    }

    /// A breaker for a backend made of independent parts (a Redis Cluster's
    /// masters): a failure counts towards opening only when no call at all
    /// has succeeded for `quiet`, so one dead master, whose calls fail while
    /// the others' succeed, never shuts out the healthy ones. It opens when
    /// the whole backend is gone.
    pub fn whole_backend(
        threshold: u32,
        cooldown: Duration,
        probe_timeout: Duration,
        quiet: Duration,
    ) -> Breaker {
        Breaker {
            quiet: Some(quiet),
            ..Breaker::new(threshold, cooldown, probe_timeout)
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

    /// Reports how an admitted call went; true when this failure opened
    /// the breaker.
    pub fn record(&self, ok: bool) -> bool {
        self.record_at(ok, Instant::now())
    }

    fn record_at(&self, ok: bool, now: Instant) -> bool {
        let mut state = self.lock();
        let was_open = matches!(*state, State::Open { .. });
        *state = match (&*state, ok) {
            (_, true) => State::Closed {
                failures: 0,
                last_ok: Some(now),
            },
            (
                State::Closed {
                    failures,
                    last_ok: Some(at),
                },
                false,
            ) if self.quiet.is_some_and(|q| now.duration_since(*at) < q) => State::Closed {
                failures: *failures,
                last_ok: Some(*at),
            },
            (State::Closed { failures, last_ok }, false) if failures + 1 < self.threshold => {
                State::Closed {
                    failures: failures + 1,
                    last_ok: *last_ok,
                }
            }
            (State::Open { until }, false) => State::Open { until: *until },
            (_, false) => State::Open {
                until: now + self.cooldown,
            },
        };
        !was_open && matches!(*state, State::Open { .. })
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
    fn a_whole_backend_breaker_ignores_failures_while_other_calls_succeed() {
        let b = Breaker::whole_backend(
            3,
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(2),
        );
        let t0 = Instant::now();
        // One part failing between successes of the others: never opens.
        for i in 0..20u64 {
            let at = t0 + Duration::from_millis(100 * i);
            b.record_at(i % 3 == 0, at);
            b.record_at(false, at);
            assert!(b.admit_at(at), "closed while some calls succeed ({i})");
        }
        // Nothing succeeds any more: once the quiet time has passed,
        // failures count and it opens.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            b.record_at(false, later);
        }
        assert!(!b.admit_at(later), "open when the whole backend fails");
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_probe() {
        let b = Breaker::new(3, Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(b.admit_at(t0));
            assert!(!b.record_at(false, t0));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_at(true, t0);
        for i in 0..3 {
            assert!(b.admit_at(t0));
            assert_eq!(b.record_at(false, t0), i == 2, "only the third opens it");
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.record_at(false, t0), "a late failure while open");
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
        assert!(b.record_at(false, t1), "the failed probe opens it");
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
