//! Domain types shared by every layer: users, rooms, messages and room events.
//!
//! These are plain data. Their JSON form is the client protocol
//! (`docs/protocol.md`); their bincode form travels between nodes inside the
//! bus envelope (`crate::codec`). Because bincode is positional, no field here
//! may use `skip_serializing_if` or other self-describing serde tricks.

use serde::{Deserialize, Serialize};

/// Unix time in milliseconds, the protocol's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix time in microseconds, used to measure fan-out latency across nodes.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A durable room event with its seq: what a replay (`room.join` with
/// `since`) hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqEvent {
    /// The event's seq in its room.
    pub seq: u64,
    /// The event, with a created message's seq filled in.
    pub event: Event,
}

/// A chat user as shown to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id: the JWT `sub`, or a fresh id for a guest.
    pub id: String,
    /// Display name, 1–64 characters.
    pub name: String,
    /// Avatar URL, if any.
    pub image: Option<String>,
}

/// A room as the protocol shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Opaque id (a UUID).
    pub id: String,
    /// Short join code from an unambiguous alphabet, unique among live rooms.
    pub code: String,
    /// Display name, 1–100 characters.
    pub name: String,
    /// User id of the creator, who may delete any message in the room.
    pub created_by: String,
    /// Creation time, Unix ms.
    pub created_at: u64,
    /// Capacity in distinct users.
    pub max_participants: u32,
    /// A private room is joinable only by its code.
    pub private: bool,
    /// Distinct users currently joined.
    pub participant_count: u32,
    /// Sequence number of the room's latest durable event.
    pub last_seq: u64,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Plain text.
    Text,
    /// An image, by URL.
    Image,
    /// A file, by URL.
    File,
    /// Written by the server (room created, user joined or left).
    System,
}

impl MessageKind {
    /// The protocol name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::File => "file",
            MessageKind::System => "system",
        }
    }
}

/// A file or image a message points at. Huddle stores the reference only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// File name shown to users.
    pub name: String,
    /// Size in bytes, when the client said.
    pub size: Option<u64>,
    /// MIME type, when the client said.
    pub mime: Option<String>,
}

/// An attachment as a client gives it, before validation (`url` checked,
/// `name` defaulted from the URL).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    /// `http(s)` URL.
    pub url: String,
    /// File name; defaults to the last segment of the URL.
    #[serde(default)]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// MIME type.
    #[serde(default)]
    pub mime: Option<String>,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Time-ordered id (UUID v7).
    pub id: String,
    /// Room id.
    pub room: String,
    /// The seq of the event that created the message.
    pub seq: u64,
    /// Author; the server itself for system messages.
    pub user: User,
    /// Kind of message.
    pub kind: MessageKind,
    /// Text, or a caption for image and file messages; empty once deleted.
    pub content: String,
    /// Required for image and file messages.
    pub attachment: Option<Attachment>,
    /// Creation time, Unix ms.
    pub created_at: u64,
    /// Time of the last edit, Unix ms.
    pub edited_at: Option<u64>,
    /// A deleted message is a tombstone: empty content, no attachment.
    pub deleted: bool,
}

/// The author of system messages.
pub fn system_user() -> User {
    User {
        id: "system".to_owned(),
        name: "Huddle".to_owned(),
        image: None,
    }
}

