//! The hub: this node's registry of which local connections joined which
//! room, and the local fan-out of received events.
//!
//! The bus hands every received envelope to `Hub::deliver` (the hub is the
//! node's `EventSink`). The envelope is decoded once and rendered once to a
//! whole WebSocket frame; that `RoomFrame` (reference-counted) is then
//! queued to every local connection of the room without copying. Queues are
//! bounded: a connection whose queue is full is a slow consumer and is closed
//! with 1013 rather than buffered without bound.
//!
//! The registry is a `std::sync::RwLock`: fan-out takes the read lock for the
//! length of a loop of `try_send`s and never awaits; attach and detach take
//! the write lock briefly and cost O(1) whatever the room's size (a room's
//! recipients are a vector for the fan-out loop plus each connection's index
//! in it).
//!
//! Read state (protocol 1.1): a `read` event is for one user's own
//! connections, whatever rooms they joined. It arrives on the user's channel
//! (`EventSink::deliver_to_user`), carrying the connection that moved the
//! position (by `room.read` or by sending); the hub hands it to every local
//! connection of the user but that one. The hub therefore also keeps each
//! user's local connections (from hello to close: `attach_user`), and the
//! node holds the user's channel for as long (the services'
//! `UserSubscription`). A `read` event received on a room's channel (as
//! nodes before per-user channels published it) still goes only to the
//! user's connections.
//!
//! Removals told late (`resync`): ephemeral events (`member.removed`,
//! `room.closed`) are not in the room's log, so a node whose pub/sub lost one
//! would keep a removed user's connections attached. After the bus repairs
//! a room it calls `EventSink::resynced`; the hub then re-checks its local
//! connections of the room against the store and removes those that no
//! longer belong, exactly as if it had received the event (with the system
//! user as `by`).
//!
//! A connection reaches the hub through a `HubListener`, the gateway's
//! implementation of the services' `Listener`: the services' room
//! subscription attaches and detaches it, so the order "receive the room's
//! events, then read the snapshot" is kept in one place.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::error::close;
use crate::events::{EventLog, EventSink};
use crate::metrics::Metrics;
use crate::model::{Event, now_us};
use crate::protocol;
use crate::service::Listener;

use super::queue::{self, TrySendError};
use super::wire;

mod resync;

/// What a connection is asked to send, in order. Kept small (16 bytes):
/// every connection's queue keeps blocks of 32 slots, so all but the
/// one-word variants are boxed (they are rare: one per request or join).
#[derive(Debug)]
pub enum Outbound {
    /// Send a reply or error frame (a whole WebSocket frame).
    Frame(Box<Bytes>),
    /// Send an event of a room, unless its seq is already covered.
    Event(Arc<RoomFrame>),
    /// A join of the room started: hold its events until `Joined`.
    Pending(Box<Arc<str>>),
    /// The join snapshot: send its reply, then the held events above its
    /// floor.
    Joined(Box<Snapshot>),
    /// The connection left the room: drop its events from now on.
    Left(Box<Arc<str>>),
    /// An event for the connection's user (a `read` event), sent whatever
    /// rooms the connection joined.
    Direct(Arc<RoomFrame>),
    /// The connection was removed from the room (kicked, banned, or the
    /// room closed), after its `member.removed` or `room.closed` frame:
    /// drop the room's events from now on and let the connection forget
    /// the room.
    Removed(Box<Arc<str>>),
    /// Close the connection with this code after what is queued.
    Close(u16),
}

/// One event as every local recipient gets it: rendered once per node.
#[derive(Debug)]
pub struct RoomFrame {
    /// Room id.
    pub room: Arc<str>,
    /// Durable seq, 0 for ephemeral events.
    pub seq: u64,
    /// The whole WebSocket frame (header and JSON).
    pub frame: Bytes,
}

/// A join's reply and where its snapshot ends.
#[derive(Debug)]
pub struct Snapshot {
    /// Room id.
    pub room: Arc<str>,
    /// Highest seq the snapshot covers.
    pub floor: u64,
    /// The `room.join`/`room.create` reply frame; `None` for a join without
    /// a request id, or one that failed while already joined.
    pub reply: Option<Bytes>,
}

