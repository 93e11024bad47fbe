//! The rooms a node's subscriber holds, shared by both Redis subscribers
//! (`redis`: one Redis, classic channels; `sharded`: a cluster, shard
//! channels): reference counts, the last seq delivered per room, and the
//! delivery rules that make pub/sub loss-free:
//!
//! - an envelope with a seq at or below the last delivered is a duplicate
//!   and is dropped;
//! - an envelope whose seq jumps past it means pub/sub lost events: the
//!   missed ones are read from the room's event log and delivered first;
//! - after the subscriber lost a room's channel (a reconnect, a failover, a
//!   slot moved to another master) and got it back, the room is repaired
//!   the same way;
//! - after each repair the sink is told the room was resynced
//!   (`EventSink::resynced`): the ephemeral events lost meanwhile (a
//!   removal) are not in the log, so the sink re-checks its connections.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec;
use crate::events::{EventLog, EventSink};
use crate::metrics::Metrics;

/// A held room: how many local holds, and the last seq delivered (0: none
/// yet).
#[derive(Debug, Clone, Copy)]
struct Held {
    holds: usize,
    last: u64,
}

/// The held rooms and where their events go.
pub(super) struct RoomTable {
    rooms: HashMap<String, Held>,
    sink: Arc<dyn EventSink>,
    /// The rooms' durable logs, for gap repair.
    log: Arc<dyn EventLog>,
    metrics: Arc<Metrics>,
}

impl RoomTable {
    pub(super) fn new(
        sink: Arc<dyn EventSink>,
        log: Arc<dyn EventLog>,
        metrics: Arc<Metrics>,
    ) -> RoomTable {
        RoomTable {
            rooms: HashMap::new(),
            sink,
            log,
            metrics,
        }
    }

    /// Adds a hold on a room already subscribed; false when it is not held
    /// (the caller subscribes, then `insert`s it).
    pub(super) fn add_hold(&mut self, room: &str) -> bool {
        match self.rooms.get_mut(room) {
            Some(held) => {
                held.holds += 1;
                true
            }
            None => false,
        }
    }

    /// Records a room just subscribed, with one hold.
    pub(super) fn insert(&mut self, room: String) {
        self.rooms.insert(room, Held { holds: 1, last: 0 });
        self.metrics.pubsub_channels.set(self.rooms.len() as i64);
    }

    /// Releases one hold; true when it was the last (unsubscribe).
    pub(super) fn release(&mut self, room: &str) -> bool {
        let Some(held) = self.rooms.get_mut(room) else {
            return false;
        };
        held.holds = held.holds.saturating_sub(1);
        if held.holds == 0 {
            self.rooms.remove(room);
            self.metrics.pubsub_channels.set(self.rooms.len() as i64);
            return true;
        }
        false
    }

