//! The report of `storm`: what the run measured against the issue-13
//! target (every dropped client back and resumed within 10 s of the kill,
//! no durable message lost, no join or leave announced), as one JSON line
//! and a human summary.

use std::collections::BTreeMap;

use serde::Serialize;

use super::storm_client::Announcements;
use super::storm_worker::Stats;

/// The target: every dropped client back within this, ms.
const TARGET_MS: u64 = 10_000;

/// What the senders did.
#[derive(Debug, Default)]
pub(super) struct SenderStats {
    /// Messages sent.
    pub(super) sent: u64,
    /// Of those, acknowledged `ok`.
    pub(super) acked: u64,
    /// Refusals by code, and broken sender connections.
    pub(super) errors: BTreeMap<String, u64>,
}

impl SenderStats {
    pub(super) fn merge(&mut self, other: SenderStats) {
        self.sent += other.sent;
        self.acked += other.acked;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// Percentiles of the resume times, ms.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub(super) struct Percentiles {
    pub(super) min: u64,
    pub(super) p50: u64,
    pub(super) p90: u64,
    pub(super) p99: u64,
    pub(super) max: u64,
}

/// The nearest-rank percentiles of `values` (all 0 when empty).
pub(super) fn percentiles(values: &[u64]) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles {
        min: v[0],
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

/// What the run measured besides the clients' totals.
pub(super) struct Run {
    /// Node URLs.
    pub(super) nodes: usize,
    /// Rooms.
    pub(super) rooms: usize,
    /// Client processes.
    pub(super) workers: usize,
    /// Clients asked for.
    pub(super) clients: usize,
    /// From the first worker's start until every client had joined.
    pub(super) join_seconds: f64,
    /// From the kill until the final check was in.
    pub(super) seconds_after_kill: f64,
    /// CPU seconds of each `--server-pid` still alive, from the kill to the
    /// end, by PID.
    pub(super) server_cpu_by_pid: BTreeMap<String, f64>,
    /// Resident memory of each `--server-pid` still alive at the end.
    pub(super) server_rss_by_pid: BTreeMap<String, u64>,
}

/// What a storm measured; printed as one JSON line.
#[derive(Debug, Serialize)]
pub(super) struct StormReport {
    /// `storm`.
    pub(super) mode: &'static str,
    /// Node URLs (the victim included).
    pub(super) nodes: usize,
    /// Rooms.
    pub(super) rooms: usize,
    /// Client processes.
    pub(super) workers: usize,
    /// Clients asked for.
    pub(super) clients: usize,
    /// Clients that joined.
    pub(super) joined: usize,
    /// Failed tries of first joins, by reason (a client tries 4 times).
    pub(super) join_failures: BTreeMap<String, u64>,
    /// Time to join them all, seconds.
    pub(super) join_seconds: f64,
    /// Clients on the victim when it was killed.
    pub(super) victim_clients: usize,
    /// Dropped clients back and resumed by the end.
    pub(super) resumed: usize,
    /// Of those, within 10 s of the kill.
    pub(super) resumed_within_10s: usize,
    /// Dropped clients never back.
    pub(super) not_resumed: usize,
    /// Kill → resume answered, ms.
    pub(super) resume_ms: Percentiles,
    /// Clients of surviving nodes that were dropped too.
    pub(super) unexpected_drops: usize,
    /// Reconnection tries.
    pub(super) reconnect_attempts: u64,
    /// Failed tries, by reason.
    pub(super) reconnect_failures: BTreeMap<String, u64>,
    /// Resumes answered `complete: false` (then paged with history).
    pub(super) incomplete_resumes: u64,
    /// History pages fetched after them.
    pub(super) history_pages: u64,
    /// Messages the senders sent.
    pub(super) sent: u64,
    /// Of those, acknowledged.
    pub(super) acked: u64,
    /// Sender refusals and failures.
    pub(super) send_errors: BTreeMap<String, u64>,
    /// Clients that made the final check.
    pub(super) verified: usize,
    /// Why others could not.
    pub(super) verify_failures: BTreeMap<String, u64>,
    /// Durable seqs a client never got, summed over the clients.
    pub(super) messages_lost: u64,
    /// Clients missing at least one.
    pub(super) clients_with_loss: usize,
    /// Seqs a client got twice, summed.
    pub(super) duplicates: u64,
    /// Join/leave announcements seen by the survivors' clients after the
    /// kill.
    pub(super) announcements: Announcements,
    /// Seconds from the kill to the end of the final check.
    pub(super) seconds_after_kill: f64,
    /// See [`Run::server_cpu_by_pid`].
    pub(super) server_cpu_by_pid: BTreeMap<String, f64>,
    /// See [`Run::server_rss_by_pid`].
    pub(super) server_rss_by_pid: BTreeMap<String, u64>,
    /// Whether the issue-13 target was met: everyone joined, every victim
    /// client back within 10 s, nothing lost or repeated, nothing
    /// announced, every client checked.
    pub(super) target_met: bool,
}

impl StormReport {
    pub(super) fn new(run: Run, stats: Stats, senders: SenderStats) -> StormReport {
        let within = stats
            .resume_ms
            .iter()
            .filter(|ms| **ms <= TARGET_MS)
            .count();
        let target_met = stats.clients == run.clients
            && within == stats.victims
            && stats.not_resumed == 0
            && stats.unexpected_drops == 0
            && stats.lost == 0
            && stats.duplicates == 0
            && stats.announcements.total() == 0
            && stats.verified == stats.clients;
        StormReport {
            mode: "storm",
            nodes: run.nodes,
            rooms: run.rooms,
            workers: run.workers,
            clients: run.clients,
            joined: stats.clients,
            join_failures: stats.join_failures,
            join_seconds: run.join_seconds,
            victim_clients: stats.victims,
            resumed: stats.resume_ms.len(),
            resumed_within_10s: within,
            not_resumed: stats.not_resumed,
            resume_ms: percentiles(&stats.resume_ms),
            unexpected_drops: stats.unexpected_drops,
            reconnect_attempts: stats.attempts,
            reconnect_failures: stats.failures,
            incomplete_resumes: stats.incomplete_resumes,
            history_pages: stats.history_pages,
            sent: senders.sent,
            acked: senders.acked,
            send_errors: senders.errors,
            verified: stats.verified,
            verify_failures: stats.verify_failures,
            messages_lost: stats.lost,
            clients_with_loss: stats.clients_with_loss,
            duplicates: stats.duplicates,
            announcements: stats.announcements,
            seconds_after_kill: run.seconds_after_kill,
            server_cpu_by_pid: run.server_cpu_by_pid,
            server_rss_by_pid: run.server_rss_by_pid,
            target_met,
        }
    }
}

pub(super) fn print_summary(r: &StormReport) {
    eprintln!(
        "== huddle bench storm ({} node URL(s), {} clients in {} rooms, {} worker(s)) ==",
        r.nodes, r.clients, r.rooms, r.workers
    );
    eprintln!(
        "joined {} in {:.1} s   failed tries {:?}",
        r.joined, r.join_seconds, r.join_failures
    );
    let l = &r.resume_ms;
    eprintln!(
        "victim clients {}: back and resumed {} ({} within 10 s), never back {}",
        r.victim_clients, r.resumed, r.resumed_within_10s, r.not_resumed
    );
    eprintln!(
        "kill → resumed ms: min {}  p50 {}  p90 {}  p99 {}  max {}",
        l.min, l.p50, l.p90, l.p99, l.max
    );
    eprintln!(
        "reconnection tries {}  failed {:?}  survivors' clients dropped {}",
        r.reconnect_attempts, r.reconnect_failures, r.unexpected_drops
    );
    eprintln!(
        "incomplete resumes {} (history pages {})",
        r.incomplete_resumes, r.history_pages
    );
    eprintln!(
        "sent {}  acked {}  errors {:?}",
        r.sent, r.acked, r.send_errors
    );
    eprintln!(
        "checked {} clients: messages lost {} ({} clients)  duplicates {}  check failures {:?}",
        r.verified, r.messages_lost, r.clients_with_loss, r.duplicates, r.verify_failures
    );
    let a = &r.announcements;
    eprintln!(
        "announcements after the kill: participant.joined {}  participant.left {}  participants.changed {}  system messages {}  users named {}",
        a.participant_joined,
        a.participant_left,
        a.participants_changed,
        a.system_messages,
        a.users.len()
    );
    if !r.server_cpu_by_pid.is_empty() {
        let each: Vec<String> = r
            .server_cpu_by_pid
            .iter()
            .map(|(pid, s)| format!("{pid}: {s:.2} s"))
            .collect();
        eprintln!(
            "server CPU over {:.1} s from the kill: {}",
            r.seconds_after_kill,
            each.join(", ")
        );
    }
    if !r.server_rss_by_pid.is_empty() {
        let each: Vec<String> = r
            .server_rss_by_pid
            .iter()
            .map(|(pid, b)| format!("{pid}: {:.0} MiB", *b as f64 / 1048576.0))
            .collect();
        eprintln!("server RSS at the end: {}", each.join(", "));
    }
    eprintln!(
        "issue-13 target (all back within 10 s, 0 lost, 0 announcements): {}",
        if r.target_met { "met" } else { "NOT met" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentiles(&[]), Percentiles::default());
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(
            percentiles(&v),
            Percentiles {
                min: 1,
                p50: 50,
                p90: 90,
                p99: 99,
                max: 100
            }
        );
        assert_eq!(percentiles(&[7]).p50, 7);
    }

    fn run(clients: usize) -> Run {
        Run {
            nodes: 3,
            rooms: 1,
            workers: 1,
            clients,
            join_seconds: 1.0,
            seconds_after_kill: 5.0,
            server_cpu_by_pid: BTreeMap::new(),
            server_rss_by_pid: BTreeMap::new(),
        }
    }

    #[test]
    fn the_target_needs_everyone_back_in_time_and_nothing_lost_or_announced() {
        let good = || Stats {
            clients: 4,
            victims: 2,
            resume_ms: vec![900, 10_000],
            verified: 4,
            ..Stats::default()
        };
        let r = StormReport::new(run(4), good(), SenderStats::default());
        assert!(r.target_met, "{r:?}");
        assert_eq!((r.resumed, r.resumed_within_10s), (2, 2));

        let late = Stats {
            resume_ms: vec![900, 10_001],
            ..good()
        };
        assert!(!StormReport::new(run(4), late, SenderStats::default()).target_met);
        let lost = Stats { lost: 1, ..good() };
        assert!(!StormReport::new(run(4), lost, SenderStats::default()).target_met);
        let mut announced = good();
        announced.announcements.participant_left = 1;
        assert!(!StormReport::new(run(4), announced, SenderStats::default()).target_met);
        assert!(
            !StormReport::new(run(5), good(), SenderStats::default()).target_met,
            "a client did not join"
        );
    }
}