/// How a connection is told to stop, from any task, with a close code.
#[derive(Debug, Default)]
pub struct Kill {
    code: AtomicU16,
    token: CancellationToken,
}

impl Kill {
    /// Asks the connection to close with `code`. The first code wins;
    /// returns whether this call was the first.
    pub fn kill(&self, code: u16) -> bool {
        let first = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.token.cancel();
        first
    }

    /// The close code asked for, if any.
    pub fn code(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }

    /// Resolves once the connection is asked to close.
    pub async fn killed(&self) {
        self.token.cancelled().await
    }

    /// Whether the connection was asked to close.
    pub fn is_killed(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// A local connection as the hub sees it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Node-local connection number.
    pub id: u64,
    /// The connection's bounded outbound queue.
    pub tx: queue::Sender<Outbound>,
    /// Closes it when the queue is full.
    pub kill: Arc<Kill>,
    /// The connection's session id: a `read` event skips the connection
    /// that sent `room.read`.
    pub conn: Arc<str>,
    /// The user id, once `hello` said who: a `member.removed` for them
    /// detaches this connection, and `read` events go to the user's own
    /// connections only.
    pub user: Arc<OnceLock<Box<str>>>,
}

impl Subscriber {
    /// Whether this connection is `id`'s.
    fn is_user(&self, id: &str) -> bool {
        self.user.get().is_some_and(|u| **u == *id)
    }
}

/// Who gets a frame among a room's local recipients.
enum Audience<'a> {
    /// Everyone.
    All,
    /// `user`'s connections except `except` (a `read` event).
    Own {
        /// The user.
        user: &'a str,
        /// The connection that asked.
        except: &'a str,
    },
}

/// A room's local recipients.
#[derive(Debug, Default)]
struct Recipients {
    /// In no particular order: what the fan-out loop walks.
    subs: Vec<Subscriber>,
    /// When each of `subs` was attached (same places): a resync re-checks
    /// only connections whose join cannot still be in flight.
    attached: Vec<Instant>,
    /// Connection number → its place in `subs`, for O(1) attach and detach.
    index: HashMap<u64, usize>,
}

impl Recipients {
    /// Adds `sub` unless it is there already.
    fn insert(&mut self, sub: Subscriber) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.index.entry(sub.id) {
            slot.insert(self.subs.len());
            self.subs.push(sub);
            self.attached.push(Instant::now());
        }
    }

    /// Removes connection `id`: the last recipient takes its place.
    fn remove(&mut self, id: u64) {
        let Some(at) = self.index.remove(&id) else {
            return;
        };
        self.subs.swap_remove(at);
        self.attached.swap_remove(at);
        if let Some(moved) = self.subs.get(at) {
            self.index.insert(moved.id, at);
        }
    }

    fn len(&self) -> usize {
        self.subs.len()
    }
}

/// The local fan-out.
pub struct Hub {
    /// Room → its local recipients.
    rooms: RwLock<HashMap<Arc<str>, Recipients>>,
    /// User → their local connections that said hello (few per user).
    users: RwLock<HashMap<Box<str>, Vec<Subscriber>>>,
    /// Fan-out latency, deliveries, slow consumers.
    metrics: Arc<Metrics>,
    /// Itself, for the resync checks it spawns.
    me: Weak<Hub>,
    /// How long a connection must have been attached before a resync may
    /// remove it: a join's store call (the Redis timeout) may still be in
    /// flight before.
    grace: Duration,
    /// Bounds the resync checks reading the store at once.
    checks: Semaphore,
    /// Rooms with a resync check waiting (one per room at a time).
    pending: Mutex<HashSet<Arc<str>>>,
}

impl Hub {
    /// An empty hub. `grace`: how long a connection is attached before a
    /// resync may re-check it (the store timeout).
    pub fn new(metrics: Arc<Metrics>, grace: Duration) -> Arc<Hub> {
        Arc::new_cyclic(|me| Hub {
            rooms: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
            metrics,
            me: me.clone(),
            grace,
            checks: Semaphore::new(resync::CONCURRENCY),
            pending: Mutex::new(HashSet::new()),
        })
    }

