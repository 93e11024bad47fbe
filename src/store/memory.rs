//! The in-memory engine: every repository in one process, for a single node
//! without Redis and for fast tests.
//!
//! One `std::sync::Mutex` guards all state; it is never held across an
//! `.await` (no method awaits while holding it). Durable events are handed
//! to the local `EventSink` while the lock is held, so delivery order equals
//! seq order exactly as with the Redis scripts. Expiry is lazy: expired
//! messages, sessions and cache entries are skipped when read and dropped
//! when next written.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AppendOutcome, CacheStore, CreateOutcome, HistoryPage, JoinOutcome, LeaveOutcome, MessageStore,
    Replay, RoomStore, SessionRecord, SessionStore, StoreError, StoreHealth, StoreResult,
    StoreSettings,
};
use crate::bus::EventSink;
use crate::codec;
use crate::model::{Event, Message, Room, User, now_ms, now_us};

/// The in-memory engine. Cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    settings: StoreSettings,
    sink: Arc<dyn EventSink>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, RoomState>,
    codes: HashMap<String, String>,
    sessions: HashMap<String, (SessionRecord, u64)>,
    user_sessions: HashMap<String, HashSet<String>>,
    cache: HashMap<String, (Vec<u8>, u64)>,
}

struct RoomState {
    room: Room,
    last_activity: u64,
    /// user id → (user, connections, join order)
    members: HashMap<String, Member>,
    joins: u64,
    /// seq → message id
    by_seq: BTreeMap<u64, String>,
    /// message id → (envelope of the latest event, expires at ms)
    messages: HashMap<String, (Vec<u8>, u64)>,
    events: VecDeque<(u64, Vec<u8>)>,
    dedupe: HashMap<(String, String), (String, u64)>,
}

struct Member {
    user: User,
    conns: HashSet<String>,
    order: u64,
}

impl MemoryStore {
    /// A new, empty store that hands durable events to `sink`.
    pub fn new(settings: StoreSettings, sink: Arc<dyn EventSink>) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                settings,
                sink,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep
        // serving rather than poisoning every later request.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Appends a durable event about `message` to the room: assigns the seq,
    /// stores the message state and the event, publishes. Caller holds the lock.
    fn append_event(&self, rs: &mut RoomState, event: Event) -> u64 {
        let now = now_ms();
        rs.room.last_seq += 1;
        let seq = rs.room.last_seq;
        let env = codec::encode(seq, &event, now_us());
        if let Some(m) = event.message() {
            let expires = now + self.settings.message_ttl.as_millis() as u64;
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

fn room_view(rs: &RoomState) -> Room {
    let mut room = rs.room.clone();
    room.participant_count = rs.members.len() as u32;
    room
}

#[async_trait]
impl RoomStore for MemoryStore {
    async fn create_room(
        &self,
        room: &Room,
        creator: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<CreateOutcome> {
        let mut st = self.state();
        if st.codes.contains_key(&room.code) {
            return Ok(CreateOutcome::CodeTaken);
        }
        let mut stored = room.clone();
        stored.last_seq = 0;
        stored.participant_count = 0;
        let mut rs = RoomState {
            room: stored,
            last_activity: now_ms(),
            members: HashMap::new(),
            joins: 1,
            by_seq: BTreeMap::new(),
            messages: HashMap::new(),
            events: VecDeque::new(),
            dedupe: HashMap::new(),
        };
        rs.members.insert(
            creator.id.clone(),
            Member {
                user: creator.clone(),
                conns: HashSet::from([conn.to_owned()]),
                order: 0,
            },
        );
        self.inner
            .append_event(&mut rs, Event::MessageCreated(note.clone()));
        let view = room_view(&rs);
        st.codes.insert(room.code.clone(), room.id.clone());
        st.rooms.insert(room.id.clone(), rs);
        Ok(CreateOutcome::Created(view))
    }

    async fn room(&self, id: &str) -> StoreResult<Option<Room>> {
        Ok(self.state().rooms.get(id).map(room_view))
    }

    async fn room_id_by_code(&self, code: &str) -> StoreResult<Option<String>> {
        Ok(self.state().codes.get(code).cloned())
    }

    async fn join(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<JoinOutcome> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(JoinOutcome::NoRoom);
        };
        if let Some(member) = rs.members.get_mut(&user.id) {
            member.conns.insert(conn.to_owned());
            return Ok(JoinOutcome::Joined { first: false });
        }
        if rs.members.len() >= rs.room.max_participants as usize {
            return Ok(JoinOutcome::Full);
        }
        rs.joins += 1;
        let order = rs.joins;
        rs.members.insert(
            user.id.clone(),
            Member {
                user: user.clone(),
                conns: HashSet::from([conn.to_owned()]),
                order,
            },
        );
        self.inner
            .append_event(rs, Event::MessageCreated(note.clone()));
        Ok(JoinOutcome::Joined { first: true })
    }

    async fn leave(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<LeaveOutcome> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(LeaveOutcome::NotJoined);
        };
        let Some(member) = rs.members.get_mut(&user.id) else {
            return Ok(LeaveOutcome::NotJoined);
        };
        if !member.conns.remove(conn) {
            return Ok(LeaveOutcome::NotJoined);
        }
        if !member.conns.is_empty() {
            return Ok(LeaveOutcome::Left { last: false });
        }
        rs.members.remove(&user.id);
        self.inner
            .append_event(rs, Event::MessageCreated(note.clone()));
        Ok(LeaveOutcome::Left { last: true })
    }

    async fn participants(&self, room: &str) -> StoreResult<Vec<User>> {
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(Vec::new());
        };
        let mut members: Vec<&Member> = rs.members.values().collect();
        members.sort_by_key(|m| m.order);
        Ok(members.into_iter().map(|m| m.user.clone()).collect())
    }

    async fn is_participant(&self, room: &str, user: &str) -> StoreResult<bool> {
        Ok(self
            .state()
            .rooms
            .get(room)
            .is_some_and(|rs| rs.members.contains_key(user)))
    }

    async fn list_public(&self, limit: usize) -> StoreResult<Vec<Room>> {
        let st = self.state();
        let mut rooms: Vec<&RoomState> = st.rooms.values().filter(|r| !r.room.private).collect();
        rooms.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| b.room.last_seq.cmp(&a.room.last_seq))
        });
        Ok(rooms.into_iter().take(limit).map(room_view).collect())
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn append(
        &self,
        message: &Message,
        client_msg_id: Option<&str>,
    ) -> StoreResult<AppendOutcome> {
        let now = now_ms();
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(&message.room) else {
            return Ok(AppendOutcome::NoRoom);
        };
        if !rs.members.contains_key(&message.user.id) {
            return Ok(AppendOutcome::NotMember);
        }
        let dedupe_key = client_msg_id.map(|c| (message.user.id.clone(), c.to_owned()));
        if let Some(key) = &dedupe_key
            && let Some((id, expires)) = rs.dedupe.get(key)
            && *expires > now
        {
            let prior = rs
                .messages
                .get(id)
                .filter(|(_, exp)| *exp > now)
                .map(|(env, _)| codec::decode_message(env))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // When the original expired, the key is free again.
            if let Some(m) = prior {
                return Ok(AppendOutcome::Duplicate(m));
            }
        }
        Ok(self.append_fresh(rs, message, dedupe_key, now))
    }

    async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let now = now_ms();
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(HistoryPage {
                messages: Vec::new(),
                has_more: false,
            });
        };
        let upper = before.unwrap_or(u64::MAX);
        let mut newest_first = Vec::with_capacity(limit + 1);
        for (_, id) in rs.by_seq.range(..upper).rev() {
            let Some((env, expires)) = rs.messages.get(id) else {
                continue;
            };
            if *expires <= now {
                continue;
            }
            newest_first.push(env);
            if newest_first.len() > limit {
                break;
            }
        }
        let has_more = newest_first.len() > limit;
        newest_first.truncate(limit);
        let mut messages = newest_first
            .into_iter()
            .map(|env| codec::decode_message(env))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        messages.reverse();
        Ok(HistoryPage { messages, has_more })
    }

    async fn events_since(&self, room: &str, since: u64) -> StoreResult<Replay> {
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(Replay {
                events: Vec::new(),
                last_seq: 0,
                complete: true,
            });
        };
        let events: Vec<Vec<u8>> = rs
            .events
            .iter()
            .filter(|(seq, _)| *seq > since)
            .map(|(_, env)| env.clone())
            .collect();
        let last_seq = rs.room.last_seq;
        let first = rs.events.iter().map(|(s, _)| *s).find(|s| *s > since);
        let complete = since >= last_seq || first == Some(since + 1);
        Ok(Replay {
            events,
            last_seq,
            complete,
        })
    }
}

