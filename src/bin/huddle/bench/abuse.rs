//! `abuse`: repeats the two attacks of the abuse probe (issue 15) against
//! nodes on this machine and reports what got through, whatever limits the
//! nodes apply.
//!
//! 1. Room-creation flood: `--connections` guests each create private
//!    rooms as fast as the answers come and leave each at once; afterwards
//!    a sample of the rooms is asked about (`room.get`: `forbidden` means
//!    the room still exists, `not_found` that it is gone).
//! 2. Code guessing: first `--plant` real private rooms are created (their
//!    creators stay until the end), then `--connections` guests send
//!    `room.join` with random codes drawn from the server's own join-code
//!    alphabet and length (`huddle::service::rooms`), counting the hits.
//!
//! The clients behave like a determined attacker, not a polite one: after
//! `rate_limited` with a short `retry_after_ms` (the per-connection rate)
//! they wait it out; after a long one (a per-user limit) they drop the guest
//! and reconnect as a new one, unless `--patient` (then they wait), or
//! unless the new guest was refused at once as well (a per-address limit:
//! they wait); after the server closes a connection they open a new one. Every
//! run is bounded: loopback targets only, at most `MAX_CONNECTIONS`
//! connections, `MAX_DURATION` per phase and `MAX_ATTEMPTS` requests per
//! phase. With `--redis-url`, Redis `used_memory` and `DBSIZE` are read
//! before and after each phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use huddle::service::rooms::{new_code, normalize_code};
use serde_json::json;
use tokio::time::Instant;

use super::abuse_report::{
    AbuseReport, CODE_LEN, Phase, PhaseReport, RedisDelta, RedisSize, Tally, expected_hits,
    is_loopback, mean_seconds_to_first_hit, sample, used_memory,
};
use super::client::{Answer, Session};
use crate::cli::BenchArgs;

/// Connections per phase, at most.
const MAX_CONNECTIONS: usize = 200;
/// Length of a phase, at most.
const MAX_DURATION: Duration = Duration::from_secs(300);
/// Requests per phase, at most.
const MAX_ATTEMPTS: u64 = 500_000;
/// Rooms planted for the guessing, at most.
const MAX_PLANT: usize = 1000;
/// Rooms one planting guest creates: below the 30 per minute a user may.
const PER_PLANTER: usize = 25;
/// Flooded rooms asked about after the flood, at most.
const CHECK_MAX: usize = 1000;
/// Connections asking about them.
const CHECKERS: usize = 10;
/// Time allowed for asking.
const CHECK_TIME: Duration = Duration::from_secs(30);
/// A `retry_after_ms` above this is a per-user limit worth evading.
const FRESH_GUEST_AFTER: Duration = Duration::from_secs(1);
/// Connections used by default.
const DEFAULT_CONNECTIONS: usize = 10;

/// What an attacker does after a refusal.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Send the next request at once.
    Go,
    /// Wait this long first.
    Wait(Duration),
    /// Drop this guest and carry on as a new one.
    NewGuest,
}

/// The attacker's choice after a refusal that said `retry_after`: a long
/// wait is evaded with a new guest, unless `patient`, or unless this guest
/// is already a replacement that got nothing through (`renewed`: the limit
/// is not per user, so a new guest would not help).
fn after_refusal(retry_after: Option<Duration>, patient: bool, renewed: bool) -> Next {
    match retry_after {
        None => Next::Go,
        Some(wait) if wait > FRESH_GUEST_AFTER && !patient && !renewed => Next::NewGuest,
        Some(wait) => Next::Wait(wait),
    }
}

/// Runs both phases.
pub(super) async fn abuse(args: &BenchArgs) -> Result<AbuseReport, String> {
    let connections = args.connections.unwrap_or(DEFAULT_CONNECTIONS);
    validate(args, connections)?;
    let redis = match &args.redis_url {
        Some(url) => Some(redis::Client::open(url.as_str()).map_err(|e| format!("{url}: {e}"))?),
        None => None,
    };
    let duration = args.duration;

    eprintln!("bench abuse: planting {} private rooms", args.plant);
    let (mut planters, planted) = plant(&args.url, args.plant).await?;

    eprintln!("bench abuse: phase 1, room-creation flood, {connections} connections, {duration:?}");
    let (flood, mut create_flood) =
        measured_phase(Phase::CreateFlood, args, connections, redis.as_ref()).await?;
    let checked = sample(&flood.created, CHECK_MAX);
    eprintln!(
        "bench abuse: {} rooms created; asking about {}",
        flood.created.len(),
        checked.len()
    );
    let (asked, exist) = still_existing(&args.url, &checked).await;
    create_flood.rooms_created = Some(flood.created.len() as u64);
    create_flood.rooms_checked = Some(asked);
    create_flood.rooms_still_exist = Some(exist);

    eprintln!("bench abuse: phase 2, code guessing, {connections} connections, {duration:?}");
    let (guess, mut code_guess) =
        measured_phase(Phase::CodeGuess, args, connections, redis.as_ref()).await?;
    // Live rooms while guessing: the planted ones and the flood's survivors.
    let survivors = (flood.created.len() as u64 * exist)
        .checked_div(asked)
        .unwrap_or(0);
    code_guess.planted = Some(planted);
    code_guess.hits = Some(guess.hits);
    code_guess.expected_hits = Some(expected_hits(guess.accepted, planted as u64 + survivors));
    code_guess.live_rooms = Some(args.live_rooms);
    code_guess.mean_seconds_to_first_hit =
        mean_seconds_to_first_hit(code_guess.accepted_per_sec, args.live_rooms);

    for p in &mut planters {
        p.close().await;
    }
    Ok(AbuseReport {
        mode: "abuse",
        nodes: args.url.len(),
        create_flood,
        code_guess,
    })
}