    /// Adds a connection to a room's local recipients (idempotent).
    pub fn attach(&self, room: &Arc<str>, sub: Subscriber) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room.clone()).or_default().insert(sub);
    }

    /// Removes a connection from a room's local recipients.
    pub fn detach(&self, room: &str, id: u64) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        if let Some(recipients) = rooms.get_mut(room) {
            recipients.remove(id);
            if recipients.len() == 0 {
                rooms.remove(room);
            }
        }
    }

    /// Adds a connection to `user`'s local connections (idempotent).
    pub fn attach_user(&self, user: &str, sub: Subscriber) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let subs = users.entry(Box::from(user)).or_default();
        if subs.iter().all(|s| s.id != sub.id) {
            subs.push(sub);
        }
    }

    /// Removes a connection from `user`'s local connections.
    pub fn detach_user(&self, user: &str, id: u64) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = users.get_mut(user) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Local connections of a user (that said hello and are open).
    pub fn user_count(&self, user: &str) -> usize {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(user).map_or(0, Vec::len)
    }

    /// Local connections joined to a room.
    pub fn local_count(&self, room: &str) -> usize {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).map_or(0, Recipients::len)
    }
}

impl EventSink for Hub {
    fn deliver(&self, room: &str, envelope: &[u8]) {
        if self.local_count(room) == 0 {
            return;
        }
        let env = match codec::decode(envelope) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(room, error = %e, "dropping undecodable event");
                return;
            }
        };
        let now = now_us();
        if env.published_us > 0 && now >= env.published_us {
            self.metrics
                .fanout_latency
                .observe((now - env.published_us) as f64 / 1e6);
        }
        self.fan_out(room, env.seq, &env.event, None);
    }

    fn deliver_to_user(&self, user: &str, room: &str, envelope: &[u8]) {
        if self.user_count(user) == 0 {
            return;
        }
        let event = match codec::decode(envelope) {
            Ok(env) => env.event,
            Err(e) => {
                tracing::warn!(user, room, error = %e, "dropping an undecodable user event");
                return;
            }
        };
        // The connection that moved a read position already knows it.
        let except = match &event {
            Event::Read { conn, .. } => Some(conn.as_str()),
            _ => None,
        };
        let frame = Arc::new(RoomFrame {
            room: Arc::from(room),
            seq: 0,
            frame: wire::text_frame(&protocol::event_frame(room, 0, &event)),
        });
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        let mut delivered = 0u64;
        for sub in users.get(user).into_iter().flatten() {
            if except.is_some_and(|conn| *sub.conn == *conn) {
                continue;
            }
            delivered += self.queue(sub, room, Outbound::Direct(frame.clone()));
        }
        self.metrics.events_delivered.inc_by(delivered);
    }

    fn resynced(&self, room: &str, log: &Arc<dyn EventLog>) {
        self.schedule_resync(room, log);
    }
}

impl Hub {
    /// Queues `event` of `room` to its local connections (only those in
    /// `only`, when given) and applies a removal to them.
    fn fan_out(&self, room: &str, seq: u64, event: &Event, only: Option<&HashSet<u64>>) {
        let picked = |sub: &Subscriber| only.is_none_or(|ids| ids.contains(&sub.id));
        let frame = wire::text_frame(&protocol::event_frame(room, seq, event));
        let audience = match event {
            Event::Read { user, conn, .. } => Audience::Own { user, except: conn },
            _ => Audience::All,
        };
        // A removal: who of the room's local connections is cut off after
        // this frame (`Some(None)`: everyone, the room is closed).
        let removed: Option<Option<&str>> = match event {
            Event::MemberRemoved { user, .. } => Some(Some(user.id.as_str())),
            Event::RoomClosed { .. } => Some(None),
            _ => None,
        };
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        let Some((key, recipients)) = rooms.get_key_value(room) else {
            return;
        };
        let shared = Arc::new(RoomFrame {
            room: key.clone(),
            seq,
            frame,
        });
        let mut delivered = 0u64;
        for sub in &recipients.subs {
            if !picked(sub) {
                continue;
            }
            if let Audience::Own { user, except } = audience
                && (!sub.is_user(user) || &*sub.conn == except)
            {
                continue;
            }
            delivered += self.push(sub, room, &shared);
        }
        self.metrics.events_delivered.inc_by(delivered);
        let Some(target) = removed else {
            return;
        };
        let cut: Vec<&Subscriber> = recipients
            .subs
            .iter()
            .filter(|sub| picked(sub) && target.is_none_or(|user| sub.is_user(user)))
            .collect();
        if cut.is_empty() {
            return;
        }
        let ids: Vec<u64> = cut.iter().map(|sub| sub.id).collect();
        for sub in cut {
            if let Err(TrySendError::Full(_)) =
                sub.tx.try_send(Outbound::Removed(Box::new(key.clone())))
                && sub.kill.kill(close::SLOW)
            {
                self.metrics.slow_consumers.inc();
            }
        }
        drop(rooms);
        for id in ids {
            self.detach(room, id);
        }
        tracing::debug!(room, user = target.unwrap_or("*"), "removed from the room");
    }

