//! Removals told late: after the bus repaired or subscribed a room again
//! (`EventSink::resynced`), the hub re-checks its local connections of the
//! room against the store, because a `member.removed` or `room.closed`
//! published while pub/sub was down is lost for good (ephemeral events are
//! not in the log).
//!
//! The check runs in a spawned task, never in the subscriber's loop: at
//! most one waiting per room, at most `CONCURRENCY` reading the store at
//! once, users read in chunks of `CHUNK` (one pipeline each). Only
//! connections attached longer ago than the hub's grace (the store timeout)
//! are checked: a connection is attached before its join runs, so a younger
//! one may be joining right now and is not a participant yet. The task waits
//! until the room's connections are old enough, at most the grace.
//!
//! What it finds is told to the checked connections alone, as the event
//! would have told them, with the system user as `by`: the room is gone →
//! `room.closed`; a user is no longer a participant → `member.removed`
//! (`reason` null, `banned_until` the ban's end if a ban holds). The hub's
//! removal path then detaches them, and each connection forgets the room
//! without a second leave.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::Hub;
use crate::events::EventLog;
use crate::model::{Event, User, system_user};

/// Resync checks reading the store at once, per node.
pub(super) const CONCURRENCY: usize = 4;
/// Users per store read.
const CHUNK: usize = 256;

impl Hub {
    /// Spawns the re-check of `room`, unless one is already waiting.
    pub(super) fn schedule_resync(&self, room: &str, log: &Arc<dyn EventLog>) {
        if self.local_count(room) == 0 {
            return;
        }
        let Some(hub) = self.me.upgrade() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let room: Arc<str> = Arc::from(room);
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !pending.insert(room.clone()) {
                return;
            }
        }
        let log = log.clone();
        runtime.spawn(async move { hub.resync(room, log).await });
    }

    /// The re-check itself.
    async fn resync(&self, room: Arc<str>, log: Arc<dyn EventLog>) {
        if let Some(youngest) = self.youngest(&room) {
            let age = youngest.elapsed();
            if age < self.grace {
                tokio::time::sleep(self.grace - age).await;
            }
        }
        let permit = self.checks.acquire().await;
        // From here on a new resync of the room schedules a new check: this
        // one reads the store after it.
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&room);
        let Ok(_permit) = permit else {
            return;
        };
        let checked = self.settled(&room);
        if checked.is_empty() {
            return;
        }
        let users: Vec<String> = checked
            .iter()
            .map(|(_, user)| user.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for chunk in users.chunks(CHUNK) {
            let presence = match log.presence(&room, chunk).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(room = &*room, error = %e, "resync check failed");
                    return;
                }
            };
            if !presence.exists {
                let ids: HashSet<u64> = checked.iter().map(|(id, _)| *id).collect();
                tracing::info!(room = &*room, "room closed while pub/sub was down");
                self.fan_out(
                    &room,
                    0,
                    &Event::RoomClosed { by: system_user() },
                    Some(&ids),
                );
                return;
            }
            for (user, gone) in chunk.iter().zip(presence.gone) {
                let Some(ban) = gone else {
                    continue;
                };
                let ids: HashSet<u64> = checked
                    .iter()
                    .filter(|(_, u)| u == user)
                    .map(|(id, _)| *id)
                    .collect();
                let event = Event::MemberRemoved {
                    user: ban.as_ref().map_or_else(
                        || User {
                            id: user.clone(),
                            name: user.clone(),
                            image: None,
                        },
                        |b| b.user.clone(),
                    ),
                    by: system_user(),
                    reason: None,
                    banned_until: ban.map(|b| b.until),
                };
                tracing::info!(room = &*room, user, "removed while pub/sub was down");
                self.fan_out(&room, 0, &event, Some(&ids));
            }
        }
    }

    /// When the room's most recently attached connection was attached.
    fn youngest(&self, room: &str) -> Option<Instant> {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms.get(room)?.attached.iter().max().copied()
    }

    /// The room's connections attached longer ago than the grace, with a
    /// user: (connection number, user id).
    fn settled(&self, room: &str) -> Vec<(u64, String)> {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        let Some(recipients) = rooms.get(room) else {
            return Vec::new();
        };
        recipients
            .subs
            .iter()
            .zip(&recipients.attached)
            .filter(|(_, at)| at.elapsed() >= self.grace)
            .filter_map(|(sub, _)| Some((sub.id, sub.user.get()?.to_string())))
            .collect()
    }
}
