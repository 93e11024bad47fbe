//! A connection's request limits: the rate limiter (a token bucket per
//! connection, `--rate-limit` sustained, `--rate-burst` burst), the abuse
//! meter that spots a client which keeps sending at more than five times its
//! rate for ten seconds in a row (closed 4008), and the read budget: the
//! bytes of history (joins, resumes, `message.history`, `message.search`) a
//! connection may be sent, `--read-bytes-per-sec` sustained and four times
//! that at once.

use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The clock of every connection's rate limiter. Making one asks the CPU
/// what its time stamp counter can do (`cpuid`, which a virtual machine
/// traps: tens of microseconds), so it is made once, not per connection.
static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// What the limits say of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Handle it.
    Pass,
    /// Refuse it with `rate_limited`; a retry may pass after this long.
    Limited(Duration),
    /// The client keeps flooding: close it.
    Abusive,
}

/// One connection's limits.
pub(super) struct Limits {
    /// The token bucket.
    limiter: DefaultDirectRateLimiter,
    /// Sustained flooding.
    abuse: AbuseMeter,
}

impl Limits {
    /// `rate` requests per second sustained, `burst` at once.
    pub(super) fn new(rate: u32, burst: u32) -> Limits {
        let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Limits {
            limiter: RateLimiter::direct_with_clock(quota, CLOCK.clone()),
            abuse: AbuseMeter::new(rate.saturating_mul(5)),
        }
    }

    /// Counts one frame received now.
    pub(super) fn check(&mut self) -> Verdict {
        if self.abuse.record(Instant::now()) {
            return Verdict::Abusive;
        }
        match self.limiter.check() {
            Ok(()) => Verdict::Pass,
            Err(not_until) => {
                let wait = not_until.wait_time_from(CLOCK.now());
                Verdict::Limited(wait.max(Duration::from_millis(1)))
            }
        }
    }
}

/// The bytes of history replies a connection may be sent: a bucket of
/// `4 × rate` bytes refilled at `rate` a second. A reading request needs
/// something in the bucket; its reply's size is then taken out, below zero
/// if need be (one large reply is answered whole, and the connection waits
/// it off before the next). governor's cells cannot go into debt, hence
/// this small bucket.
#[derive(Debug)]
pub(super) struct ReadBudget {
    /// Refill, bytes per second.
    rate: f64,
    /// The bucket's size, bytes.
    burst: f64,
    /// What is in it now, bytes (negative: in debt).
    level: f64,
    /// When `level` was last brought up to date.
    at: Instant,
}

impl ReadBudget {
    /// A budget of `rate` bytes a second; `None` when 0 (no budget).
    pub(super) fn new(rate: u64, now: Instant) -> Option<ReadBudget> {
        (rate > 0).then(|| {
            let rate = rate as f64;
            ReadBudget {
                rate,
                burst: rate * 4.0,
                level: rate * 4.0,
                at: now,
            }
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Whether a reading request may run now; else how long until it may.
    pub(super) fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level > 0.0 {
            Ok(())
        } else {
            let wait = (1.0 - self.level) / self.rate;
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }

    /// Takes a reply of `bytes` out of the bucket.
    pub(super) fn charge(&mut self, bytes: usize, now: Instant) {
        self.refill(now);
        self.level -= bytes as f64;
    }
}

/// Counts frames per second and spots a client that keeps sending at more
/// than five times its rate for ten seconds in a row.
struct AbuseMeter {
    /// Frames in one second above which that second counts as abuse.
    threshold: u32,
    /// Start of the current one-second window.
    window_start: Instant,
    /// Frames in the current window.
    count: u32,
    /// Consecutive abusive seconds so far.
    streak: u32,
}

/// Consecutive over-threshold seconds that count as abuse.
const ABUSE_SECONDS: u32 = 10;

impl AbuseMeter {
    fn new(threshold: u32) -> AbuseMeter {
        AbuseMeter {
            threshold: threshold.max(1),
            window_start: Instant::now(),
            count: 0,
            streak: 0,
        }
    }

    /// Records a frame; true when the connection is abusive.
    fn record(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let over = self.count > self.threshold;
            // A whole quiet second in between breaks the streak.
            self.streak = if over && elapsed < Duration::from_secs(2) {
                self.streak + 1
            } else {
                0
            };
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.streak >= ABUSE_SECONDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abuse_needs_ten_busy_seconds_in_a_row() {
        let start = Instant::now();
        let mut m = AbuseMeter::new(5);
        m.window_start = start;
        let mut abusive = false;
        for sec in 0..12u64 {
            for i in 0..7u64 {
                let t = start + Duration::from_millis(sec * 1000 + i * 10);
                abusive = m.record(t);
            }
            if sec < 10 {
                assert!(!abusive, "not yet at second {sec}");
            }
        }
        assert!(abusive);
        // A quiet gap resets.
        let later = start + Duration::from_secs(20);
        assert!(!m.record(later));
    }

    #[test]
    fn modest_rates_are_not_abuse() {
        let start = Instant::now();
        let mut m = AbuseMeter::new(5);
        m.window_start = start;
        for sec in 0..30u64 {
            for i in 0..5u64 {
                assert!(!m.record(start + Duration::from_millis(sec * 1000 + i * 100)));
            }
        }
    }

    #[test]
    fn the_read_budget_lets_one_big_reply_through_then_waits_it_off() {
        let t0 = Instant::now();
        assert!(ReadBudget::new(0, t0).is_none(), "0 turns it off");
        let mut b = ReadBudget::new(1000, t0).expect("on");
        assert_eq!(b.check(t0), Ok(()));
        b.charge(3000, t0);
        assert_eq!(b.check(t0), Ok(()), "1000 bytes left of 4000");
        b.charge(6000, t0);
        // 5000 in debt at 1000 bytes a second: about 5 s.
        let wait = b.check(t0).expect_err("in debt");
        assert!(
            wait > Duration::from_millis(4900) && wait < Duration::from_millis(5100),
            "{wait:?}"
        );
        assert!(b.check(t0 + Duration::from_millis(4000)).is_err());
        assert_eq!(b.check(t0 + Duration::from_millis(5100)), Ok(()));
        // Refill stops at the bucket's size.
        let later = t0 + Duration::from_secs(3600);
        b.charge(0, later);
        b.charge(4000, later);
        assert!(
            b.check(later).is_err(),
            "the bucket holds 4 s of the rate at most"
        );
    }

    #[test]
    fn the_burst_passes_then_the_rate_limits() {
        let mut limits = Limits::new(2, 3);
        for _ in 0..3 {
            assert_eq!(limits.check(), Verdict::Pass);
        }
        match limits.check() {
            Verdict::Limited(wait) => {
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_millis(500),
                    "{wait:?}"
                )
            }
            other => panic!("expected a limit, got {other:?}"),
        }
    }
}