    /// Queues `frame` to `sub`; 1 when queued. A full queue closes the
    /// slow consumer.
    fn push(&self, sub: &Subscriber, room: &str, frame: &Arc<RoomFrame>) -> u64 {
        self.queue(sub, room, Outbound::Event(frame.clone()))
    }

    /// Queues `out` to `sub`; 1 when queued. A full queue closes the slow
    /// consumer.
    fn queue(&self, sub: &Subscriber, room: &str, out: Outbound) -> u64 {
        match sub.tx.try_send(out) {
            Ok(()) => 1,
            Err(TrySendError::Full(_)) => {
                if sub.kill.kill(close::SLOW) {
                    self.metrics.slow_consumers.inc();
                    tracing::info!(conn = sub.id, room, "slow consumer closed");
                }
                0
            }
            Err(TrySendError::Closed(_)) => 0,
        }
    }
}

/// One connection's place in the hub, as the services' room subscriptions
/// see it.
pub struct HubListener {
    /// The node's hub.
    hub: Arc<Hub>,
    /// The connection.
    sub: Subscriber,
}

impl HubListener {
    /// The listener of connection `sub`.
    pub fn new(hub: Arc<Hub>, sub: Subscriber) -> HubListener {
        HubListener { hub, sub }
    }
}

impl Listener for HubListener {
    fn attach(&self, room: &Arc<str>) {
        self.hub.attach(room, self.sub.clone());
    }

    fn detach(&self, room: &str) {
        self.hub.detach(room, self.sub.id);
    }

    fn attach_user(&self, user: &str) {
        self.hub.attach_user(user, self.sub.clone());
    }

    fn detach_user(&self, user: &str) {
        self.hub.detach_user(user, self.sub.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, User};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    fn user() -> User {
        User {
            id: "u".into(),
            name: "Ann".into(),
            image: None,
        }
    }

    fn sub(id: u64, cap: usize) -> (Subscriber, queue::Receiver<Outbound>) {
        let (tx, rx) = queue::channel(cap);
        (
            Subscriber {
                id,
                tx,
                kill: Arc::new(Kill::default()),
                conn: Arc::from(format!("c{id}")),
                user: Arc::new(OnceLock::new()),
            },
            rx,
        )
    }

    #[test]
    fn one_frame_shared_by_every_recipient() {
        let hub = Hub::new(Arc::new(Metrics::new()), Duration::ZERO);
        let room: Arc<str> = Arc::from("r1");
        let (a, mut ra) = sub(1, 4);
        let (b, mut rb) = sub(2, 4);
        hub.attach(&room, a);
        hub.attach(&room, b.clone());
        hub.attach(&room, b);
        assert_eq!(hub.local_count("r1"), 2);
        hub.deliver(
            "r1",
            &codec::encode(0, &Event::ParticipantJoined(user()), 1),
        );
        let (Some(Outbound::Event(fa)), Some(Outbound::Event(fb))) =
            (ra.try_recv().ok(), rb.try_recv().ok())
        else {
            panic!("both get the event")
        };
        assert!(Arc::ptr_eq(&fa, &fb), "one rendering, shared");
        let mut cursor = std::io::Cursor::new(&fa.frame[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final && header.mask.is_none());
        assert_eq!(header.opcode, OpCode::Data(Data::Text));
        let text = std::str::from_utf8(&fa.frame[cursor.position() as usize..]).unwrap();
        assert_eq!(len as usize, text.len());
        assert!(text.contains("participant.joined"));
        hub.detach("r1", 1);
        hub.detach("r1", 2);
        assert_eq!(hub.local_count("r1"), 0);
    }

    #[test]
    fn full_queue_closes_the_slow_consumer_only() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(metrics.clone(), Duration::ZERO);
        let room: Arc<str> = Arc::from("r1");
        let (slow, _keep) = sub(1, 1);
        let (fast, mut rf) = sub(2, 8);
        let slow_kill = slow.kill.clone();
        hub.attach(&room, slow);
        hub.attach(&room, fast);
        for _ in 0..3 {
            hub.deliver("r1", &codec::encode(0, &Event::ParticipantLeft(user()), 1));
        }
        assert_eq!(slow_kill.code(), Some(close::SLOW));
        assert_eq!(metrics.slow_consumers.get(), 1);
        let mut got = 0;
        while rf.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 3);
    }

