//! The report of the traffic and connection modes: what one client saw
//! (`ClientStats`), what the run measured (`Report`, printed as one JSON
//! line) and the human summary.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What a run measured; printed as one JSON line.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    /// Mode.
    pub(super) mode: &'static str,
    /// Node URLs.
    pub(super) nodes: usize,
    /// Rooms × clients per room (or connections).
    pub(super) clients: usize,
    /// Measured seconds (sending phase).
    pub(super) seconds: f64,
    /// Messages sent.
    pub(super) sent: u64,
    /// Messages acknowledged `ok`.
    pub(super) acked: u64,
    /// Deliveries expected: acknowledged messages × clients in their room.
    pub(super) deliveries_expected: u64,
    /// Deliveries seen.
    pub(super) deliveries: u64,
    /// Events whose seq was not the next one (a repeat or a step back).
    pub(super) out_of_order: u64,
    /// Seqs skipped.
    pub(super) gaps: u64,
    /// Deliveries per second over the sending phase.
    pub(super) deliveries_per_sec: f64,
    /// Latency send → deliver, microseconds.
    pub(super) latency_us: Latency,
    /// Error replies by code.
    pub(super) errors: BTreeMap<String, u64>,
    /// CPU seconds of the `--server-pid` processes during the run.
    pub(super) server_cpu_seconds: Option<f64>,
    /// The same, per `--server-pid`, keyed by PID.
    pub(super) server_cpu_by_pid: BTreeMap<String, f64>,
    /// Deliveries per server CPU-second.
    pub(super) deliveries_per_server_cpu_sec: Option<f64>,
    /// `connections`: server RSS growth per connection, bytes.
    pub(super) rss_per_connection: Option<f64>,
    /// `connections`: connections that failed to open.
    pub(super) connect_failures: u64,
}

/// Latency percentiles.
#[derive(Debug, Default, Serialize)]
pub(super) struct Latency {
    /// Median.
    p50: u64,
    /// 90th percentile.
    p90: u64,
    /// 99th percentile.
    p99: u64,
    /// 99.9th percentile.
    p999: u64,
    /// Maximum.
    max: u64,
}

/// What one client saw.
pub(super) struct ClientStats {
    /// Send → deliver latency of the messages past the warm-up, µs.
    pub(super) latency: Histogram<u64>,
    /// Message events received.
    pub(super) deliveries: u64,
    /// Events whose seq was not above the last one seen.
    pub(super) out_of_order: u64,
    /// Seqs skipped.
    pub(super) gaps: u64,
    /// Messages this client sent.
    pub(super) sent: u64,
    /// Of those, acknowledged `ok`.
    pub(super) acked: u64,
    /// Error replies and frames by code.
    pub(super) errors: BTreeMap<String, u64>,
}

impl ClientStats {
    pub(super) fn new() -> ClientStats {
        ClientStats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3)
                    .unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
            }),
            deliveries: 0,
            out_of_order: 0,
            gaps: 0,
            sent: 0,
            acked: 0,
            errors: BTreeMap::new(),
        }
    }

    pub(super) fn merge(&mut self, other: ClientStats) {
        let _ = self.latency.add(&other.latency);
        self.deliveries += other.deliveries;
        self.out_of_order += other.out_of_order;
        self.gaps += other.gaps;
        self.sent += other.sent;
        self.acked += other.acked;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

pub(super) fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

pub(super) fn print_summary(r: &Report) {
    eprintln!(
        "== huddle bench {} ({} node URL(s), {} clients) ==",
        r.mode, r.nodes, r.clients
    );
    if r.mode == "connections" {
        eprintln!(
            "connections open: {}   failed: {}",
            r.clients, r.connect_failures
        );
        let l = &r.latency_us;
        eprintln!(
            "connect + hello + join µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let Some(b) = r.rss_per_connection {
            eprintln!(
                "server RSS per connection: {:.0} bytes ({:.2} KiB)",
                b,
                b / 1024.0
            );
        }
        return;
    }
    let pct = if r.deliveries_expected > 0 {
        100.0 * r.deliveries as f64 / r.deliveries_expected as f64
    } else {
        0.0
    };
    eprintln!(
        "sent {}  acked {}  deliveries {}/{} ({pct:.2} %)  out of order {}  gaps {}",
        r.sent, r.acked, r.deliveries, r.deliveries_expected, r.out_of_order, r.gaps
    );
    eprintln!(
        "deliveries/s {:.0} over {:.1} s",
        r.deliveries_per_sec, r.seconds
    );
    let l = &r.latency_us;
    eprintln!(
        "latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let (Some(cpu), Some(per)) = (r.server_cpu_seconds, r.deliveries_per_server_cpu_sec) {
        eprintln!("server CPU {cpu:.2} s → {per:.0} deliveries per server CPU-second");
        let each: Vec<String> = r
            .server_cpu_by_pid
            .iter()
            .map(|(pid, s)| format!("{pid}: {s:.2} s"))
            .collect();
        eprintln!("  by process: {}", each.join(", "));
    }
    if !r.errors.is_empty() {
        eprintln!("errors: {:?}", r.errors);
    }
}