    /// Whether the room is held.
    pub(super) fn holds(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Every held room.
    pub(super) fn held(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// How many rooms are held.
    pub(super) fn len(&self) -> usize {
        self.rooms.len()
    }

    fn last_seq(&self, room: &str) -> u64 {
        self.rooms.get(room).map(|h| h.last).unwrap_or(0)
    }

    fn set_last(&mut self, room: &str, seq: u64) {
        if let Some(held) = self.rooms.get_mut(room) {
            held.last = seq;
        }
    }

    /// Delivers one received envelope, repairing a gap first.
    pub(super) async fn receive(&mut self, room: &str, payload: &[u8]) {
        let seq = match codec::peek_seq(payload) {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(room, error = %e, "dropping undecodable envelope");
                return;
            }
        };
        let Some(&Held { last, .. }) = self.rooms.get(room) else {
            // Unsubscribed while the message was in flight.
            return;
        };
        if seq > 0 {
            if last > 0 && seq <= last {
                return;
            }
            if last > 0 && seq > last + 1 {
                self.repair(room).await;
                if self.last_seq(room) >= seq {
                    return;
                }
            }
            self.set_last(room, seq);
        }
        self.sink.deliver(room, payload);
    }

    /// Repairs a room after a gap or a lost channel: replays its log
    /// (`replay`), then tells the sink the room was resynced, so it can
    /// re-check its connections for removals told by the lost ephemeral
    /// events (which are not in the log).
    pub(super) async fn repair(&mut self, room: &str) {
        self.replay(room).await;
        self.sink.resynced(room, &self.log);
    }

    /// Reads what the room's log holds after the last seq delivered and
    /// delivers it in order. A room that has delivered nothing yet has
    /// nothing to replay (its clients resume with `since`).
    async fn replay(&mut self, room: &str) {
        let last = self.last_seq(room);
        if last == 0 {
            return;
        }
        let replay = match self.log.envelopes_since(room, last).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(room, error = %e, "gap repair failed; clients will resume with since");
                return;
            }
        };
        if !replay.complete {
            tracing::warn!(room, last, "gap larger than the retained log");
        }
        let mut repaired = 0u64;
        for env in &replay.envelopes {
            let Ok(seq) = codec::peek_seq(env) else {
                continue;
            };
            if seq <= self.last_seq(room) {
                continue;
            }
            self.set_last(room, seq);
            self.sink.deliver(room, env);
            repaired += 1;
        }
        self.metrics.gap_repairs.inc();
        self.metrics.events_repaired.inc_by(repaired);
    }

    /// Repairs every held room.
    pub(super) async fn repair_all(&mut self) {
        for room in self.held() {
            self.repair(&room).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::error::StoreResult;
    use crate::events::{Presence, RawReplay};
    use crate::model::{Event, Message, MessageKind, User, now_ms, now_us};

    /// Records the seqs delivered, and a resync as seq 0.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<u64>>);

    impl EventSink for Recorder {
        fn deliver(&self, _room: &str, envelope: &[u8]) {
            let seq = codec::peek_seq(envelope).expect("seq");
            self.0.lock().expect("lock").push(seq);
        }

        fn resynced(&self, _room: &str, _log: &Arc<dyn EventLog>) {
            self.0.lock().expect("lock").push(0);
        }
    }

    /// A room log held in memory: the envelopes of seqs 1..=len.
    struct Log(Vec<Vec<u8>>);

    #[async_trait]
    impl EventLog for Log {
        async fn envelopes_since(&self, _room: &str, since: u64) -> StoreResult<RawReplay> {
            Ok(RawReplay {
                envelopes: self.0.iter().skip(since as usize).cloned().collect(),
                last_seq: self.0.len() as u64,
                complete: true,
            })
        }

        async fn presence(&self, _room: &str, users: &[String]) -> StoreResult<Presence> {
            Ok(Presence {
                exists: true,
                gone: vec![None; users.len()],
            })
        }
    }

    fn message(text: &str) -> Message {
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            room: "r".into(),
            seq: 0,
            user: User {
                id: "u".into(),
                name: "U".into(),
                image: None,
            },
            kind: MessageKind::Text,
            content: text.into(),
            attachment: None,
            created_at: now_ms(),
            edited_at: None,
            deleted: false,
        }
    }

    /// A table holding room `r` up to seq 2, whose log holds seqs 1..=6.
    fn table() -> (RoomTable, Arc<Recorder>, Vec<Vec<u8>>) {
        let log: Vec<Vec<u8>> = (1..=6)
            .map(|seq| codec::encode(seq, &Event::MessageCreated(message("m")), now_us()))
            .collect();
        let sink = Arc::new(Recorder::default());
        let mut table = RoomTable::new(
            sink.clone(),
            Arc::new(Log(log.clone())),
            Arc::new(Metrics::new()),
        );
        table.insert("r".into());
        table.set_last("r", 2);
        (table, sink, log)
    }

    #[tokio::test]
    async fn a_seq_jump_is_repaired_from_the_log_in_order() {
        let (mut table, sink, log) = table();
        // Delivered up to 2; 3 and 4 were lost; 5 arrives. The repair
        // delivers everything the log holds after 2, in order (6 included,
        // which is still on its way live).
        table.receive("r", &log[4]).await;
        assert_eq!(*sink.0.lock().expect("lock"), [3, 4, 5, 6, 0]);
        assert_eq!(table.metrics.gap_repairs.get(), 1);
        assert_eq!(table.metrics.events_repaired.get(), 4);
        // What then arrives live is a duplicate and is dropped.
        table.receive("r", &log[3]).await;
        table.receive("r", &log[5]).await;
        assert_eq!(*sink.0.lock().expect("lock"), [3, 4, 5, 6, 0]);
    }

    #[tokio::test]
    async fn a_lost_channel_is_repaired_for_every_held_room() {
        let (mut table, sink, _log) = table();
        table.repair_all().await;
        // The replay, then the resync (which the sink re-checks).
        assert_eq!(*sink.0.lock().expect("lock"), [3, 4, 5, 6, 0]);
        // Events of rooms this node does not hold are ignored.
        table
            .receive(
                "other",
                &codec::encode(9, &Event::MessageCreated(message("x")), 0),
            )
            .await;
        assert_eq!(sink.0.lock().expect("lock").len(), 5);
    }

    #[test]
    fn holds_are_counted_and_the_last_release_says_so() {
        let (mut table, _sink, _log) = table();
        assert!(table.add_hold("r"));
        assert!(
            !table.add_hold("new"),
            "an unheld room must be subscribed first"
        );
        assert!(!table.release("r"));
        assert!(table.release("r"), "the last hold");
        assert!(!table.holds("r"));
        assert_eq!(table.len(), 0);
        assert_eq!(table.metrics.pubsub_channels.get(), 0);
    }
}
