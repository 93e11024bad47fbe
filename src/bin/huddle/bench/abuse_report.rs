//! What `huddle bench abuse` measured, and the rules that turn raw answers
//! into it: what counts as accepted or refused in each phase, the odds of a
//! guessed code, the loopback-only check and the Redis `INFO` parsing. Pure
//! code, tested here; the network side is in `abuse`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use huddle::service::rooms::CODE_ALPHABET;
use serde::Serialize;

/// Length of the guessed join codes: the length the server gives new rooms.
pub(super) const CODE_LEN: u32 = 6;

/// The two phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `room.create` of private rooms, each left at once.
    CreateFlood,
    /// `room.join` by random codes.
    CodeGuess,
}

impl Phase {
    /// The name in the report.
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::CreateFlood => "create_flood",
            Phase::CodeGuess => "code_guess",
        }
    }

    /// Whether an error reply still means the server did the work asked
    /// for. For a guess, `not_found` (a miss), `forbidden` (banned) and
    /// `conflict` (full) are the server looking the code up; a creation is
    /// accepted only when it succeeds.
    pub(super) fn is_checked(self, code: &str) -> bool {
        self == Phase::CodeGuess && matches!(code, "not_found" | "forbidden" | "conflict")
    }
}

/// What the workers of one phase saw, summed.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Requests sent (creations or guesses).
    pub(super) attempts: u64,
    /// Of those, done by the server (created, or looked up).
    pub(super) accepted: u64,
    /// Error replies by code (a guess's misses are `not_found` here).
    pub(super) errors: BTreeMap<String, u64>,
    /// Since the phase began, when the first refusal came.
    pub(super) first_refusal: Option<Duration>,
    /// Connections the server closed, by close code (`none` without one).
    pub(super) closes: BTreeMap<String, u64>,
    /// Connections reopened after a close (by either side).
    pub(super) reconnects: u64,
    /// Times a worker dropped its guest for a new one rather than wait out
    /// a long `retry_after_ms`.
    pub(super) fresh_guests: u64,
    /// The longest `retry_after_ms` given.
    pub(super) max_retry_after: Option<Duration>,
    /// Rooms created (flood), by id.
    pub(super) created: Vec<String>,
    /// Joins that succeeded by a guessed code.
    pub(super) hits: u64,
    /// Requests that got no answer at all.
    pub(super) failures: u64,
    /// The first such failure.
    pub(super) first_failure: Option<String>,
}

impl Tally {
    /// Counts one error reply at `at` since the phase began.
    pub(super) fn refused(
        &mut self,
        phase: Phase,
        code: &str,
        at: Duration,
        retry_after: Option<Duration>,
    ) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
        self.max_retry_after = self.max_retry_after.max(retry_after);
        if phase.is_checked(code) {
            self.accepted += 1;
        } else if self.first_refusal.is_none_or(|t| at < t) {
            self.first_refusal = Some(at);
        }
    }

    /// Counts a close by the server.
    pub(super) fn closed(&mut self, code: Option<u16>) {
        let key = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        *self.closes.entry(key).or_default() += 1;
    }

    /// Counts a request that got no answer.
    pub(super) fn failed(&mut self, why: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(why);
    }

    /// Adds another worker's tally.
    pub(super) fn merge(&mut self, other: Tally) {
        self.attempts += other.attempts;
        self.accepted += other.accepted;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.first_refusal = match (self.first_refusal, other.first_refusal) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (k, v) in other.closes {
            *self.closes.entry(k).or_default() += v;
        }
        self.reconnects += other.reconnects;
        self.fresh_guests += other.fresh_guests;
        self.max_retry_after = self.max_retry_after.max(other.max_retry_after);
        self.created.extend(other.created);
        self.hits += other.hits;
        self.failures += other.failures;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

/// Redis `used_memory` and `DBSIZE` at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct RedisSize {
    /// `INFO memory` → `used_memory`, bytes.
    pub(super) used_memory: u64,
    /// `DBSIZE`: keys.
    pub(super) keys: u64,
}

/// Redis before and after a phase.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct RedisDelta {
    /// Before the phase's first request.
    pub(super) before: RedisSize,
    /// After the phase's connections were closed.
    pub(super) after: RedisSize,
}

