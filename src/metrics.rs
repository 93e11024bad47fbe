//! Prometheus metrics, `huddle_*`, rendered by `GET /metrics`.
//!
//! One `Metrics` per node, created by the composition root and shared as an
//! `Arc`; no global registry. Label values are static strings, so recording
//! never allocates after the first use of a label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ErrorCode;

/// Label: a request verb or frame kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The `type` (request verb, or `reply`/`event`/`error`).
    pub r#type: &'static str,
}

/// Label: an error code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Protocol error code.
    pub code: &'static str,
}

/// Label: a Redis operation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// Store or bus operation name.
    pub op: &'static str,
}

/// Label: an abuse limit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// `room_create_user`, `room_create_address`, `code_miss_user`,
    /// `code_miss_address`, `hello_timeout`.
    pub limit: &'static str,
}

/// Label: a moderation action (`store::Action::as_str`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `update`, `role`, `kick`, `ban`, `unban`, `mute`, `unmute`, `close`.
    pub action: &'static str,
}

/// Label: a pool connection state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `busy` or `idle`.
    pub state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~3.3 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_total: Counter,
    /// Client frames received, by request type.
    pub frames_in: Family<TypeLabel, Counter>,
    /// Frames sent, by kind.
    pub frames_out: Family<TypeLabel, Counter>,
    /// Error replies, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Messages accepted by `message.send`.
    pub messages_sent: Counter,
    /// Event frames queued to local connections.
    pub events_delivered: Counter,
    /// Seconds from publish to local delivery.
    pub fanout_latency: Histogram,
    /// Seconds per Redis round trip, by operation.
    pub redis_latency_seconds: Family<OpLabel, Histogram, fn() -> Histogram>,
    /// Redis round trips that failed (timed out, refused, dropped), by
    /// operation; a failed try that a retry then mended counts too.
    pub redis_errors: Family<OpLabel, Counter>,
    /// Pool connections by state (set when scraped).
    pub redis_pool: Family<StateLabel, Gauge>,
    /// Room channels this node is subscribed to.
    pub pubsub_channels: Gauge,
    /// User channels this node is subscribed to (one per user with a
    /// connection here).
    pub pubsub_user_channels: Gauge,
    /// Pub/sub reconnections.
    pub pubsub_reconnects: Counter,
    /// Gap repairs run (seq jump or reconnect).
    pub gap_repairs: Counter,
    /// Durable writes refused as `unavailable` because too few replicas
    /// confirmed them in time (`--redis-replica-acks`).
    pub redis_unconfirmed: Counter,
    /// Room channels resubscribed after the pub/sub side lost them (a
    /// reconnect, a failover, a slot moved to another master).
    pub pubsub_resubscribes: Counter,
    /// Events delivered by gap repair.
    pub events_repaired: Counter,
    /// Requests refused with `rate_limited`.
    pub rate_limited: Counter,
    /// Refusals and closes by abuse limit.
    pub limited: Family<LimitLabel, Counter>,
    /// Connections closed because their outbound queue was full.
    pub slow_consumers: Counter,
    /// 1 while the node drains.
    pub draining: Gauge,
    /// Requests waiting for their turn (`--max-inflight-requests`).
    pub requests_waiting: Gauge,
    /// Circuit breaker: 0 closed, 1 open, 2 half-open (set when scraped).
    pub breaker_state: Gauge,
    /// Moderation actions carried out, by action (protocol 1.1).
    pub moderation_actions: Family<ActionLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("huddle");
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            errors: Family::default(),
            messages_sent: Counter::default(),
            events_delivered: Counter::default(),
            fanout_latency: latency_histogram(),
            redis_latency_seconds: Family::new_with_constructor(latency_histogram),
            redis_errors: Family::default(),
            redis_pool: Family::default(),
            pubsub_channels: Gauge::default(),
            pubsub_user_channels: Gauge::default(),
            pubsub_reconnects: Counter::default(),
            gap_repairs: Counter::default(),
            redis_unconfirmed: Counter::default(),
            pubsub_resubscribes: Counter::default(),
            events_repaired: Counter::default(),
            rate_limited: Counter::default(),
            limited: Family::default(),
            slow_consumers: Counter::default(),
            draining: Gauge::default(),
            requests_waiting: Gauge::default(),
            breaker_state: Gauge::default(),
            moderation_actions: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted since start",
            m.connections_total.clone(),
        );
        registry.register(
            "frames_in",
            "Client frames received by type",
            m.frames_in.clone(),
        );
        registry.register("frames_out", "Frames sent by kind", m.frames_out.clone());
        registry.register("errors", "Error replies by code", m.errors.clone());
        registry.register(
            "messages_sent",
            "Messages accepted",
            m.messages_sent.clone(),
        );
        registry.register(
            "events_delivered",
            "Event frames queued to local connections",
            m.events_delivered.clone(),
        );
        registry.register(
            "fanout_latency_seconds",
            "Seconds from publish to local delivery",
            m.fanout_latency.clone(),
        );
        registry.register(
            "redis_command_seconds",
            "Seconds per Redis round trip by operation",
            m.redis_latency_seconds.clone(),
        );
        registry.register(
            "redis_command_errors",
            "Failed Redis round trips by operation, retried ones included",
            m.redis_errors.clone(),
        );
        registry.register(
            "redis_pool_connections",
            "Redis pool connections by state",
            m.redis_pool.clone(),
        );
        registry.register(
            "pubsub_channels",
            "Room channels subscribed by this node",
            m.pubsub_channels.clone(),
        );
        registry.register(
            "pubsub_user_channels",
            "User channels subscribed by this node (users with a connection here)",
            m.pubsub_user_channels.clone(),
        );
        registry.register(
            "pubsub_reconnects",
            "Pub/sub reconnections",
            m.pubsub_reconnects.clone(),
        );
        registry.register("gap_repairs", "Gap repairs run", m.gap_repairs.clone());
        registry.register(
            "redis_unconfirmed",
            "Durable writes answered unavailable: too few replicas confirmed them in time",
            m.redis_unconfirmed.clone(),
        );
        registry.register(
            "pubsub_resubscribes",
            "Room channels subscribed again after a reconnect, failover or slot move",
            m.pubsub_resubscribes.clone(),
        );
        registry.register(
            "events_repaired",
            "Events delivered by gap repair",
            m.events_repaired.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with rate_limited",
            m.rate_limited.clone(),
        );
        registry.register(
            "abuse_limited",
            "Requests refused and connections closed by an abuse limit, by limit",
            m.limited.clone(),
        );
        registry.register(
            "slow_consumers_closed",
            "Connections closed because their outbound queue was full",
            m.slow_consumers.clone(),
        );
        registry.register("draining", "1 while the node drains", m.draining.clone());
        registry.register(
            "requests_waiting",
            "Requests waiting for their turn (--max-inflight-requests)",
            m.requests_waiting.clone(),
        );
        registry.register(
            "breaker_state",
            "Store circuit breaker: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        registry.register(
            "moderation_actions",
            "Moderation actions carried out (room.update, member.*, room.close), by action",
            m.moderation_actions.clone(),
        );
        for code in ErrorCode::ALL {
            let _ = m.errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        Metrics { registry, ..m }
    }

    /// Records one Redis round trip.
    pub fn redis_latency(&self, op: &'static str, seconds: f64) {
        self.redis_latency_seconds
            .get_or_create(&OpLabel { op })
            .observe(seconds);
    }

    /// Counts a Redis round trip that failed. One that succeeded makes its
    /// operation's counter exist, at 0, so that its rate reads 0 rather
    /// than nothing before the first failure.
    pub fn redis_outcome(&self, op: &'static str, ok: bool) {
        let errors = self.redis_errors.get_or_create(&OpLabel { op });
        if !ok {
            errors.inc();
        }
    }

    /// Counts one refusal (or close) by the abuse limit `limit`.
    pub fn abuse_limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Counts one moderation action carried out.
    pub fn moderation(&self, action: &'static str) {
        self.moderation_actions
            .get_or_create(&ActionLabel { action })
            .inc();
    }

    /// Counts an error reply.
    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// Renders the OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_families() {
        let m = Metrics::new();
        m.connections.inc();
        m.error(ErrorCode::NotFound);
        m.redis_latency("ping", 0.001);
        m.redis_outcome("ping", true);
        m.redis_outcome("time", true);
        m.redis_outcome("time", false);
        let text = m.render();
        assert!(
            text.contains("huddle_redis_command_errors_total{op=\"ping\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("huddle_redis_command_errors_total{op=\"time\"} 1"),
            "{text}"
        );
        assert!(text.contains("huddle_connections 1"), "{text}");
        assert!(
            text.contains("huddle_errors_total{code=\"not_found\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("huddle_redis_command_seconds_count{op=\"ping\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
