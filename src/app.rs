//! The composition root: builds every part of a node once from its
//! configuration and hands out cheap clones. No global state.
//!
//! The node's local fan-out (the gateway's hub) is handed in as the
//! `EventSink` the bus and the memory engine deliver to: the app knows the
//! sink, never the gateway.
//!
//! Without a Redis URL the node runs the memory engine (store and bus in
//! process, a single node). With one, it connects the Redis store (a bb8
//! pool) and the Redis bus (one pub/sub connection), and the node is one of
//! any number sharing that Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bus::{EventBus, MemoryBus, RedisBus, ShardedBus};
use crate::config::{Config, RedisBackend, RedisConnMode};
use crate::error::{BuildError, StoreError};
use crate::events::EventSink;
use crate::layout::Keys;
use crate::metrics::{Metrics, StateLabel};
use crate::service::{
    Janitor, JanitorSettings, LimitSettings, Limits, MessageService, ModerationService,
    ReadService, RoomService, RoomSettings, SessionService,
};
use crate::store::breaker::BreakerState;
use crate::store::redis::{ConnMode, RedisOptions, cluster_client};
use crate::store::{MemoryStore, RedisStore, Store, StoreSettings};

/// A node's parts. Cheap to clone.
#[derive(Clone)]
pub(crate) struct App {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    node_id: String,
    store: Arc<dyn Store>,
    /// Kept separately for pool statistics.
    redis: Option<RedisStore>,
    bus: Arc<dyn EventBus>,
    rooms: RoomService,
    messages: MessageService,
    /// Roles and moderation (protocol 1.1).
    moderation: ModerationService,
    /// Read-state rules.
    reads: ReadService,
    sessions: SessionService,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    connections: AtomicUsize,
    /// Stops background tasks (the pub/sub subscriber).
    stop: CancellationToken,
}

/// `GET /readyz`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Readiness {
    /// Whether the node should get new clients.
    pub(crate) ready: bool,
    /// This node.
    pub(crate) node: String,
    /// `memory` or `redis`.
    pub(crate) engine: &'static str,
    /// Each component.
    pub(crate) checks: Checks,
}

/// Components of readiness.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Checks {
    /// Store commands answer.
    pub(crate) store: Check,
    /// The circuit breaker around the store: `closed`, `open`, `half_open`.
    pub(crate) breaker: &'static str,
    /// The pub/sub connection is up.
    pub(crate) pubsub: Check,
    /// The node is draining (shutting down).
    pub(crate) draining: bool,
}

/// One component's state.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    /// Healthy.
    pub(crate) ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A claimed connection slot, released on drop.
pub(crate) struct ConnectionSlot {
    app: App,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.app.inner.connections.fetch_sub(1, Ordering::AcqRel);
        self.app.inner.metrics.connections.dec();
    }
}

