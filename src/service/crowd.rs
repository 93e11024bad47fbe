//! `Crowd`: the `participants.changed` of big rooms, at most one per room
//! per second across every node.
//!
//! Above `BIG_ROOM` participants a join or leave writes no system message
//! and sends no per-user event. Instead this node keeps, per room, the
//! changes its own users made that are not yet handed to the store, and one
//! task per room with such changes hands them over
//! (`RoomStore::participants_changed`). The store appends them to the
//! room's shared waiting list and lets through one caller per window (on
//! Redis a `SET NX PX 1000` gate, in Redis time, so it holds across nodes):
//! that caller publishes everything waiting, from every node, as one event
//! with the exact count. A caller the gate turns away sleeps until it
//! opens and asks again; its changes already wait in the store, so whoever
//! passes next tells them. The task ends once nothing waits.
//!
//! The events are ephemeral: a node that dies between taking the gate and
//! publishing loses that second's lists; the next event's count is exact
//! again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bus::EventBus;
use crate::model::{Event, User};
use crate::store::{Change, Coalesced, RoomStore};

/// At most one `participants.changed` per room per this.
pub const CHANGED_WINDOW: Duration = Duration::from_secs(1);

/// A failed hand-over is tried again after this.
const RETRY: Duration = Duration::from_millis(500);

/// The coalescer of big rooms' membership changes. Cheap to clone.
#[derive(Clone)]
pub struct Crowd {
    rooms: Arc<dyn RoomStore>,
    bus: Arc<dyn EventBus>,
    /// Per room, the changes not yet handed to the store. A room is here
    /// exactly while its task runs. Never held across an `.await`.
    pending: Arc<Mutex<HashMap<String, Vec<Change>>>>,
}

impl Crowd {
    /// A coalescer over the given store and bus.
    pub(crate) fn new(rooms: Arc<dyn RoomStore>, bus: Arc<dyn EventBus>) -> Crowd {
        Crowd {
            rooms,
            bus,
            pending: Arc::default(),
        }
    }

    /// A user's first connection joined the big room `room`.
    pub fn joined(&self, room: &str, user: &User) {
        self.add(room, Change::Joined(user.clone()));
    }

    /// A user's last connection left the big room `room`.
    pub fn left(&self, room: &str, user: &User) {
        self.add(room, Change::Left(user.clone()));
    }

    fn add(&self, room: &str, change: Change) {
        let start = {
            let mut pending = self.lock();
            match pending.get_mut(room) {
                Some(changes) => {
                    changes.push(change);
                    false
                }
                None => {
                    pending.insert(room.to_owned(), vec![change]);
                    true
                }
            }
        };
        if start {
            let crowd = self.clone();
            let room = room.to_owned();
            tokio::spawn(async move { crowd.run(&room).await });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Change>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the room's local changes; `None` (and the room is forgotten,
    /// ending its task) when there are none and `finish`.
    fn take(&self, room: &str, finish: bool) -> Option<Vec<Change>> {
        let mut pending = self.lock();
        let changes = std::mem::take(pending.get_mut(room)?);
        if changes.is_empty() && finish {
            pending.remove(room);
            return None;
        }
        Some(changes)
    }

    /// Gives a room's changes back after a failed hand-over.
    fn give_back(&self, room: &str, mut changes: Vec<Change>) {
        let mut pending = self.lock();
        let waiting = pending.entry(room.to_owned()).or_default();
        changes.append(waiting);
        *waiting = changes;
    }

    /// The room's task: hands changes over until nothing waits.
    async fn run(&self, room: &str) {
        // Whether the store may still hold changes this node handed over.
        let mut handed = false;
        loop {
            let Some(changes) = self.take(room, !handed) else {
                return;
            };
            let sent = !changes.is_empty();
            match self
                .rooms
                .participants_changed(room, &changes, CHANGED_WINDOW)
                .await
            {
                Ok(Coalesced::Nothing) => handed = false,
                Ok(Coalesced::Wait(d)) => {
                    handed = true;
                    tokio::time::sleep(d).await;
                }
                Ok(Coalesced::Publish {
                    count,
                    joined,
                    left,
                }) => {
                    handed = false;
                    let event = Event::ParticipantsChanged {
                        count,
                        joined,
                        left,
                    };
                    if let Err(e) = self.bus.publish(room, &event).await {
                        tracing::warn!(room, error = %e, "could not publish participants.changed");
                    }
                }
                Err(e) => {
                    tracing::warn!(room, error = %e, "could not coalesce participant changes");
                    if sent {
                        self.give_back(room, changes);
                    }
                    handed = true;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
