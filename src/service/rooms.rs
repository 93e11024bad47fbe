//! `RoomService`: rooms, membership and the join snapshot.
//!
//! Membership is per connection: a user is a participant while at least one
//! of their connections has joined. The first connection's join writes the
//! "joined" system message and announces `participant.joined`; the last
//! connection's leave (or disconnect) writes "left" and announces
//! `participant.left`. `participant_count` counts distinct users.
//!
//! Big rooms (protocol 1.1): above `BIG_ROOM` participants the store writes
//! no system message and the change goes to `Crowd`, which coalesces it
//! into at most one `participants.changed` per room per second. Join and get
//! replies carry at most `BIG_ROOM` participants (`RoomStore::roster`);
//! `members` pages through everyone.

use std::net::IpAddr;
use std::sync::Arc;

use rand::RngExt;

use super::crowd::Crowd;
use super::limits::Limits;
use super::reads::ReadService;
use super::subscription::{Listener, RoomSubscription};
use super::typing::TYPING_TTL;
use super::{int_field, room_id, text_field};
use crate::bus::EventBus;
use crate::error::ServiceError;
use crate::model::{
    Event, Message, MessageKind, Participant, Room, SeqEvent, User, now_ms, system_user,
};
use crate::store::{
    BIG_ROOM, Backlog, CreateOutcome, Entry, JoinOutcome, LeaveOutcome, MemberPage, Removal,
    RoomStore, SessionStore,
};

/// Join codes use an alphabet without look-alikes (no 0/O, 1/I/L, U/V).
pub const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTWXYZ";
/// Messages in a join snapshot without `since`.
pub const JOIN_MESSAGES: usize = 50;
/// Participants in a join or get reply at most.
pub const REPLY_PARTICIPANTS: usize = BIG_ROOM as usize;

/// The room rules' settings.
#[derive(Debug, Clone, Copy)]
pub struct RoomSettings {
    /// Events a `since` resume returns at most; beyond them it answers
    /// `complete: false` and the client pages with `message.history`
    /// (`--resume-max-events`, 200). The byte bound is the gateway's, which
    /// renders the frames (`--resume-max-bytes`).
    pub resume_max_events: usize,
    /// While a user's typing indicator stays on, the room is told at most
    /// this often (`--typing-repeat`, 2 s).
    pub typing_repeat: std::time::Duration,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            resume_max_events: 200,
            typing_repeat: super::typing::TYPING_REPEAT,
        }
    }
}

/// What a join returns.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The room as read after joining.
    pub room: Room,
    /// At most `REPLY_PARTICIPANTS` participants, with their roles.
    pub participants: Vec<Participant>,
    /// Recent messages, or the events after `since`.
    pub history: JoinHistory,
    /// Every durable event up to this seq is covered by the snapshot; live
    /// events at or below it must not be delivered again.
    pub floor: u64,
}

/// A `join` that failed.
#[derive(Debug)]
pub struct JoinFailed {
    /// Why.
    pub error: ServiceError,
    /// The join was written (the connection is in the room) and what
    /// failed was reading its snapshot: a connection that was not in the
    /// room before must leave it again, so that the store agrees with the
    /// error the client is given.
    pub written: bool,
}

impl From<ServiceError> for JoinFailed {
    fn from(error: ServiceError) -> JoinFailed {
        JoinFailed {
            error,
            written: false,
        }
    }
}

/// The history part of a join snapshot.
#[derive(Debug, Clone)]
pub enum JoinHistory {
    /// The last messages, ascending.
    Messages(Vec<Message>),
    /// The durable events after `since`, ascending.
    Events {
        /// Decoded events.
        events: Vec<SeqEvent>,
        /// Every event after `since` is included.
        complete: bool,
    },
}

/// Room rules.
#[derive(Clone)]
pub struct RoomService {
    rooms: Arc<dyn RoomStore>,
    sessions: Arc<dyn SessionStore>,
    bus: Arc<dyn EventBus>,
    /// Room creation and join-code guessing limits.
    limits: Limits,
    /// Resume and typing bounds.
    settings: RoomSettings,
    /// Big rooms' `participants.changed`.
    crowd: Crowd,
    /// The user's room index behind `room.mine`, kept on join and leave.
    reads: ReadService,
}