impl App {
    /// Builds a node from its configuration. Received room events go to
    /// `sink` (the node's local fan-out); `metrics` is the node's registry.
    pub(crate) async fn build(
        config: Config,
        metrics: Arc<Metrics>,
        sink: Arc<dyn EventSink>,
    ) -> Result<App, BuildError> {
        let config = Arc::new(config);
        let node_id = config.resolved_node_id();
        let settings = StoreSettings {
            message_ttl: config.message_ttl,
            event_log_len: config.event_log_len,
            dedupe_ttl: Duration::from_secs(86_400),
            session_ttl: config.session_ttl,
        };
        let stop = CancellationToken::new();
        let (store, redis, bus): (Arc<dyn Store>, Option<RedisStore>, Arc<dyn EventBus>) =
            match config.redis_backend() {
                None => {
                    tracing::info!("no --redis: using the in-memory engine (single node only)");
                    let store = Arc::new(MemoryStore::new(settings, sink.clone()));
                    (store, None, Arc::new(MemoryBus::new(sink)))
                }
                Some(RedisBackend::Single(url)) => {
                    let timeout = config.redis_timeout;
                    let keys = Keys::new(config.key_prefix.clone());
                    let mode = match config.redis_conn_mode {
                        RedisConnMode::Pool => ConnMode::Pool,
                        RedisConnMode::Shared => ConnMode::Shared,
                    };
                    let options = RedisOptions {
                        timeout,
                        keys: keys.clone(),
                        settings,
                        metrics: metrics.clone(),
                        replica_acks: config.redis_replica_acks,
                    };
                    let store =
                        RedisStore::connect_single(&url, config.redis_pool_size, mode, options)?;
                    let publisher = store
                        .publisher()
                        .expect("a store on one Redis has a shared connection");
                    let bus = RedisBus::start(
                        &url,
                        keys,
                        timeout,
                        publisher,
                        sink,
                        Arc::new(store.clone()),
                        metrics.clone(),
                        stop.clone(),
                    )
                    .await?;
                    tracing::info!(
                        redis = %redacted(&url),
                        replica_acks = config.redis_replica_acks,
                        "using the Redis engine"
                    );
                    // The store retries its idempotent calls itself.
                    (Arc::new(store.clone()), Some(store), Arc::new(bus))
                }
                Some(RedisBackend::Cluster(seeds)) => {
                    let timeout = config.redis_timeout;
                    let keys = Keys::clustered(config.key_prefix.clone());
                    let options = RedisOptions {
                        timeout,
                        keys: keys.clone(),
                        settings,
                        metrics: metrics.clone(),
                        replica_acks: config.redis_replica_acks,
                    };
                    let store = RedisStore::connect_cluster(&seeds, options)?;
                    let publisher = store
                        .cluster_publisher()
                        .expect("a store on a cluster has a cluster connection");
                    let (pushes_tx, pushes) = tokio::sync::mpsc::unbounded_channel();
                    let client = cluster_client(&seeds, timeout, Some(pushes_tx))
                        .map_err(|e| BuildError::Redis(StoreError::backend(e)))?;
                    let bus = ShardedBus::start(
                        client,
                        pushes,
                        keys,
                        timeout,
                        publisher,
                        sink,
                        Arc::new(store.clone()),
                        metrics.clone(),
                        stop.clone(),
                    );
                    let shown: Vec<String> = seeds.iter().map(|s| redacted(s)).collect();
                    tracing::info!(
                        seeds = %shown.join(","),
                        replica_acks = config.redis_replica_acks,
                        "using the Redis engine on a Redis Cluster (sharded pub/sub)"
                    );
                    (Arc::new(store.clone()), Some(store), Arc::new(bus))
                }
            };
        // A node restarted with the same id is a new instance: the janitor
        // must still clean up after the old one.
        let instance = format!(
            "{node_id}/{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let limits = Limits::new(
            store.clone(),
            LimitSettings {
                room_create_per_min: config.room_create_per_min,
                code_miss_per_min: config.code_miss_per_min,
                per_address: config.per_address_limits(),
            },
            metrics.clone(),
        );
        let reads = ReadService::new(store.clone(), bus.clone());
        let rooms = RoomService::new(
            store.clone(),
            store.clone(),
            bus.clone(),
            limits,
            RoomSettings {
                resume_max_events: config.resume_max_events,
                typing_repeat: config.typing_repeat,
            },
            reads.clone(),
        );
        let messages = MessageService::new(
            store.clone(),
            store.clone(),
            store.clone(),
            config.edit_window,
        );
        let moderation =
            ModerationService::new(store.clone(), bus.clone(), rooms.clone(), metrics.clone());
        let sessions = SessionService::new(
            store.clone(),
            config.jwt_secret.clone(),
            node_id.clone(),
            instance.clone(),
            config.session_ttl,
            config.message_ttl,
        );
        let janitor = Janitor::new(
            instance.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            rooms.clone(),
            JanitorSettings {
                heartbeat_interval: config.heartbeat_interval,
                node_timeout: config.node_timeout,
                janitor_interval: config.janitor_interval,
                session_ttl: config.session_ttl,
                room_idle_ttl: config.room_idle_ttl,
            },
        );
        tokio::spawn(janitor.run(stop.clone()));
        tracing::info!(node = %node_id, %instance, "node instance");
        Ok(App {
            inner: Arc::new(Inner {
                config,
                node_id,
                store,
                redis,
                bus,
                rooms,
                messages,
                moderation,
                reads,
                sessions,
                metrics,
                draining: AtomicBool::new(false),
                connections: AtomicUsize::new(0),
                stop,
            }),
        })
    }