/// Something that happened in a room and is broadcast to its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Durable: a message was written.
    MessageCreated(Message),
    /// Durable: a message was edited.
    MessageUpdated(Message),
    /// Durable: a message was deleted (the message is its tombstone).
    MessageDeleted(Message),
    /// Ephemeral: a user's first connection joined.
    ParticipantJoined(User),
    /// Ephemeral: a user's last connection left.
    ParticipantLeft(User),
    /// Ephemeral: typing indicator.
    Typing {
        /// Who is typing.
        user: User,
        /// Whether the indicator is on.
        active: bool,
    },
    /// Ephemeral: the room's fields changed.
    RoomUpdated(Room),
    /// Ephemeral: participants of a big room joined or left (at most one
    /// per room per second). Last in the enum, so the bincode tags of the
    /// variants before it stay what 1.0 nodes wrote.
    ParticipantsChanged {
        /// Distinct users joined.
        count: u32,
        /// Users who joined since the last one (at most 50).
        joined: Vec<User>,
        /// Users who left since the last one (at most 50).
        left: Vec<User>,
    },
    /// Ephemeral (1.1): a user's role or mute changed. Appended after
    /// `ParticipantsChanged`, like every variant after it, so earlier tags
    /// keep their values.
    MemberUpdated {
        /// Who.
        user: User,
        /// Their role now.
        role: Role,
        /// Until when (ms) they are muted, while muted.
        muted_until: Option<u64>,
    },
    /// Ephemeral (1.1): a user was kicked or banned. Every node detaches the
    /// user's local connections from the room on receiving it.
    MemberRemoved {
        /// Who was removed.
        user: User,
        /// Who removed them.
        by: User,
        /// Why, if they said.
        reason: Option<String>,
        /// `None` for a kick; for a ban its end (ms), or -1 for none.
        banned_until: Option<i64>,
    },
    /// Ephemeral (1.1): the owner closed the room; it is gone. Every node
    /// detaches its connections from the room.
    RoomClosed {
        /// The owner who closed it.
        by: User,
    },
    /// Ephemeral: a user read a room up to `read_seq` (protocol 1.1 "Read
    /// state"). Told only to that user's other connections: every node's
    /// hub delivers it to the local connections of `user` joined to the
    /// room, except `conn`, the connection that asked. Last in the enum (after
    /// the moderation variants), so the bincode tags before it do not move.
    Read {
        /// Whose read position moved (user id).
        user: String,
        /// The connection that sent `room.read` (its session id): it is not
        /// told.
        conn: String,
        /// The read position now.
        read_seq: u64,
    },
}

/// A participant's role in a room (protocol 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The creator, or whom they handed the room to: exactly one per room.
    Owner,
    /// Appointed by the owner.
    Moderator,
    /// Everyone else.
    Member,
}

impl Role {
    /// The protocol name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Moderator => "moderator",
            Role::Member => "member",
        }
    }

    /// The role a protocol name means.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "owner" => Some(Role::Owner),
            "moderator" => Some(Role::Moderator),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// A user as participant lists and `member.updated` show them: the user's
/// fields plus `role`, and `muted_until` while muted. Reply-only JSON (never
/// in an envelope: `User` keeps its bincode shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Their role in the room.
    pub role: Role,
    /// Until when (ms) they are muted; absent when not muted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
}

impl Event {
    /// The protocol name of the event.
    pub fn name(&self) -> &'static str {
        match self {
            Event::MessageCreated(_) => "message.created",
            Event::MessageUpdated(_) => "message.updated",
            Event::MessageDeleted(_) => "message.deleted",
            Event::ParticipantJoined(_) => "participant.joined",
            Event::ParticipantLeft(_) => "participant.left",
            Event::Typing { .. } => "typing",
            Event::RoomUpdated(_) => "room.updated",
            Event::ParticipantsChanged { .. } => "participants.changed",
            Event::MemberUpdated { .. } => "member.updated",
            Event::MemberRemoved { .. } => "member.removed",
            Event::RoomClosed { .. } => "room.closed",
            Event::Read { .. } => "read",
        }
    }

    /// Durable events carry a seq and are kept in the room's event log.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            Event::MessageCreated(_) | Event::MessageUpdated(_) | Event::MessageDeleted(_)
        )
    }

    /// The message a durable event is about.
    pub fn message(&self) -> Option<&Message> {
        match self {
            Event::MessageCreated(m) | Event::MessageUpdated(m) | Event::MessageDeleted(m) => {
                Some(m)
            }
            _ => None,
        }
    }
}

/// A ban (protocol 1.1) as the store keeps it (JSON) and `room.bans`
/// lists it. JSON only: it never travels in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// Who is banned (a user never seen in the room is shown by id).
    pub user: User,
    /// When the ban ends (ms), or -1 for no end.
    pub until: i64,
    /// Who banned them.
    pub by: User,
    /// Why, if they said.
    pub reason: Option<String>,
}

impl BanRecord {
    /// Whether the ban holds at `now` (ms).
    pub fn holds(&self, now: u64) -> bool {
        self.until < 0 || self.until as u64 > now
    }
}
