//! The memory engine's state: what `MemoryStore` keeps behind its one lock
//! (`State`, each room's `RoomState`), the clock it reads, and the helpers
//! every repository of the engine shares (appending a durable event,
//! dropping expired messages, the room as readers see it). Kept apart from
//! the repositories so each file stays about one concern.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::{moderation, reads};
use crate::codec;
use crate::events::EventSink;
use crate::model::{Event, Message, Room, User, now_us};
use crate::store::{SessionRecord, StoreError, StoreResult, StoreSettings};

/// Where the memory engine reads the time, Unix ms: the system clock in a
/// node (`now_ms`), a clock the test moves in tests, so TTLs can be checked
/// without sleeping.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub(super) struct Inner {
    /// TTLs and the log length.
    pub(super) settings: StoreSettings,
    /// Where durable events are published.
    pub(super) sink: Arc<dyn EventSink>,
    /// The time every expiry and activity stamp is read from.
    pub(super) clock: Clock,
    /// Everything stored, behind one lock.
    pub(super) state: Mutex<State>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) rooms: HashMap<String, RoomState>,
    pub(super) codes: HashMap<String, String>,
    pub(super) sessions: HashMap<String, (SessionRecord, u64)>,
    pub(super) user_sessions: HashMap<String, HashSet<String>>,
    pub(super) session_rooms: HashMap<String, HashSet<String>>,
    pub(super) nodes: HashMap<String, u64>,
    pub(super) node_sessions: HashMap<String, HashSet<String>>,
    /// user → (last seen ms, messages sent, expires at ms)
    pub(super) activity: HashMap<String, (u64, u64, u64)>,
    /// (room, user) → (expires at ms, last told at ms)
    pub(super) typing: HashMap<(String, String), (u64, u64)>,
    pub(super) cache: HashMap<String, (Vec<u8>, u64)>,
    pub(super) locks: HashMap<String, u64>,
    /// Abuse-limit counters: name → (count, window ends at ms).
    pub(super) limits: HashMap<String, (u64, u64)>,
    /// Big rooms' membership changes waiting for their next
    /// `participants.changed`, and until when (ms) the last one holds the
    /// room's window: room → (changes, gate until).
    pub(super) changes: HashMap<String, (Vec<super::Change>, u64)>,
    /// user → room → joined at (ms): `room.mine`'s candidates (`reads`).
    pub(super) user_rooms: HashMap<String, HashMap<String, u64>>,
}

pub(super) struct RoomState {
    pub(super) room: Room,
    pub(super) last_activity: u64,
    /// user id → the user and their connections in the room
    pub(super) members: HashMap<String, Member>,
    /// seq → message id
    pub(super) by_seq: BTreeMap<u64, String>,
    /// message id → (envelope of the latest event, expires at ms)
    pub(super) messages: HashMap<String, (Vec<u8>, u64)>,
    pub(super) events: VecDeque<(u64, Vec<u8>)>,
    pub(super) dedupe: HashMap<(String, String), (String, u64)>,
    /// Owner, moderators, bans and mutes (`memory::moderation`).
    pub(super) moderation: moderation::Moderation,
    /// Read positions and countable seqs (`reads`).
    pub(super) reads: reads::RoomReads,
}

pub(super) struct Member {
    pub(super) user: User,
    pub(super) conns: HashSet<String>,
    /// When the user's latest connection joined (ms): the roster of a big
    /// room lists the most recent first.
    pub(super) joined_at: u64,
}

impl Inner {
    /// Now, Unix ms, by the store's clock.
    pub(super) fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Appends a durable event about `message` to the room: assigns the seq,
    /// stores the message state and the event, publishes. Caller holds the lock.
    pub(super) fn append_event(&self, rs: &mut RoomState, event: Event) -> u64 {
        let now = self.now();
        rs.room.last_seq += 1;
        let seq = rs.room.last_seq;
        let env = codec::encode(seq, &event, now_us());
        if let Some(m) = event.message() {
            // A message keeps the expiry of its creation through edits.
            let expires = match (&event, rs.messages.get(&m.id)) {
                (Event::MessageCreated(_), _) | (_, None) => {
                    now + self.settings.message_ttl.as_millis() as u64
                }
                (_, Some((_, expires))) => *expires,
            };
            if matches!(event, Event::MessageCreated(_)) {
                rs.by_seq.insert(seq, m.id.clone());
            }
            rs.messages.insert(m.id.clone(), (env.clone(), expires));
        }
        rs.events.push_back((seq, env.clone()));
        while rs.events.len() > self.settings.event_log_len as usize {
            rs.events.pop_front();
        }
        rs.last_activity = now;
        self.sink.deliver(&rs.room.id, &env);
        seq
    }
}

/// Drops expired messages and every event older than the oldest message
/// still alive (those events are all about expired messages).
pub(super) fn trim_expired(rs: &mut RoomState, now: u64) {
    let mut oldest_alive = None;
    let mut expired = Vec::new();
    for (seq, id) in &rs.by_seq {
        match rs.messages.get(id) {
            Some((_, exp)) if *exp > now => {
                oldest_alive = Some(*seq);
                break;
            }
            _ => expired.push((*seq, id.clone())),
        }
    }
    for (seq, id) in expired {
        rs.by_seq.remove(&seq);
        rs.messages.remove(&id);
        rs.reads.gone(seq);
    }
    let keep_from = oldest_alive.unwrap_or(u64::MAX);
    while rs.events.front().is_some_and(|(seq, _)| *seq < keep_from) {
        rs.events.pop_front();
    }
}

pub(super) fn decode_stored(env: &[u8]) -> StoreResult<Message> {
    codec::decode_message(env).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn room_view(rs: &RoomState) -> Room {
    let mut room = rs.room.clone();
    room.participant_count = rs.members.len() as u32;
    room
}