impl MemoryStore {
    fn append_fresh(
        &self,
        rs: &mut RoomState,
        message: &Message,
        dedupe_key: Option<(String, String)>,
        now: u64,
    ) -> AppendOutcome {
        let mut stored = message.clone();
        stored.seq = 0;
        let seq = self
            .inner
            .append_event(rs, Event::MessageCreated(stored.clone()));
        if let Some(key) = dedupe_key {
            rs.dedupe.retain(|_, (_, exp)| *exp > now);
            let expires = now + self.inner.settings.dedupe_ttl.as_millis() as u64;
            rs.dedupe.insert(key, (message.id.clone(), expires));
        }
        stored.seq = seq;
        AppendOutcome::Appended(stored)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn open(&self, session: &SessionRecord, ttl: Duration) -> StoreResult<()> {
        let expires = now_ms() + ttl.as_millis() as u64;
        let mut st = self.state();
        st.sessions
            .insert(session.conn.clone(), (session.clone(), expires));
        st.user_sessions
            .entry(session.user.id.clone())
            .or_default()
            .insert(session.conn.clone());
        Ok(())
    }

    async fn session(&self, conn: &str) -> StoreResult<Option<SessionRecord>> {
        let now = now_ms();
        Ok(self
            .state()
            .sessions
            .get(conn)
            .filter(|(_, exp)| *exp > now)
            .map(|(s, _)| s.clone()))
    }

    async fn user_sessions(&self, user: &str) -> StoreResult<Vec<String>> {
        let now = now_ms();
        let st = self.state();
        let mut conns: Vec<String> = st
            .user_sessions
            .get(user)
            .into_iter()
            .flatten()
            .filter(|c| st.sessions.get(*c).is_some_and(|(_, exp)| *exp > now))
            .cloned()
            .collect();
        conns.sort();
        Ok(conns)
    }

    async fn close(&self, conn: &str, user: &str) -> StoreResult<()> {
        let mut st = self.state();
        st.sessions.remove(conn);
        if let Some(set) = st.user_sessions.get_mut(user) {
            set.remove(conn);
            if set.is_empty() {
                st.user_sessions.remove(user);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let now = now_ms();
        Ok(self
            .state()
            .cache
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        let now = now_ms();
        let mut st = self.state();
        st.cache.retain(|_, (_, exp)| *exp > now);
        st.cache.insert(
            key.to_owned(),
            (value.to_vec(), now + ttl.as_millis() as u64),
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.state().cache.remove(key);
        Ok(())
    }
}

#[async_trait]
impl StoreHealth for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
