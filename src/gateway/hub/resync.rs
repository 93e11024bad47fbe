//! Removals told late: after the bus repaired or subscribed a room again
//! (`EventSink::resynced`), the hub re-checks its local connections of the
//! room against the store, because a `member.removed` or `room.closed`
//! published while pub/sub was down is lost for good (ephemeral events are
//! not in the log).
//!
//! The check runs in a spawned task, never in the subscriber's loop: at
//! most one waiting per room, at most `CONCURRENCY` reading the store at
//! once, users read in chunks of `CHUNK` (one pipeline each). A failed read
//! is tried again (`ATTEMPTS`, with doubling waits): a resync often follows
//! a failover, while the store may still be settling. Only
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
/// Store reads a check tries before it gives up (a resync often follows a
/// failover, when the store may still be settling).
const ATTEMPTS: u32 = 5;
/// The wait after the first failed read, doubled after each (0.25, 0.5, 1,
/// 2 s: 3.75 s in all).
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads where `users` stand in `room`, retrying a failed read; `None`
/// after `ATTEMPTS` failures (logged: a removal lost with pub/sub then
/// waits for the room's next resync, or for the connection to close).
async fn presence_with_retries(
    log: &Arc<dyn EventLog>,
    room: &str,
    users: &[String],
) -> Option<crate::events::Presence> {
    let mut wait = RETRY_FIRST;
    for attempt in 1..=ATTEMPTS {
        match log.presence(room, users).await {
            Ok(presence) => return Some(presence),
            Err(e) if attempt < ATTEMPTS => {
                tracing::info!(room, attempt, error = %e, "resync check failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::warn!(room, attempts = ATTEMPTS, error = %e, "resync check failed; giving up");
            }
        }
    }
    None
}

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
            let Some(presence) = presence_with_retries(&log, &room, chunk).await else {
                return;
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

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::error::StoreResult;
    use crate::events::{EventSink, Presence, RawReplay};
    use crate::gateway::hub::{Kill, Outbound, Subscriber};
    use crate::gateway::queue;
    use crate::metrics::Metrics;
    use crate::model::BanRecord;

    /// A store where `gone` users left (banned until 5 when `banned`), or
    /// the room is gone; records when and for whom it was asked.
    struct Store {
        exists: bool,
        gone: &'static [&'static str],
        asked: Mutex<Vec<(Instant, Vec<String>)>>,
        /// Reads that fail before one succeeds.
        failing: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl EventLog for Store {
        async fn envelopes_since(&self, _room: &str, _since: u64) -> StoreResult<RawReplay> {
            unreachable!("a resync reads no log")
        }

        async fn presence(&self, _room: &str, users: &[String]) -> StoreResult<Presence> {
            self.asked
                .lock()
                .expect("lock")
                .push((Instant::now(), users.to_vec()));
            let failing = &self.failing;
            if failing.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                failing.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return Err(crate::error::StoreError::Unavailable("failing over".into()));
            }
            let gone = users
                .iter()
                .map(|u| {
                    self.gone.contains(&u.as_str()).then(|| {
                        Some(BanRecord {
                            user: User {
                                id: u.clone(),
                                name: format!("{u} by name"),
                                image: None,
                            },
                            until: 5,
                            by: system_user(),
                            reason: None,
                        })
                    })
                })
                .collect();
            Ok(Presence {
                exists: self.exists,
                gone,
            })
        }
    }

    fn sub(id: u64, user: Option<&str>) -> (Subscriber, queue::Receiver<Outbound>) {
        let (tx, rx) = queue::channel(8);
        let cell = OnceLock::new();
        if let Some(u) = user {
            let _ = cell.set(Box::from(u));
        }
        (
            Subscriber {
                id,
                tx,
                kill: Arc::new(Kill::default()),
                conn: Arc::from(format!("c{id}")),
                user: Arc::new(cell),
            },
            rx,
        )
    }

    fn text(out: Outbound) -> String {
        let Outbound::Event(f) = out else {
            panic!("an event, got {out:?}")
        };
        let at = f.frame.iter().position(|b| *b == b'{').expect("json");
        String::from_utf8(f.frame[at..].to_vec()).expect("utf-8")
    }

    const GRACE: Duration = Duration::from_millis(80);

    #[tokio::test]
    async fn a_resync_removes_who_left_after_the_grace_only_those() {
        let hub = Hub::new(Arc::new(Metrics::new()), GRACE);
        let room: Arc<str> = Arc::from("r1");
        let mut queues = Vec::new();
        for (id, who) in [(1, Some("bob")), (2, Some("ann")), (3, None)] {
            let (s, rx) = sub(id, who);
            hub.attach(&room, s);
            queues.push(rx);
        }
        let store = Arc::new(Store {
            exists: true,
            gone: &["bob"],
            asked: Mutex::new(Vec::new()),
            failing: Default::default(),
        });
        let log: Arc<dyn EventLog> = store.clone();
        let attached = Instant::now();
        hub.resynced("r1", &log);
        hub.resynced("r1", &log);
        tokio::time::sleep(GRACE * 3).await;
        let asked = store.asked.lock().expect("lock").clone();
        assert_eq!(asked.len(), 1, "one check per room at a time");
        assert!(
            asked[0].0 >= attached + GRACE,
            "a join may be in flight during the grace"
        );
        assert_eq!(
            asked[0].1,
            ["ann", "bob"],
            "connections with a user, once each"
        );
        let removed = text(queues[0].try_recv().expect("bob is told"));
        assert!(removed.contains(r#""event":"member.removed""#), "{removed}");
        assert!(removed.contains(r#""by":{"id":"system""#), "{removed}");
        assert!(removed.contains(r#""name":"bob by name""#), "{removed}");
        assert!(removed.contains(r#""banned_until":5"#), "{removed}");
        assert!(matches!(queues[0].try_recv(), Ok(Outbound::Removed(r)) if *r == room));
        assert!(queues[1].try_recv().is_err(), "ann stays, told nothing");
        assert!(queues[2].try_recv().is_err());
        assert_eq!(hub.local_count("r1"), 2);
    }

    #[tokio::test]
    async fn a_resync_of_a_gone_room_closes_it_for_settled_connections() {
        let hub = Hub::new(Arc::new(Metrics::new()), GRACE);
        let room: Arc<str> = Arc::from("r1");
        let (a, mut ra) = sub(1, Some("ann"));
        hub.attach(&room, a);
        let log: Arc<dyn EventLog> = Arc::new(Store {
            exists: false,
            gone: &[],
            asked: Mutex::new(Vec::new()),
            failing: Default::default(),
        });
        hub.resynced("r1", &log);
        tokio::time::sleep(GRACE * 3).await;
        let closed = text(ra.try_recv().expect("ann is told"));
        assert!(closed.contains(r#""event":"room.closed""#), "{closed}");
        assert!(closed.contains(r#""by":{"id":"system""#), "{closed}");
        assert!(matches!(ra.try_recv(), Ok(Outbound::Removed(_))));
        assert_eq!(hub.local_count("r1"), 0);
    }

    #[tokio::test]
    async fn a_failed_check_is_tried_again_until_the_store_answers() {
        let hub = Hub::new(Arc::new(Metrics::new()), GRACE);
        let room: Arc<str> = Arc::from("r1");
        let (a, mut ra) = sub(1, Some("bob"));
        hub.attach(&room, a);
        let store = Arc::new(Store {
            exists: true,
            gone: &["bob"],
            asked: Mutex::new(Vec::new()),
            failing: 2.into(),
        });
        let log: Arc<dyn EventLog> = store.clone();
        hub.resynced("r1", &log);
        // The grace, then 0.25 s and 0.5 s after the two failures.
        let deadline = Instant::now() + Duration::from_secs(5);
        let out = loop {
            if let Ok(out) = ra.try_recv() {
                break out;
            }
            assert!(Instant::now() < deadline, "bob was never told");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(text(out).contains(r#""event":"member.removed""#));
        assert_eq!(
            store.asked.lock().expect("lock").len(),
            3,
            "two failures, then one answer"
        );
    }
}
