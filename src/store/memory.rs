//! The in-memory engine: every repository in one process, for a single node
//! without Redis and for fast tests.
//!
//! One `std::sync::Mutex` guards all state; it is never held across an
//! `.await` (no method awaits while holding it). Durable events are handed
//! to the local `EventSink` while the lock is held, so delivery order equals
//! seq order exactly as with the Redis scripts. Expiry is lazy: expired
//! messages, sessions and cache entries are skipped when read and dropped
//! when next written.
//!
//! `state` holds the state types and shared helpers; the repositories are
//! here and in `cache`, `crowd`, `limits`, `log`, `moderation`, `reads`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AppendOutcome, Backlog, Change, Coalesced, CreateOutcome, Entry, HistoryPage, JoinOutcome,
    LeaveOutcome, MemberPage, MessageStore, ModerationStore, ReplaceOutcome, Replay, RoomSnapshot,
    RoomStore, ScanCap, SessionRecord, SessionStore, StoreError, StoreResult, StoreSettings,
    StoredMessage,
};
use crate::codec;
use crate::events::{EventLog, EventSink};
use crate::model::{Event, Message, Participant, Room, User, now_ms};

/// The in-memory engine. Cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

mod cache;
mod crowd;
mod limits;
mod log;
mod moderation;
mod reads;
mod state;

pub use state::Clock;
use state::{Inner, Member, RoomState, State, decode_stored, room_view, trim_expired};

impl MemoryStore {
    /// A new, empty store that hands durable events to `sink`.
    pub fn new(settings: StoreSettings, sink: Arc<dyn EventSink>) -> MemoryStore {
        MemoryStore::with_clock(settings, sink, Arc::new(now_ms))
    }