/// Refuses runs that are not bounded or not local.
fn validate(args: &BenchArgs, connections: usize) -> Result<(), String> {
    let remote = args
        .url
        .iter()
        .chain(&args.redis_url)
        .find(|u| !is_loopback(u));
    if let Some(url) = remote {
        return Err(format!(
            "abuse runs against this machine only; {url} is not loopback"
        ));
    }
    if !(1..=MAX_CONNECTIONS).contains(&connections) {
        return Err(format!(
            "--connections must be 1 to {MAX_CONNECTIONS} for abuse"
        ));
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        return Err(format!(
            "--duration must be above 0 and at most {MAX_DURATION:?} for abuse"
        ));
    }
    if args.plant > MAX_PLANT {
        return Err(format!("--plant must be at most {MAX_PLANT}"));
    }
    Ok(())
}

/// Creates `count` private rooms from guests that stay connected (so the
/// rooms live on), `PER_PLANTER` each; returns the guests and how many
/// rooms were made.
async fn plant(urls: &[String], count: usize) -> Result<(Vec<Session>, usize), String> {
    let mut planters = Vec::new();
    let mut planted = 0;
    for p in 0..count.div_ceil(PER_PLANTER) {
        let mut s = Session::new(&urls[p % urls.len()], &format!("abuse-planter-{p}"));
        while planted < count && planted < (p + 1) * PER_PLANTER {
            let req = json!({"type": "room.create", "name": format!("planted {planted}"),
                "private": true, "max_participants": 50});
            match s.ask(req).await? {
                Answer::Ok(_) => planted += 1,
                Answer::Refused { code, .. } => {
                    eprintln!("bench abuse: planting refused ({code}); {planted} planted");
                    break;
                }
                Answer::Closed(code) => {
                    return Err(format!("a planting connection was closed ({code:?})"));
                }
            }
        }
        planters.push(s);
    }
    Ok((planters, planted))
}

/// Runs one phase between two readings of Redis (when given): what the
/// workers saw, and the phase's common figures.
async fn measured_phase(
    phase: Phase,
    args: &BenchArgs,
    connections: usize,
    redis: Option<&redis::Client>,
) -> Result<(Tally, PhaseReport), String> {
    let before = redis_size(redis).await?;
    let began = Instant::now();
    let tally = run_phase(phase, args, connections).await;
    let seconds = began.elapsed().as_secs_f64();
    let after = redis_size(redis).await?;
    let redis = before
        .zip(after)
        .map(|(before, after)| RedisDelta { before, after });
    let report = PhaseReport::new(phase, connections, seconds, &tally, redis);
    Ok((tally, report))
}

/// Runs one phase on `connections` guests for `--duration`.
async fn run_phase(phase: Phase, args: &BenchArgs, connections: usize) -> Tally {
    let urls = &args.url;
    let start = Instant::now();
    let until = start + args.duration;
    let patient = args.patient;
    let budget = Arc::new(AtomicU64::new(MAX_ATTEMPTS));
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let session = Session::new(
            &urls[i % urls.len()],
            &format!("abuse-{}-{i}", phase.name()),
        );
        let budget = budget.clone();
        let run = Run {
            start,
            until,
            budget,
            patient,
        };
        tasks.push(tokio::spawn(worker(phase, session, i, run)));
    }
    let mut total = Tally::default();
    for t in tasks {
        match t.await {
            Ok(tally) => total.merge(tally),
            Err(e) => total.failed(format!("worker failed: {e}")),
        }
    }
    total
}

/// What every worker of a phase shares.
struct Run {
    /// When the phase began: refusal times count from here.
    start: Instant,
    /// When it ends.
    until: Instant,
    /// Requests left to the whole phase (`MAX_ATTEMPTS` at first).
    budget: Arc<AtomicU64>,
    /// `--patient`: wait out every `retry_after_ms`, never a new guest.
    patient: bool,
}