    /// The configuration.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.inner.config.clone()
    }
    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.inner.node_id
    }
    /// Room rules.
    pub(crate) fn rooms(&self) -> &RoomService {
        &self.inner.rooms
    }
    /// Message rules.
    pub(crate) fn messages(&self) -> &MessageService {
        &self.inner.messages
    }
    /// Moderation rules.
    pub(crate) fn moderation(&self) -> &ModerationService {
        &self.inner.moderation
    }

    /// Read-state rules.
    pub(crate) fn reads(&self) -> &ReadService {
        &self.inner.reads
    }
    /// Session rules.
    pub(crate) fn sessions(&self) -> &SessionService {
        &self.inner.sessions
    }
    /// Metrics.
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// Claims a WebSocket slot under `--max-connections`.
    pub(crate) fn claim_connection(&self) -> Option<ConnectionSlot> {
        let max = self.inner.config.max_connections;
        let prev = self.inner.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.inner.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.inner.metrics.connections.inc();
        self.inner.metrics.connections_total.inc();
        Some(ConnectionSlot { app: self.clone() })
    }

    /// Marks the node as draining: readiness fails from now on.
    pub(crate) fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.metrics.draining.set(1);
    }

    /// Whether the node is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Stops background tasks.
    pub(crate) fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Checks each component.
    pub(crate) async fn readiness(&self) -> Readiness {
        let timeout = self.inner.config.redis_timeout;
        let store = match tokio::time::timeout(timeout, self.inner.store.ping()).await {
            Ok(Ok(())) => Check {
                ok: true,
                error: None,
            },
            Ok(Err(e)) => Check {
                ok: false,
                error: Some(e.to_string()),
            },
            Err(_) => Check {
                ok: false,
                error: Some("the store did not answer in time".into()),
            },
        };
        let pubsub_ok = self.inner.bus.healthy();
        let pubsub = Check {
            ok: pubsub_ok,
            error: (!pubsub_ok).then(|| "pub/sub is not connected".to_owned()),
        };
        let draining = self.is_draining();
        let breaker = self
            .inner
            .redis
            .as_ref()
            .map(RedisStore::breaker_state)
            .unwrap_or(BreakerState::Closed);
        Readiness {
            ready: store.ok && pubsub.ok && !draining && breaker != BreakerState::Open,
            node: self.inner.node_id.clone(),
            engine: if self.inner.redis.is_some() {
                "redis"
            } else {
                "memory"
            },
            checks: Checks {
                store,
                breaker: breaker.as_str(),
                pubsub,
                draining,
            },
        }
    }

    /// The metrics text, with pool gauges read now.
    pub(crate) fn render_metrics(&self) -> String {
        if let Some(redis) = &self.inner.redis {
            self.inner
                .metrics
                .breaker_state
                .set(redis.breaker_state().as_gauge());
            let (busy, idle) = redis.pool_state();
            let pool = &self.inner.metrics.redis_pool;
            pool.get_or_create(&StateLabel { state: "busy" })
                .set(i64::from(busy));
            pool.get_or_create(&StateLabel { state: "idle" })
                .set(i64::from(idle));
        }
        self.inner.metrics.render()
    }
}

/// A Redis URL with its password hidden, for logs.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redacted("redis://:pw@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("rediss://u:p@h"), "rediss://***@h");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }
}