/// A room as `room.create` asks for it, before validation.
#[derive(Debug, Clone, Copy)]
pub struct NewRoom<'a> {
    /// Display name, 1–100 characters.
    pub name: &'a str,
    /// Capacity, 2–10000 (default 50).
    pub max_participants: Option<i64>,
    /// Joinable only by code (default false).
    pub private: Option<bool>,
}

fn system_message(room: &str, text: String) -> Message {
    Message {
        id: uuid::Uuid::now_v7().to_string(),
        room: room.to_owned(),
        seq: 0,
        user: system_user(),
        kind: MessageKind::System,
        content: text,
        attachment: None,
        created_at: now_ms(),
        edited_at: None,
        deleted: false,
    }
}

/// A fresh join code of `len` characters.
pub fn new_code(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// Normalizes a code a user typed (case and surrounding space ignored);
/// `None` when it cannot be a code.
pub fn normalize_code(code: &str) -> Option<String> {
    let code = code.trim().to_ascii_uppercase();
    ((6..=8).contains(&code.len()) && code.bytes().all(|b| CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

impl RoomService {
    /// Rules over the given stores and bus.
    pub(crate) fn new(
        rooms: Arc<dyn RoomStore>,
        sessions: Arc<dyn SessionStore>,
        bus: Arc<dyn EventBus>,
        limits: Limits,
        settings: RoomSettings,
        reads: ReadService,
    ) -> RoomService {
        RoomService {
            reads,
            crowd: Crowd::new(rooms.clone(), bus.clone()),
            rooms,
            sessions,
            bus,
            limits,
            settings,
        }
    }

    /// Subscribes `listener` to the events of a room that does not exist
    /// yet, under a fresh id, for `create`: the creator's connection then
    /// receives everything from the room's first event on.
    pub async fn subscribe_new(
        &self,
        listener: Arc<dyn Listener>,
    ) -> Result<RoomSubscription, ServiceError> {
        let id: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
        RoomSubscription::start(id, listener, self.bus.clone()).await
    }

    /// Subscribes `listener` to the events of the room `id` (resolved by
    /// `resolve_join`), for `join`.
    pub async fn subscribe(
        &self,
        id: &str,
        listener: Arc<dyn Listener>,
    ) -> Result<RoomSubscription, ServiceError> {
        let id = room_id(id)?;
        RoomSubscription::start(Arc::from(id), listener, self.bus.clone()).await
    }

    /// Creates the room `subscription` was taken for (`subscribe_new`);
    /// `user` (connected from `address`) has joined it on `conn`. Counts
    /// against the room-creation limit.
    pub async fn create(
        &self,
        subscription: &RoomSubscription,
        user: &User,
        conn: &str,
        new: NewRoom<'_>,
        address: Option<IpAddr>,
    ) -> Result<Room, ServiceError> {
        let name = text_field("name", new.name, 100)?;
        let max = int_field("max_participants", new.max_participants, 50, 2, 10_000)?;
        let private = new.private;
        self.limits.room_create(&user.id, address).await?;
        let id = room_id(subscription.room())?.to_owned();
        let note = system_message(&id, format!("{} created the room", user.name));
        // Codes are random: on a collision try again, growing the code after
        // a few tries so a crowded code space cannot stall creation.
        for attempt in 0..12 {
            let room = Room {
                id: id.clone(),
                code: new_code(6 + attempt / 4),
                name: name.clone(),
                created_by: user.id.clone(),
                created_at: now_ms(),
                max_participants: max as u32,
                private: private.unwrap_or(false),
                participant_count: 0,
                last_seq: 0,
            };
            match self.rooms.create_room(&room, user, conn, &note).await? {
                CreateOutcome::Created(room) => {
                    tokio::join!(
                        self.track(conn, &room.id, true),
                        self.reads.joined(&user.id, &room.id)
                    );
                    return Ok(room);
                }
                CreateOutcome::CodeTaken => continue,
            }
        }
        Err(ServiceError::Conflict(
            "could not find a free join code; try again".into(),
        ))
    }

    /// Which room a `room.join` means, and how it was named. A private room
    /// is joined by its code, or by id by a user who is already a
    /// participant (another tab, or resuming after a reconnect): `join`
    /// checks that with the join itself, so a join by id costs no read
    /// here.
    ///
    /// A join by code counts against the unknown-code limit of `user` and
    /// `address` when the code names no room, and is refused while that
    /// limit is spent.
    pub async fn resolve_join(
        &self,
        user: &User,
        room: Option<&str>,
        code: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(String, Entry), ServiceError> {
        match (room, code) {
            (Some(_), Some(_)) => Err(ServiceError::BadRequest(
                "give either `room` or `code`, not both".into(),
            )),
            (None, None) => Err(ServiceError::BadRequest(
                "`room` or `code` is required".into(),
            )),
            (None, Some(code)) => {
                self.limits.code_join(&user.id, address).await?;
                let found = match normalize_code(code) {
                    Some(code) => self.rooms.room_id_by_code(&code).await?,
                    None => None,
                };
                match found {
                    Some(id) => Ok((id, Entry::ByCode)),
                    None => {
                        self.limits.code_missed(&user.id, address).await;
                        Err(ServiceError::NotFound(format!(
                            "no room has the code {code:?}"
                        )))
                    }
                }
            }
            (Some(id), None) => Ok((room_id(id)?.to_owned(), Entry::ById)),
        }
    }

    /// Joins `conn` to the room of `subscription` (resolved by
    /// `resolve_join`, subscribed by `subscribe`) and reads the snapshot.
    /// The subscription came first, so nothing after the snapshot's `floor`
    /// can be missed.
    ///
    /// A join written whose snapshot cannot be read (the store failing
    /// under it) fails `written`.
    pub async fn join(
        &self,
        subscription: &RoomSubscription,
        entry: Entry,
        user: &User,
        conn: &str,
        since: Option<u64>,
    ) -> Result<Joined, JoinFailed> {
        let room_id: &str = subscription.room();
        self.join_store(room_id, entry, user, conn).await?;
        self.read_joined(room_id, user, conn, since)
            .await
            .map_err(|error| JoinFailed {
                error,
                written: true,
            })
    }

    /// The store side of `join`.
    async fn join_store(
        &self,
        room_id: &str,
        entry: Entry,
        user: &User,
        conn: &str,
    ) -> Result<(), ServiceError> {
        let note = system_message(room_id, format!("{} joined", user.name));
        match self
            .rooms
            .join_by(room_id, user, conn, &note, entry)
            .await?
        {
            JoinOutcome::NoRoom => Err(not_found(room_id)),
            JoinOutcome::Full => Err(ServiceError::Conflict("the room is full".into())),
            JoinOutcome::Private => Err(private_room()),
            JoinOutcome::Banned { until } => Err(ServiceError::Forbidden(format!(
                "you are banned from this room {}",
                super::moderation::ban_text(until)
            ))),
            JoinOutcome::Joined { first, announced } => {
                if first && !announced {
                    self.announce(room_id, Event::ParticipantJoined(user.clone()))
                        .await;
                }
                Ok(())
            }
            JoinOutcome::JoinedQuietly { .. } => {
                self.crowd.joined(room_id, user);
                Ok(())
            }
        }
    }

    /// What a join answers, read after the join itself (with the
    /// connection's session record and the user's room index).
    async fn read_joined(
        &self,
        room_id: &str,
        user: &User,
        conn: &str,
        since: Option<u64>,
    ) -> Result<Joined, ServiceError> {
        // The session's room record, the user's room index (on every join,
        // not only the first: an index that lost the room, or predates it,
        // is written again) and the snapshot are independent: all at once.
        let (snapshot, (), ()) = tokio::join!(
            self.rooms.snapshot(
                room_id,
                REPLY_PARTICIPANTS,
                match since {
                    Some(since) => Backlog::Since(since),
                    None => Backlog::Newest(JOIN_MESSAGES),
                }
            ),
            self.track(conn, room_id, true),
            self.reads.joined(&user.id, room_id)
        );
        let Some(snapshot) = snapshot? else {
            return Err(not_found(room_id));
        };
        let room = snapshot.room;
        let participants = snapshot.participants;
        let (history, floor) = match snapshot.replay {
            None => (JoinHistory::Messages(snapshot.messages), room.last_seq),
            Some(replay) => {
                let mut events = replay.events;
                // Redact over the whole replay: a deletion past the cut
                // still hides what it deleted.
                redact_deleted(&mut events);
                let mut complete = replay.complete;
                if events.len() > self.settings.resume_max_events {
                    events.truncate(self.settings.resume_max_events);
                    complete = false;
                }
                // Not `since`: a client that asks from beyond the room's
                // last seq (after Redis lost data, say) must still get every
                // event from here on.
                let floor = events
                    .last()
                    .map(|e| e.seq)
                    .unwrap_or(0)
                    .max(replay.last_seq);
                (JoinHistory::Events { events, complete }, floor)
            }
        };
        Ok(Joined {
            room,
            participants,
            history,
            floor,
        })
    }

    /// Removes `conn` from the room. Leaving a room one has not joined is a
    /// no-op (leave is idempotent), but the room must exist.
    pub async fn leave(&self, user: &User, conn: &str, room_id: &str) -> Result<(), ServiceError> {
        let note = system_message(room_id, format!("{} left", user.name));
        let outcome = self.rooms.leave(room_id, user, conn, &note).await?;
        self.track(conn, room_id, false).await;
        match outcome {
            LeaveOutcome::Left {
                last: true,
                announced,
            } => {
                self.reads.left(&user.id, room_id, note.created_at).await;
                if !announced {
                    self.announce(room_id, Event::ParticipantLeft(user.clone()))
                        .await;
                }
                Ok(())
            }
            LeaveOutcome::Left { last: false, .. } => Ok(()),
            LeaveOutcome::LeftQuietly { .. } => {
                self.reads.left(&user.id, room_id, note.created_at).await;
                self.crowd.left(room_id, user);
                Ok(())
            }
            LeaveOutcome::NotJoined => self.existing(room_id).await.map(|_| ()),
        }
    }

    /// A room and its participants. A private room is shown to its
    /// participants only.
    pub async fn get(&self, user: &User, room_id: &str) -> Result<(Room, Vec<User>), ServiceError> {
        let room = self.existing(room_id).await?;
        if room.private && !self.rooms.is_participant(&room.id, &user.id).await? {
            return Err(private_room());
        }
        let participants = self.rooms.roster(&room.id, REPLY_PARTICIPANTS).await?;
        Ok((room, participants))
    }

    /// A page of the room's members (`room.members`), for participants
    /// only. `cursor` is the previous page's; `limit` 1–500 (default 100).
    pub async fn members(
        &self,
        user: &User,
        room_id: &str,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<MemberPage, ServiceError> {
        let limit = int_field("limit", limit, 100, 1, 500)?;
        let room = self.existing(room_id).await?;
        if !self.rooms.is_participant(&room.id, &user.id).await? {
            return Err(ServiceError::Forbidden(
                "join the room to list its members".into(),
            ));
        }
        let cursor = cursor.filter(|c| !c.is_empty());
        Ok(self.rooms.members(&room.id, cursor, limit as usize).await?)
    }

    /// Public rooms, most recently active first.
    pub async fn list(&self, limit: Option<i64>) -> Result<Vec<Room>, ServiceError> {
        let limit = int_field("limit", limit, 50, 1, 100)?;
        Ok(self.rooms.list_public(limit as usize).await?)
    }

    /// Users with a live connection in the room, on any node. For
    /// participants only.
    pub async fn presence(&self, user: &User, room_id: &str) -> Result<Vec<User>, ServiceError> {
        let room = self.existing(room_id).await?;
        if !self.rooms.is_participant(&room.id, &user.id).await? {
            return Err(ServiceError::Forbidden(
                "join the room to see who is online".into(),
            ));
        }
        Ok(self.rooms.online(&room.id).await?)
    }

    /// Sets or clears `user`'s typing indicator and tells the room. The
    /// caller checks that the connection has joined the room.
    pub async fn typing(&self, user: &User, room: &str, active: bool) -> Result<(), ServiceError> {
        let room_id = room_id(room)?;
        let tell = self
            .rooms
            .set_typing(
                room_id,
                &user.id,
                active,
                TYPING_TTL,
                self.settings.typing_repeat,
            )
            .await?;
        if !tell {
            return Ok(());
        }
        self.bus
            .publish(
                room_id,
                &Event::Typing {
                    user: user.clone(),
                    active,
                },
            )
            .await?;
        Ok(())
    }

    /// Tells the room that a kick or ban removed `user` (the store wrote
    /// the system message): `participant.left`, or the coalesced
    /// `participants.changed` of a big room, as a leave does; the room
    /// leaves the user's room index (`room.mine`), as after a final leave
    /// (`before_ms`: a time taken before the removal's store call).
    pub(crate) async fn removed(&self, room: &str, user: &User, removal: &Removal, before_ms: u64) {
        match removal {
            Removal::Left => {
                self.announce(room, Event::ParticipantLeft(user.clone()))
                    .await
            }
            Removal::LeftQuietly(_) => self.crowd.left(room, user),
            Removal::Absent => return,
        }
        self.reads.left(&user.id, room, before_ms).await;
    }

    /// Records which rooms a session joined, for the janitor. Losing this
    /// record costs only a slower cleanup after a crash, so it is logged.
    async fn track(&self, conn: &str, room: &str, joined: bool) {
        if let Err(e) = self.sessions.track_room(conn, room, joined).await {
            tracing::warn!(room, error = %e, "could not record the session's rooms");
        }
    }

    /// `not_found` unless the room exists (for a verb on a room the
    /// connection does not hold: never joined, or closed since).
    pub async fn ensure_exists(&self, id: &str) -> Result<(), ServiceError> {
        self.existing(id).await.map(|_| ())
    }

    async fn existing(&self, id: &str) -> Result<Room, ServiceError> {
        let id = room_id(id)?;
        self.rooms.room(id).await?.ok_or_else(|| not_found(id))
    }

    /// Publishes an ephemeral event. Its loss is not worth failing the
    /// request that caused it (the durable system message is already
    /// written), so a failure is logged.
    async fn announce(&self, room: &str, event: Event) {
        if let Err(e) = self.bus.publish(room, &event).await {
            tracing::warn!(room, event = event.name(), error = %e, "could not publish");
        }
    }
}

/// A replay must not hand out what was deleted since: every earlier event of
/// a message that the replay also deletes carries the tombstone's empty
/// content and no attachment. (A deletion always follows its creation in the
/// log, so the replay holds it whenever it holds the creation.)
pub fn redact_deleted(events: &mut [SeqEvent]) {
    let deleted: std::collections::HashSet<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::MessageDeleted(m) => Some(m.id.clone()),
            _ => None,
        })
        .collect();
    if deleted.is_empty() {
        return;
    }
    for env in events.iter_mut() {
        if let Event::MessageCreated(m) | Event::MessageUpdated(m) = &mut env.event
            && deleted.contains(&m.id)
        {
            m.content.clear();
            m.attachment = None;
        }
    }
}

fn not_found(room: &str) -> ServiceError {
    ServiceError::NotFound(format!("room {room} does not exist"))
}

/// A private room shown to, or joined by id by, a non-participant.
fn private_room() -> ServiceError {
    ServiceError::Forbidden("this room is private: join it with its code".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::MemoryBus;
    use crate::events::EventSink;
    use crate::store::{MemoryStore, MessageStore, StoreSettings};

    struct NoSink;
    impl EventSink for NoSink {
        fn deliver(&self, _: &str, _: &[u8]) {}
    }

    struct NoListener;
    impl Listener for NoListener {
        fn attach(&self, _: &Arc<str>) {}
        fn detach(&self, _: &str) {}
        fn attach_user(&self, _: &str) {}
        fn detach_user(&self, _: &str) {}
    }

    fn service() -> (RoomService, Arc<MemoryStore>) {
        let sink: Arc<dyn EventSink> = Arc::new(NoSink);
        let store = Arc::new(MemoryStore::new(StoreSettings::default(), sink.clone()));
        let bus: Arc<MemoryBus> = Arc::new(MemoryBus::new(sink));
        let limits = Limits::new(
            store.clone(),
            crate::service::LimitSettings {
                room_create_per_min: 30,
                code_miss_per_min: 10,
                per_address: false,
            },
            Arc::new(crate::metrics::Metrics::new()),
        );
        let service = RoomService::new(
            store.clone(),
            store.clone(),
            bus.clone(),
            limits,
            RoomSettings::default(),
            ReadService::new(store.clone(), bus),
        );
        (service, store)
    }

    /// A service with one room, created by Ann on connection `c1`.
    async fn one_room() -> (RoomService, Arc<MemoryStore>, User, RoomSubscription, Room) {
        let (rooms, store) = service();
        let ann = User {
            id: "ann".into(),
            name: "Ann".into(),
            image: None,
        };
        let sub = rooms
            .subscribe_new(Arc::new(NoListener))
            .await
            .expect("sub");
        let new = NewRoom {
            name: "Lobby",
            max_participants: None,
            private: None,
        };
        let room = rooms
            .create(&sub, &ann, "c1", new, None)
            .await
            .expect("created");
        (rooms, store, ann, sub, room)
    }

    #[tokio::test]
    async fn a_long_resume_is_cut_at_200_events_and_says_so() {
        let (rooms, store, ann, sub, room) = one_room().await;
        for i in 0..250u64 {
            let mut said = system_message(&room.id, format!("message {i}"));
            said.user = ann.clone();
            said.kind = MessageKind::Text;
            let outcome = store.append(&said, None).await.expect("sent");
            assert!(matches!(outcome, crate::store::AppendOutcome::Appended(_)));
        }
        let joined = rooms
            .join(&sub, Entry::ById, &ann, "c2", Some(0))
            .await
            .expect("joined");
        let JoinHistory::Events { events, complete } = joined.history else {
            panic!("a resume answers with events")
        };
        assert_eq!(events.len(), RoomSettings::default().resume_max_events);
        assert!(!complete, "the rest is to be paged with message.history");
        assert_eq!(events.first().map(|e| e.seq), Some(1), "oldest first");
        assert_eq!(
            joined.floor, 251,
            "live delivery goes on after the last seq"
        );
    }

    #[tokio::test]
    async fn a_since_past_the_last_seq_resumes_from_the_last_seq() {
        let (rooms, _store, ann, sub, room) = one_room().await;
        let joined = rooms
            .join(&sub, Entry::ById, &ann, "c2", Some(room.last_seq + 10))
            .await
            .expect("joined");
        assert_eq!(
            joined.floor, room.last_seq,
            "live events after the last seq must not be dropped"
        );
        let JoinHistory::Events { events, complete } = joined.history else {
            panic!("a resume answers with events")
        };
        assert!(events.is_empty() && complete);
    }

    #[test]
    fn replays_do_not_reveal_deleted_content() {
        let user = system_user();
        let msg = |id: &str, text: &str| Message {
            id: id.into(),
            room: "r".into(),
            seq: 1,
            user: user.clone(),
            kind: MessageKind::Text,
            content: text.into(),
            attachment: None,
            created_at: 0,
            edited_at: None,
            deleted: false,
        };
        let env = |seq, event| SeqEvent { seq, event };
        let mut tomb = msg("a", "");
        tomb.deleted = true;
        let mut events = vec![
            env(1, Event::MessageCreated(msg("a", "secret"))),
            env(2, Event::MessageCreated(msg("b", "kept"))),
            env(3, Event::MessageUpdated(msg("a", "secret 2"))),
            env(4, Event::MessageDeleted(tomb)),
        ];
        redact_deleted(&mut events);
        let contents: Vec<&str> = events
            .iter()
            .filter_map(|e| e.event.message().map(|m| m.content.as_str()))
            .collect();
        assert_eq!(contents, ["", "kept", "", ""]);
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        for len in 6..=8 {
            let code = new_code(len);
            assert_eq!(code.len(), len);
            assert_eq!(normalize_code(&code.to_lowercase()), Some(code.clone()));
        }
        for c in ["0", "O", "1", "I", "L", "U", "V"] {
            assert!(!CODE_ALPHABET.contains(&c.as_bytes()[0]), "{c}");
        }
        assert_eq!(normalize_code(" abc234 "), Some("ABC234".into()));
        assert_eq!(normalize_code("ABC23"), None);
        assert_eq!(normalize_code("ABC2340O"), None);
        assert_eq!(normalize_code("ABCDEFGHJ"), None);
    }
}