/// One attacking guest: creates (and leaves) rooms, or guesses codes,
/// until the phase ends or the shared request budget is spent.
async fn worker(phase: Phase, mut s: Session, index: usize, run: Run) -> Tally {
    let Run {
        start,
        until,
        budget,
        patient,
    } = run;
    let mut t = Tally::default();
    // Set when this guest replaced one that was limited, until the new one
    // gets something through: a limit it meets as well is not per user.
    let mut renewed = false;
    while Instant::now() < until
        && budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    {
        t.attempts += 1;
        let guess = match phase {
            Phase::CreateFlood => None,
            Phase::CodeGuess => normalize_code(&new_code(CODE_LEN as usize)),
        };
        let req = match &guess {
            None => json!({"type": "room.create", "name": format!("abuse {index}-{}", t.attempts),
                "private": true, "max_participants": 2}),
            Some(code) => json!({"type": "room.join", "code": code}),
        };
        match s.ask(req).await {
            Ok(Answer::Ok(data)) => {
                t.accepted += 1;
                renewed = false;
                let room = data["room"]["id"].as_str().unwrap_or_default().to_owned();
                if guess.is_some() {
                    t.hits += 1;
                } else {
                    t.created.push(room.clone());
                }
                leave(&mut s, &room, until).await;
            }
            Ok(Answer::Refused {
                code, retry_after, ..
            }) => {
                t.refused(phase, &code, start.elapsed(), retry_after);
                if phase.is_checked(&code) {
                    renewed = false;
                }
                match after_refusal(retry_after, patient, renewed) {
                    Next::Go => {}
                    Next::Wait(wait) => {
                        tokio::time::sleep_until(until.min(Instant::now() + wait)).await;
                    }
                    Next::NewGuest => {
                        s.close().await;
                        t.fresh_guests += 1;
                        renewed = true;
                    }
                }
            }
            Ok(Answer::Closed(code)) => t.closed(code),
            Err(e) => {
                t.failed(e);
                // A node that does not answer is not hammered in a loop.
                tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(200)))
                    .await;
            }
        }
    }
    s.close().await;
    t.reconnects = s.reconnects;
    t
}

/// Leaves `room`, waiting once if the leave itself is rate limited (a room
/// left joined would not show what leaving leaves behind).
async fn leave(s: &mut Session, room: &str, until: Instant) {
    for _ in 0..2 {
        match s.ask(json!({"type": "room.leave", "room": room})).await {
            Ok(Answer::Refused {
                retry_after: Some(wait),
                ..
            }) => tokio::time::sleep_until(until.min(Instant::now() + wait)).await,
            _ => return,
        }
    }
}

/// Asks about each of `rooms` with `room.get` from fresh guests: returns
/// how many got an answer and how many of those still exist.
async fn still_existing(urls: &[String], rooms: &[String]) -> (u64, u64) {
    let until = Instant::now() + CHECK_TIME;
    let checkers = CHECKERS.min(rooms.len());
    let mut tasks = Vec::with_capacity(checkers);
    for c in 0..checkers {
        let mine: Vec<String> = rooms.iter().skip(c).step_by(checkers).cloned().collect();
        let mut s = Session::new(&urls[c % urls.len()], &format!("abuse-check-{c}"));
        tasks.push(tokio::spawn(async move {
            let (mut asked, mut exist) = (0u64, 0u64);
            for room in mine {
                while Instant::now() < until {
                    match s.ask(json!({"type": "room.get", "room": room})).await {
                        Ok(Answer::Ok(_)) => exist += 1,
                        Ok(Answer::Refused { code, .. }) if code == "forbidden" => exist += 1,
                        Ok(Answer::Refused {
                            retry_after: Some(wait),
                            ..
                        }) => {
                            tokio::time::sleep_until(until.min(Instant::now() + wait)).await;
                            continue;
                        }
                        Ok(Answer::Refused { code, .. }) if code != "not_found" => break,
                        Ok(Answer::Refused { .. }) => {}
                        Ok(Answer::Closed(_)) => continue,
                        Err(_) => break,
                    }
                    asked += 1;
                    break;
                }
            }
            s.close().await;
            (asked, exist)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        if let Ok((asked, exist)) = t.await {
            total.0 += asked;
            total.1 += exist;
        }
    }
    total
}

/// Redis's size now, when a Redis was given.
async fn redis_size(client: Option<&redis::Client>) -> Result<Option<RedisSize>, String> {
    let Some(client) = client else {
        return Ok(None);
    };
    let fail = |e: redis::RedisError| format!("redis: {e}");
    let mut con = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "redis: connect timed out".to_string())?
    .map_err(fail)?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut con)
        .await
        .map_err(fail)?;
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut con)
        .await
        .map_err(fail)?;
    let used_memory = used_memory(&info).ok_or("redis: INFO memory has no used_memory")?;
    Ok(Some(RedisSize { used_memory, keys }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_wait_is_evaded_once_with_a_new_guest() {
        let short = Duration::from_millis(50);
        let long = Duration::from_secs(42);
        assert_eq!(after_refusal(None, false, false), Next::Go);
        assert_eq!(after_refusal(Some(short), false, false), Next::Wait(short));
        assert_eq!(after_refusal(Some(long), false, false), Next::NewGuest);
        assert_eq!(
            after_refusal(Some(long), false, true),
            Next::Wait(long),
            "per address"
        );
        assert_eq!(
            after_refusal(Some(long), true, false),
            Next::Wait(long),
            "--patient"
        );
    }
}