/// One phase's figures.
#[derive(Debug, Serialize)]
pub(super) struct PhaseReport {
    /// `create_flood` or `code_guess`.
    pub(super) phase: &'static str,
    /// Connections that ran it.
    pub(super) connections: usize,
    /// How long it ran.
    pub(super) seconds: f64,
    /// Requests sent.
    pub(super) attempts: u64,
    /// Done by the server: rooms created, or codes looked up (hit or miss).
    pub(super) accepted: u64,
    /// `accepted` per second.
    pub(super) accepted_per_sec: f64,
    /// Error replies by code; for guesses, `not_found` are the misses.
    pub(super) errors: BTreeMap<String, u64>,
    /// Milliseconds from the phase's start to its first refusal (an error
    /// that is not a guess being looked up); none when nothing was refused.
    pub(super) first_refusal_ms: Option<u64>,
    /// Connections the server closed, by close code.
    pub(super) closes: BTreeMap<String, u64>,
    /// Connections reopened (a new guest each time) after a close.
    pub(super) reconnects: u64,
    /// Of those, guests dropped by the bench for a new one rather than wait
    /// out a long `retry_after_ms` (the per-user limits; not `--patient`).
    pub(super) fresh_guests: u64,
    /// The longest `retry_after_ms` given: milliseconds for the
    /// per-connection rate, up to a minute for the per-minute limits.
    pub(super) max_retry_after_ms: Option<u64>,
    /// Requests that got no answer (timeouts, failed connects).
    pub(super) failures: u64,
    /// The first of those.
    pub(super) first_failure: Option<String>,
    /// Flood: rooms created.
    pub(super) rooms_created: Option<u64>,
    /// Flood: created rooms asked about after the phase (all, or an even
    /// sample of at most `CHECK_MAX`).
    pub(super) rooms_checked: Option<u64>,
    /// Flood: of those, rooms that still exist after their creators left.
    pub(super) rooms_still_exist: Option<u64>,
    /// Guess: real rooms planted before the run (their creators stay).
    pub(super) planted: Option<usize>,
    /// Guess: joins that succeeded by a guessed code.
    pub(super) hits: Option<u64>,
    /// Guess: hits expected by chance with the planted rooms live.
    pub(super) expected_hits: Option<f64>,
    /// Guess: mean seconds to a first hit at the measured look-up rate
    /// with `live_rooms` live rooms (the probe's figure by default).
    pub(super) mean_seconds_to_first_hit: Option<f64>,
    /// Guess: the live room count that estimate assumes.
    pub(super) live_rooms: Option<u64>,
    /// Redis before and after, with `--redis-url`.
    pub(super) redis: Option<RedisDelta>,
}

impl PhaseReport {
    /// The common figures of a finished phase; the caller fills in the
    /// phase's own.
    pub(super) fn new(
        phase: Phase,
        connections: usize,
        seconds: f64,
        tally: &Tally,
        redis: Option<RedisDelta>,
    ) -> PhaseReport {
        PhaseReport {
            phase: phase.name(),
            connections,
            seconds,
            attempts: tally.attempts,
            accepted: tally.accepted,
            accepted_per_sec: if seconds > 0.0 {
                tally.accepted as f64 / seconds
            } else {
                0.0
            },
            errors: tally.errors.clone(),
            first_refusal_ms: tally.first_refusal.map(|d| d.as_millis() as u64),
            closes: tally.closes.clone(),
            reconnects: tally.reconnects,
            fresh_guests: tally.fresh_guests,
            max_retry_after_ms: tally.max_retry_after.map(|d| d.as_millis() as u64),
            failures: tally.failures,
            first_failure: tally.first_failure.clone(),
            rooms_created: None,
            rooms_checked: None,
            rooms_still_exist: None,
            planted: None,
            hits: None,
            expected_hits: None,
            mean_seconds_to_first_hit: None,
            live_rooms: None,
            redis,
        }
    }
}

/// The whole run; printed as one JSON line.
#[derive(Debug, Serialize)]
pub(super) struct AbuseReport {
    /// Always `abuse`.
    pub(super) mode: &'static str,
    /// Node URLs.
    pub(super) nodes: usize,
    /// Phase 1.
    pub(super) create_flood: PhaseReport,
    /// Phase 2.
    pub(super) code_guess: PhaseReport,
}

