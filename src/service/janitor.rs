//! The janitor: heartbeats, and cleanup after nodes that died.
//!
//! Every node runs one. Each `--heartbeat-interval` it records its instance
//! (`node id/boot id`) in `nodes`, and every so often extends the TTL of its
//! sessions. Each `--janitor-interval`, the node that takes the short
//! `janitor` lock sweeps:
//!
//! - node instances whose heartbeat is older than `--node-timeout` are dead:
//!   each of their sessions leaves every room it joined (announcing
//!   `participant.left` and writing the "left" message for a user's last
//!   connection, exactly as a clean disconnect would), then the session and
//!   the instance are forgotten;
//! - rooms idle past `--room-idle-ttl` with nobody connected are closed.
//!
//! Every step is idempotent (leaving a room twice is a no-op), so a sweep
//! that dies half way, or two nodes sweeping at once, do no harm; the lock
//! only saves duplicate work.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RoomService;
use crate::error::ServiceError;
use crate::model::now_ms;
use crate::store::{CacheStore, RoomStore, SessionStore};

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Dead node instances cleaned up.
    pub dead_nodes: usize,
    /// Sessions of dead nodes removed.
    pub sessions: usize,
    /// Idle rooms closed.
    pub rooms_closed: usize,
}

/// Timing of the janitor.
#[derive(Debug, Clone)]
pub struct JanitorSettings {
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Heartbeat age that makes a node dead.
    pub node_timeout: Duration,
    /// Sweep period.
    pub janitor_interval: Duration,
    /// Session TTL, renewed while the node lives.
    pub session_ttl: Duration,
    /// Idle time after which an empty room is closed.
    pub room_idle_ttl: Duration,
}

/// One node's janitor.
pub struct Janitor {
    instance: String,
    sessions: Arc<dyn SessionStore>,
    rooms: Arc<dyn RoomStore>,
    locks: Arc<dyn CacheStore>,
    room_service: RoomService,
    settings: JanitorSettings,
}

impl Janitor {
    /// A janitor for node `instance`.
    pub fn new(
        instance: String,
        sessions: Arc<dyn SessionStore>,
        rooms: Arc<dyn RoomStore>,
        locks: Arc<dyn CacheStore>,
        room_service: RoomService,
        settings: JanitorSettings,
    ) -> Janitor {
        Janitor {
            instance,
            sessions,
            rooms,
            locks,
            room_service,
            settings,
        }
    }

    /// Heartbeats and sweeps until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let s = &self.settings;
        // Sessions live `session_ttl`; renew them well before.
        let refresh_every = (s.session_ttl / 3)
            .min(Duration::from_secs(3600))
            .max(s.heartbeat_interval);
        let mut heartbeat = tokio::time::interval(s.heartbeat_interval);
        let mut sweep = tokio::time::interval(s.janitor_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = heartbeat.tick() => {
                    let refresh = (last_refresh.elapsed() >= refresh_every).then_some(s.session_ttl);
                    match self.sessions.heartbeat(&self.instance, refresh).await {
                        Ok(()) => {
                            if refresh.is_some() {
                                last_refresh = tokio::time::Instant::now();
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
                _ = sweep.tick() => {
                    match self.locks.try_lock("janitor", s.janitor_interval).await {
                        Ok(true) => match self.sweep().await {
                            Ok(done) if done != Sweep::default() => {
                                tracing::info!(?done, "janitor sweep");
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "janitor sweep failed"),
                        },
                        Ok(false) => {}
                        Err(e) => tracing::debug!(error = %e, "janitor lock failed"),
                    }
                }
            }
        }
    }

    /// One sweep: dead nodes, then idle rooms.
    pub async fn sweep(&self) -> Result<Sweep, ServiceError> {
        let mut done = Sweep::default();
        let now = now_ms();
        let dead_before = now.saturating_sub(self.settings.node_timeout.as_millis() as u64);
        for instance in self.sessions.dead_nodes(dead_before).await? {
            if instance == self.instance {
                // Our own heartbeat is late (Redis was unreachable): we are
                // alive, and the next heartbeat says so.
                continue;
            }
            done.sessions += self.reap(&instance).await?;
            done.dead_nodes += 1;
        }
        let idle_before = now.saturating_sub(self.settings.room_idle_ttl.as_millis() as u64);
        for room in self.rooms.idle_rooms(idle_before, 100).await? {
            if self.rooms.close_room(&room, idle_before).await? {
                tracing::info!(room, "closed an idle room");
                done.rooms_closed += 1;
            }
        }
        Ok(done)
    }

    /// Cleans up after a dead node instance; returns the sessions removed.
    async fn reap(&self, instance: &str) -> Result<usize, ServiceError> {
        tracing::info!(instance, "cleaning up after a dead node");
        let conns = self.sessions.node_sessions(instance).await?;
        for conn in &conns {
            let Some(session) = self.sessions.session(conn).await? else {
                continue;
            };
            for room in self.sessions.session_rooms(conn).await? {
                match self.room_service.leave(&session.user, conn, &room).await {
                    Ok(()) | Err(ServiceError::NotFound(_)) | Err(ServiceError::BadRequest(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            self.sessions.close(conn, &session.user.id).await?;
        }
        self.sessions.forget_node(instance).await?;
        Ok(conns.len())
    }
}