    #[test]
    fn detach_keeps_every_other_recipient() {
        let hub = Hub::new(Arc::new(Metrics::new()), Duration::ZERO);
        let room: Arc<str> = Arc::from("r1");
        let mut queues = Vec::new();
        for id in 0..6 {
            let (s, rx) = sub(id, 4);
            hub.attach(&room, s);
            queues.push(rx);
        }
        // First, middle, last and an unknown id: the moved ones stay found.
        for id in [0, 3, 5, 42] {
            hub.detach("r1", id);
        }
        assert_eq!(hub.local_count("r1"), 3);
        hub.deliver("r1", &codec::encode(0, &Event::ParticipantLeft(user()), 1));
        let got: Vec<u64> = (0..6)
            .filter(|&id| queues[id as usize].try_recv().is_ok())
            .collect();
        assert_eq!(got, [1, 2, 4]);
        for id in [1, 2, 4] {
            hub.detach("r1", id);
        }
        assert_eq!(hub.local_count("r1"), 0);
        assert!(
            hub.rooms.read().expect("lock").is_empty(),
            "empty rooms are dropped"
        );
    }

    fn frame_text(out: Outbound) -> String {
        let Outbound::Event(f) = out else {
            panic!("an event")
        };
        let mut cursor = std::io::Cursor::new(&f.frame[..]);
        FrameHeader::parse(&mut cursor).unwrap().unwrap();
        String::from_utf8(f.frame[cursor.position() as usize..].to_vec()).unwrap()
    }

    #[test]
    fn a_read_event_goes_to_the_users_other_connections_only() {
        let hub = Hub::new(Arc::new(Metrics::new()), Duration::ZERO);
        let room: Arc<str> = Arc::from("r1");
        let mut queues = Vec::new();
        // 0 and 1: Ann (1 sent room.read); 2: Bob; 3: no hello yet.
        for (id, who) in [
            (0, Some("ann")),
            (1, Some("ann")),
            (2, Some("bob")),
            (3, None),
        ] {
            let (s, rx) = sub(id, 4);
            if let Some(who) = who {
                s.user.set(Box::from(who)).unwrap();
            }
            hub.attach(&room, s);
            queues.push(rx);
        }
        let read = Event::Read {
            user: "ann".into(),
            conn: "c1".into(),
            read_seq: 7,
        };
        hub.deliver("r1", &codec::encode(0, &read, 1));
        let text = frame_text(queues[0].try_recv().expect("Ann's other tab"));
        assert_eq!(
            text,
            r#"{"type":"event","room":"r1","event":"read","read_seq":7}"#
        );
        for q in &mut queues[1..] {
            assert!(q.try_recv().is_err(), "not the asking tab, nor anyone else");
        }

        // Every other event still goes to everyone.
        hub.deliver("r1", &codec::encode(0, &Event::ParticipantLeft(user()), 1));
        for q in &mut queues {
            assert!(frame_text(q.try_recv().expect("everyone")).contains("participant.left"));
        }
    }