    /// Like `new`, reading the time from `clock`.
    pub fn with_clock(
        settings: StoreSettings,
        sink: Arc<dyn EventSink>,
        clock: Clock,
    ) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                settings,
                sink,
                clock,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Now, Unix ms, by the store's clock.
    fn now(&self) -> u64 {
        self.inner.now()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep
        // serving rather than poisoning every later request.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
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
            last_activity: self.now(),
            members: HashMap::new(),
            by_seq: BTreeMap::new(),
            messages: HashMap::new(),
            events: VecDeque::new(),
            dedupe: HashMap::new(),
            moderation: moderation::Moderation::default(),
            reads: reads::RoomReads::default(),
        };
        rs.members.insert(
            creator.id.clone(),
            Member {
                user: creator.clone(),
                conns: HashSet::from([conn.to_owned()]),
                joined_at: self.now(),
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

    async fn join_by(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
        entry: Entry,
    ) -> StoreResult<JoinOutcome> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(JoinOutcome::NoRoom);
        };
        let now = self.inner.now();
        if let Some(until) = rs.moderation.banned_until(&user.id, now) {
            return Ok(JoinOutcome::Banned { until });
        }
        if let Some(member) = rs.members.get_mut(&user.id) {
            member.conns.insert(conn.to_owned());
            member.joined_at = now;
            return Ok(JoinOutcome::Joined {
                first: false,
                announced: false,
            });
        }
        if entry == Entry::ById && rs.room.private {
            return Ok(JoinOutcome::Private);
        }
        if rs.members.len() >= rs.room.max_participants as usize {
            return Ok(JoinOutcome::Full);
        }
        rs.members.insert(
            user.id.clone(),
            Member {
                user: user.clone(),
                conns: HashSet::from([conn.to_owned()]),
                joined_at: now,
            },
        );
        let count = rs.members.len() as u32;
        if count > super::BIG_ROOM {
            rs.last_activity = now;
            return Ok(JoinOutcome::JoinedQuietly { count });
        }
        self.inner
            .append_event(rs, Event::MessageCreated(note.clone()));
        Ok(JoinOutcome::Joined {
            first: true,
            announced: false,
        })
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
            return Ok(LeaveOutcome::Left {
                last: false,
                announced: false,
            });
        }
        let before = rs.members.len() as u32;
        rs.members.remove(&user.id);
        if before > super::BIG_ROOM {
            rs.last_activity = self.now();
            return Ok(LeaveOutcome::LeftQuietly { count: before - 1 });
        }
        self.inner
            .append_event(rs, Event::MessageCreated(note.clone()));
        Ok(LeaveOutcome::Left {
            last: true,
            announced: false,
        })
    }

    async fn participants(&self, room: &str) -> StoreResult<Vec<User>> {
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(Vec::new());
        };
        let mut users: Vec<User> = rs.members.values().map(|m| m.user.clone()).collect();
        super::sort_users(&mut users);
        Ok(users)
    }

    async fn roster(&self, room: &str, limit: usize) -> StoreResult<Vec<User>> {
        Ok(self.read_roster(room, limit))
    }

    async fn snapshot(
        &self,
        room: &str,
        limit: usize,
        backlog: Backlog,
    ) -> StoreResult<Option<RoomSnapshot>> {
        // The same reads as the separate calls, in the order a join made
        // them before (the room, the roster and standings, the replay).
        let Some(found) = RoomStore::room(self, room).await? else {
            return Ok(None);
        };
        let users = self.read_roster(room, limit);
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let standings = ModerationStore::standings(self, room, &ids).await?;
        let participants = users
            .into_iter()
            .zip(standings)
            .map(|(user, s)| Participant {
                user,
                role: s.role,
                muted_until: s.muted_until,
            })
            .collect();
        let (replay, messages) = match backlog {
            Backlog::Since(since) => (Some(self.events_since(room, since).await?), Vec::new()),
            Backlog::Newest(n) => {
                let page = self.history(room, Some(found.last_seq + 1), n).await?;
                (None, page.messages)
            }
        };
        Ok(Some(RoomSnapshot {
            room: found,
            participants,
            replay,
            messages,
        }))
    }

    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<MemberPage> {
        Ok(self.read_members(room, after, limit))
    }

    async fn participants_changed(
        &self,
        room: &str,
        changes: &[Change],
        window: Duration,
    ) -> StoreResult<Coalesced> {
        Ok(self.coalesce_changes(room, changes, window))
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

    async fn online(&self, room: &str) -> StoreResult<Vec<User>> {
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(Vec::new());
        };
        let mut users: Vec<User> = rs
            .members
            .values()
            .filter(|m| !m.conns.is_empty())
            .map(|m| m.user.clone())
            .collect();
        super::sort_users(&mut users);
        Ok(users)
    }

    async fn set_typing(
        &self,
        room: &str,
        user: &str,
        active: bool,
        ttl: Duration,
        repeat: Duration,
    ) -> StoreResult<bool> {
        let now = self.now();
        let mut st = self.state();
        st.typing.retain(|_, (exp, _)| *exp > now);
        let key = (room.to_owned(), user.to_owned());
        if !active {
            st.typing.remove(&key);
            return Ok(true);
        }
        let expires = now + ttl.as_millis() as u64;
        match st.typing.get_mut(&key) {
            Some((exp, told)) if now < *told + repeat.as_millis() as u64 => {
                *exp = expires;
                Ok(false)
            }
            _ => {
                st.typing.insert(key, (expires, now));
                Ok(true)
            }
        }
    }

    async fn idle_rooms(&self, before_ms: u64, limit: usize) -> StoreResult<Vec<String>> {
        let st = self.state();
        let mut idle: Vec<(u64, String)> = st
            .rooms
            .values()
            .filter(|r| r.last_activity < before_ms)
            .map(|r| (r.last_activity, r.room.id.clone()))
            .collect();
        idle.sort();
        Ok(idle.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn close_room(&self, room: &str, before_ms: u64) -> StoreResult<bool> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(false);
        };
        if rs.last_activity >= before_ms || rs.members.values().any(|m| !m.conns.is_empty()) {
            return Ok(false);
        }
        let code = rs.room.code.clone();
        st.rooms.remove(room);
        st.changes.remove(room);
        if st.codes.get(&code).is_some_and(|id| id == room) {
            st.codes.remove(&code);
        }
        Ok(true)
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn append(
        &self,
        message: &Message,
        client_msg_id: Option<&str>,
    ) -> StoreResult<AppendOutcome> {
        let now = self.now();
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
        // After the duplicate check: a retry of a send stored before the
        // mute gets the stored message, as any retry does.
        if let Some(until) = rs.moderation.muted_until(&message.user.id, now) {
            return Ok(AppendOutcome::Muted(until));
        }
        Ok(self.append_fresh(rs, message, dedupe_key, now))
    }

    async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let now = self.now();
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(HistoryPage {
                messages: Vec::new(),
                has_more: false,
            });
        };
        trim_expired(rs, now);
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
        super::decode_replay(self.envelopes_since(room, since).await?)
    }

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<StoredMessage>> {
        let now = self.now();
        let st = self.state();
        let Some((raw, _)) = st
            .rooms
            .get(room)
            .and_then(|rs| rs.messages.get(id))
            .filter(|(_, exp)| *exp > now)
        else {
            return Ok(None);
        };
        Ok(Some(StoredMessage {
            message: decode_stored(raw)?,
            raw: raw.clone(),
        }))
    }

    async fn replace(
        &self,
        room: &str,
        expected: &[u8],
        event: &Event,
    ) -> StoreResult<ReplaceOutcome> {
        let Some(m) = event.message() else {
            return Err(StoreError::Corrupt(format!(
                "replace takes a message event, not {}",
                event.name()
            )));
        };
        let now = self.now();
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ReplaceOutcome::Gone);
        };
        match rs.messages.get(&m.id) {
            None => return Ok(ReplaceOutcome::Gone),
            Some((_, exp)) if *exp <= now => return Ok(ReplaceOutcome::Gone),
            Some((raw, _)) if raw.as_slice() != expected => return Ok(ReplaceOutcome::Changed),
            Some(_) => {}
        }
        if let Event::MessageUpdated(edited) = event
            && let Some(until) = rs.moderation.muted_until(&edited.user.id, now)
        {
            return Ok(ReplaceOutcome::Muted(until));
        }
        let seq = self.inner.append_event(rs, event.clone());
        if let Event::MessageDeleted(m) = event {
            rs.reads.gone(m.seq);
        }
        Ok(ReplaceOutcome::Replaced(seq))
    }

    async fn search(
        &self,
        room: &str,
        words: &[String],
        limit: usize,
        scan: ScanCap,
    ) -> StoreResult<Vec<Message>> {
        let now = self.now();
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(Vec::new());
        };
        trim_expired(rs, now);
        let mut found = Vec::new();
        let mut read = 0;
        for (_, id) in rs.by_seq.iter().rev().take(scan.messages) {
            if read >= scan.bytes {
                break;
            }
            let Some((env, _)) = rs.messages.get(id) else {
                continue;
            };
            read += env.len();
            let m = decode_stored(env)?;
            if super::matches_words(&m, words) {
                found.push(m);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
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
        rs.reads.sent(&message.user.id, message.kind, seq);
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
        let expires = self.now() + ttl.as_millis() as u64;
        let mut st = self.state();
        st.sessions
            .insert(session.conn.clone(), (session.clone(), expires));
        st.user_sessions
            .entry(session.user.id.clone())
            .or_default()
            .insert(session.conn.clone());
        st.node_sessions
            .entry(session.instance.clone())
            .or_default()
            .insert(session.conn.clone());
        Ok(())
    }

    async fn session(&self, conn: &str) -> StoreResult<Option<SessionRecord>> {
        let now = self.now();
        Ok(self
            .state()
            .sessions
            .get(conn)
            .filter(|(_, exp)| *exp > now)
            .map(|(s, _)| s.clone()))
    }

    async fn user_sessions(&self, user: &str) -> StoreResult<Vec<String>> {
        let now = self.now();
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
        if let Some((s, _)) = st.sessions.remove(conn)
            && let Some(set) = st.node_sessions.get_mut(&s.instance)
        {
            set.remove(conn);
        }
        st.session_rooms.remove(conn);
        if let Some(set) = st.user_sessions.get_mut(user) {
            set.remove(conn);
            if set.is_empty() {
                st.user_sessions.remove(user);
            }
        }
        Ok(())
    }

    async fn track_room(&self, conn: &str, room: &str, joined: bool) -> StoreResult<()> {
        let mut st = self.state();
        let rooms = st.session_rooms.entry(conn.to_owned()).or_default();
        if joined {
            rooms.insert(room.to_owned());
        } else {
            rooms.remove(room);
        }
        Ok(())
    }

    async fn session_rooms(&self, conn: &str) -> StoreResult<Vec<String>> {
        let mut rooms: Vec<String> = self
            .state()
            .session_rooms
            .get(conn)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        rooms.sort();
        Ok(rooms)
    }

    async fn heartbeat(&self, instance: &str, refresh: Option<Duration>) -> StoreResult<()> {
        let now = self.now();
        let mut st = self.state();
        st.nodes.insert(instance.to_owned(), now);
        if let Some(ttl) = refresh {
            let expires = now + ttl.as_millis() as u64;
            let conns: Vec<String> = st
                .node_sessions
                .get(instance)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for conn in conns {
                if let Some((_, exp)) = st.sessions.get_mut(&conn) {
                    *exp = expires;
                }
            }
        }
        Ok(())
    }

    async fn dead_nodes(&self, before_ms: u64) -> StoreResult<Vec<String>> {
        let mut dead: Vec<String> = self
            .state()
            .nodes
            .iter()
            .filter(|(_, beat)| **beat < before_ms)
            .map(|(n, _)| n.clone())
            .collect();
        dead.sort();
        Ok(dead)
    }

    async fn node_sessions(&self, instance: &str) -> StoreResult<Vec<String>> {
        let mut conns: Vec<String> = self
            .state()
            .node_sessions
            .get(instance)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        conns.sort();
        Ok(conns)
    }

    async fn forget_node(&self, instance: &str) -> StoreResult<()> {
        let mut st = self.state();
        st.nodes.remove(instance);
        st.node_sessions.remove(instance);
        Ok(())
    }

    async fn record_activity(
        &self,
        user: &str,
        messages_sent: u64,
        ttl: Duration,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut st = self.state();
        st.activity.retain(|_, (_, _, expires)| *expires > now);
        let entry = st.activity.entry(user.to_owned()).or_insert((0, 0, 0));
        entry.0 = now;
        entry.1 += messages_sent;
        entry.2 = now + (ttl.as_millis() as u64).max(1);
        Ok(())
    }

    async fn activity(&self, user: &str) -> StoreResult<Option<(u64, u64)>> {
        let now = self.now();
        Ok(self
            .state()
            .activity
            .get(user)
            .filter(|(_, _, expires)| *expires > now)
            .map(|(seen, sent, _)| (*seen, *sent)))
    }
}