/// How many join codes there are of `CODE_LEN` characters.
pub(super) fn code_space() -> f64 {
    (CODE_ALPHABET.len() as f64).powi(CODE_LEN as i32)
}

/// Hits expected from `lookups` uniform guesses with `live` rooms.
pub(super) fn expected_hits(lookups: u64, live: u64) -> f64 {
    lookups as f64 * live as f64 / code_space()
}

/// Mean seconds to a first hit guessing `per_sec` codes a second with
/// `live` rooms; none when nothing is looked up.
pub(super) fn mean_seconds_to_first_hit(per_sec: f64, live: u64) -> Option<f64> {
    (per_sec > 0.0 && live > 0).then(|| code_space() / (per_sec * live as f64))
}

/// Whether `url` (`ws://`, `redis://`, …) names this machine: the bench
/// refuses to flood anything else.
pub(super) fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `used_memory` from the text of `INFO memory`.
pub(super) fn used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Up to `max` items spread evenly over `all`.
pub(super) fn sample<T: Clone>(all: &[T], max: usize) -> Vec<T> {
    if all.len() <= max {
        return all.to_vec();
    }
    (0..max).map(|i| all[i * all.len() / max].clone()).collect()
}

/// The human summary, on stderr.
pub(super) fn print_summary(r: &AbuseReport) {
    eprintln!("== huddle bench abuse ({} node URL(s)) ==", r.nodes);
    for p in [&r.create_flood, &r.code_guess] {
        eprintln!(
            "-- {}: {} connections, {:.1} s --",
            p.phase, p.connections, p.seconds
        );
        eprintln!(
            "attempts {}  accepted {} ({:.1}/s)  first refusal {}",
            p.attempts,
            p.accepted,
            p.accepted_per_sec,
            p.first_refusal_ms
                .map_or_else(|| "never".to_owned(), |ms| format!("after {ms} ms")),
        );
        if !p.errors.is_empty() {
            eprintln!("answers by error code: {:?}", p.errors);
        }
        if let Some(ms) = p.max_retry_after_ms {
            eprintln!("longest retry_after_ms: {ms}");
        }
        if !p.closes.is_empty() || p.reconnects > 0 {
            eprintln!(
                "closed by the server: {:?}  reconnects {} (new guests instead of waiting: {})",
                p.closes, p.reconnects, p.fresh_guests
            );
        }
        if p.failures > 0 {
            eprintln!(
                "unanswered: {} (first: {})",
                p.failures,
                p.first_failure.as_deref().unwrap_or("?")
            );
        }
        if let (Some(created), Some(checked), Some(exist)) =
            (p.rooms_created, p.rooms_checked, p.rooms_still_exist)
        {
            eprintln!(
                "rooms created {created}; after their creators left, {exist} of {checked} checked still exist"
            );
        }
        if let (Some(planted), Some(hits), Some(expected)) = (p.planted, p.hits, p.expected_hits) {
            eprintln!("hits {hits} (planted rooms {planted}; {expected:.6} expected by chance)");
        }
        if let (Some(live), Some(mean)) = (p.live_rooms, p.mean_seconds_to_first_hit) {
            eprintln!(
                "at this rate, with {live} live rooms, a first hit comes after {mean:.0} s on average"
            );
        }
        if let Some(d) = p.redis {
            eprintln!(
                "redis used_memory {} → {} bytes ({:+}), keys {} → {} ({:+})",
                d.before.used_memory,
                d.after.used_memory,
                d.after.used_memory as i64 - d.before.used_memory as i64,
                d.before.keys,
                d.after.keys,
                d.after.keys as i64 - d.before.keys as i64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guess_looked_up_is_accepted_but_a_limited_one_is_a_refusal() {
        let mut t = Tally::default();
        t.refused(
            Phase::CodeGuess,
            "not_found",
            Duration::from_millis(5),
            None,
        );
        t.refused(
            Phase::CodeGuess,
            "forbidden",
            Duration::from_millis(6),
            None,
        );
        assert_eq!((t.accepted, t.first_refusal), (2, None));
        let wait = Some(Duration::from_secs(59));
        t.refused(
            Phase::CodeGuess,
            "rate_limited",
            Duration::from_millis(40),
            wait,
        );
        let short = Some(Duration::from_millis(50));
        t.refused(
            Phase::CodeGuess,
            "rate_limited",
            Duration::from_millis(30),
            short,
        );
        assert_eq!((t.accepted, t.max_retry_after), (2, wait));
        assert_eq!(t.first_refusal, Some(Duration::from_millis(30)));
        assert_eq!(t.errors["rate_limited"], 2);

        let mut f = Tally::default();
        f.refused(
            Phase::CreateFlood,
            "not_found",
            Duration::from_millis(50),
            None,
        );
        assert_eq!(
            (f.accepted, f.first_refusal),
            (0, Some(Duration::from_millis(50)))
        );
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally {
            attempts: 3,
            accepted: 2,
            first_refusal: Some(Duration::from_millis(90)),
            created: vec!["r1".into()],
            ..Tally::default()
        };
        a.closed(Some(4008));
        a.failed("first".into());
        let mut b = Tally {
            attempts: 4,
            accepted: 1,
            first_refusal: Some(Duration::from_millis(20)),
            created: vec!["r2".into()],
            hits: 1,
            reconnects: 1,
            fresh_guests: 1,
            ..Tally::default()
        };
        b.closed(Some(4008));
        b.closed(None);
        b.failed("second".into());
        let wait = Some(Duration::from_millis(250));
        b.refused(
            Phase::CreateFlood,
            "rate_limited",
            Duration::from_millis(25),
            wait,
        );
        a.merge(b);
        assert_eq!((a.attempts, a.accepted, a.reconnects), (7, 3, 1));
        assert_eq!((a.fresh_guests, a.max_retry_after), (1, wait));
        assert_eq!(a.first_refusal, Some(Duration::from_millis(20)));
        assert_eq!(a.closes["4008"], 2);
        assert_eq!(a.closes["none"], 1);
        assert_eq!(a.created, ["r1", "r2"]);
        assert_eq!(a.hits, 1);
        assert_eq!((a.failures, a.first_failure.as_deref()), (2, Some("first")));
        assert_eq!(a.errors["rate_limited"], 1);

        let r = PhaseReport::new(Phase::CreateFlood, 2, 2.0, &a, None);
        assert_eq!((r.phase, r.attempts, r.accepted), ("create_flood", 7, 3));
        assert_eq!((r.accepted_per_sec, r.first_refusal_ms), (1.5, Some(20)));
        assert_eq!((r.fresh_guests, r.max_retry_after_ms), (1, Some(250)));
    }

    #[test]
    fn code_odds() {
        // 29 characters, 6 of them.
        assert_eq!(code_space(), 594_823_321.0);
        assert!((expected_hits(594_823_321, 3) - 3.0).abs() < 1e-9);
        // The probe: ~704 guesses/s against ~3,800 rooms → a few minutes.
        let mean = mean_seconds_to_first_hit(704.0, 3800).expect("some");
        assert!((200.0..250.0).contains(&mean), "{mean}");
        assert_eq!(mean_seconds_to_first_hit(0.0, 3800), None);
    }

    #[test]
    fn only_loopback_targets() {
        for ok in [
            "ws://127.0.0.1:8080/ws",
            "ws://localhost:1/ws",
            "ws://[::1]:80/ws",
            "redis://127.0.0.1:6379",
            "redis://:pw@127.0.0.2:7000/0",
            "wss://LOCALHOST/ws",
        ] {
            assert!(is_loopback(ok), "{ok}");
        }
        for bad in [
            "ws://10.0.0.1:8080/ws",
            "ws://example.com/ws",
            "redis://user@192.168.1.1:6379",
            "ws://127.0.0.1.example.com/ws",
            "ws://[2001:db8::1]:80/ws",
            "",
        ] {
            assert!(!is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn redis_info_and_sampling() {
        let info = "# Memory\r\nused_memory:2048000\r\nused_memory_human:1.95M\r\n";
        assert_eq!(used_memory(info), Some(2_048_000));
        assert_eq!(used_memory("# Memory\r\n"), None);
        let all: Vec<u32> = (0..10).collect();
        assert_eq!(sample(&all, 20), all);
        assert_eq!(sample(&all, 5), [0, 2, 4, 6, 8]);
    }
}