    #[test]
    fn a_user_event_goes_to_the_users_other_connections_whatever_they_joined() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(metrics.clone(), Duration::ZERO);
        let mut queues = Vec::new();
        // 0, 1, 2: Ann's (1 sent room.read; none joined the room); 3: Bob.
        for (id, who) in [(0, "ann"), (1, "ann"), (2, "ann"), (3, "bob")] {
            let (s, rx) = sub(id, 4);
            hub.attach_user(who, s.clone());
            hub.attach_user(who, s);
            queues.push(rx);
        }
        assert_eq!(hub.user_count("ann"), 3, "attaching twice is once");
        let read = Event::Read {
            user: "ann".into(),
            conn: "c1".into(),
            read_seq: 7,
        };
        hub.deliver_to_user("ann", "r1", &codec::encode(0, &read, 1));
        for id in [0, 2] {
            let Ok(Outbound::Direct(f)) = queues[id].try_recv() else {
                panic!("Ann's other tab {id} is told");
            };
            assert_eq!(&*f.room, "r1");
            let mut cursor = std::io::Cursor::new(&f.frame[..]);
            FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(
                &f.frame[cursor.position() as usize..],
                br#"{"type":"event","room":"r1","event":"read","read_seq":7}"#
            );
        }
        assert!(queues[1].try_recv().is_err(), "not the asking tab");
        assert!(queues[3].try_recv().is_err(), "not Bob");
        assert_eq!(metrics.events_delivered.get(), 2);

        // Closed connections are forgotten; the last takes the user along.
        hub.detach_user("ann", 0);
        hub.detach_user("ann", 2);
        hub.deliver_to_user("ann", "r1", &codec::encode(0, &read, 1));
        assert!(queues[0].try_recv().is_err());
        hub.detach_user("ann", 1);
        hub.detach_user("ann", 1);
        assert_eq!(hub.user_count("ann"), 0);
        assert!(!hub.users.read().expect("lock").contains_key("ann"));
        hub.deliver_to_user("nobody", "r1", b"not even an envelope");
    }

    #[test]
    fn a_removal_detaches_the_removed_users_connections_only() {
        let hub = Hub::new(Arc::new(Metrics::new()), Duration::ZERO);
        let room: Arc<str> = Arc::from("r1");
        let (a, mut ra) = sub(1, 8);
        let (b, mut rb) = sub(2, 8);
        let _ = a.user.set("bob".into());
        let _ = b.user.set("ann".into());
        hub.attach(&room, a);
        hub.attach(&room, b);
        let removed = Event::MemberRemoved {
            user: User {
                id: "bob".into(),
                name: "Bob".into(),
                image: None,
            },
            by: user(),
            reason: None,
            banned_until: None,
        };
        hub.deliver("r1", &codec::encode(0, &removed, 1));
        assert!(
            matches!(ra.try_recv(), Ok(Outbound::Event(_))),
            "the frame first"
        );
        assert!(matches!(ra.try_recv(), Ok(Outbound::Removed(r)) if *r == room));
        assert!(
            matches!(rb.try_recv(), Ok(Outbound::Event(_))),
            "the room sees it"
        );
        assert!(rb.try_recv().is_err(), "ann stays");
        assert_eq!(hub.local_count("r1"), 1);
        hub.deliver("r1", &codec::encode(0, &Event::ParticipantLeft(user()), 1));
        assert!(ra.try_recv().is_err(), "nothing more for bob");
        assert!(rb.try_recv().is_ok());
        // A close cuts everyone off.
        hub.deliver(
            "r1",
            &codec::encode(0, &Event::RoomClosed { by: user() }, 1),
        );
        assert!(matches!(rb.try_recv(), Ok(Outbound::Event(_))));
        assert!(matches!(rb.try_recv(), Ok(Outbound::Removed(_))));
        assert_eq!(hub.local_count("r1"), 0);
    }

    #[test]
    fn queue_slots_stay_small() {
        assert!(std::mem::size_of::<Outbound>() <= 16);
    }

    #[test]
    fn kill_keeps_the_first_code() {
        let k = Kill::default();
        assert!(k.kill(4001));
        assert!(!k.kill(1013));
        assert_eq!(k.code(), Some(4001));
        assert!(k.is_killed());
    }
}
