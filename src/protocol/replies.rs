//! The `data` of successful replies, one struct per shape, serialized by
//! `data` into the raw JSON that `reply_ok` embeds.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::model::{BanRecord, Message, Participant, Role, Room, User};

/// Serializes a reply's data once, to embed in the reply frame.
pub fn data<T: Serialize>(value: &T) -> Box<RawValue> {
    let json = serde_json::to_string(value)
        .expect("reply data is plain structs of strings, numbers and lists: it always serializes");
    super::raw(json)
}

/// `{}`: the data of replies that carry nothing.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// `room.create`, `room.update`: `{"room"}`.
#[derive(Debug, Serialize)]
pub struct RoomData<'a> {
    /// The room.
    pub room: &'a Room,
}

/// `room.get`: `{"room","participants"}`.
#[derive(Debug, Serialize)]
pub struct RoomWithParticipants<'a> {
    /// The room.
    pub room: &'a Room,
    /// Distinct users joined, with their roles.
    pub participants: &'a [Participant],
}

/// `room.members`: `{"members","cursor"}`.
#[derive(Debug, Serialize)]
pub struct MembersData<'a> {
    /// This page of members, with their roles.
    pub members: &'a [Participant],
    /// Where the next page starts; `null` after the last page.
    pub cursor: Option<&'a str>,
}

/// `room.join` without `since`: the room and its latest messages.
#[derive(Debug, Serialize)]
pub struct JoinMessages<'a> {
    /// The room.
    pub room: &'a Room,
    /// Distinct users joined, with their roles.
    pub participants: &'a [Participant],
    /// The latest messages, ascending.
    pub messages: &'a [Message],
}

/// `room.join` with `since`: the room and the events after it.
#[derive(Debug, Serialize)]
pub struct JoinEvents<'a> {
    /// The room.
    pub room: &'a Room,
    /// Distinct users joined, with their roles.
    pub participants: &'a [Participant],
    /// Event frames, rendered as they are pushed live.
    pub events: Vec<Box<RawValue>>,
    /// Every event after `since` is included.
    pub complete: bool,
}

/// `message.send`, `message.edit`, `message.delete`: `{"message"}`.
#[derive(Debug, Serialize)]
pub struct MessageData<'a> {
    /// The message as stored.
    pub message: &'a Message,
}

/// `message.history`.
#[derive(Debug, Serialize)]
pub struct HistoryData<'a> {
    /// Ascending seq.
    pub messages: &'a [Message],
    /// Older messages exist.
    pub has_more: bool,
}

/// `message.search`.
#[derive(Debug, Serialize)]
pub struct SearchData<'a> {
    /// Newest first.
    pub messages: &'a [Message],
}

/// `presence`.
#[derive(Debug, Serialize)]
pub struct PresenceData<'a> {
    /// Users with a live connection in the room.
    pub online: &'a [User],
}

/// `room.list`.
#[derive(Debug, Serialize)]
pub struct RoomsData<'a> {
    /// Public rooms, most recently active first.
    pub rooms: &'a [Room],
}

/// `room.read`: `{"read_seq"}`.
#[derive(Debug, Serialize)]
pub struct ReadData {
    /// The user's read position after the call.
    pub read_seq: u64,
}

/// One room of `room.mine`: the room object with the user's read state and
/// role added (JSON only: `Room` itself also travels in bincode, where a
/// field cannot be added).
#[derive(Debug, Serialize)]
pub struct MineRoom<'a> {
    /// The room's fields, inline.
    #[serde(flatten)]
    pub room: &'a Room,
    /// The user's read position.
    pub read_seq: u64,
    /// Messages after it: not system, not the user's own, not deleted.
    pub unread: u64,
    /// The user's role.
    pub role: Role,
}

/// `room.mine`: `{"rooms"}`.
#[derive(Debug, Serialize)]
pub struct MineData<'a> {
    /// Most recently active first.
    pub rooms: Vec<MineRoom<'a>>,
}

/// One participant's read position.
#[derive(Debug, Serialize)]
pub struct Receipt<'a> {
    /// The participant.
    pub user: &'a User,
    /// Read up to this seq (0: never).
    pub read_seq: u64,
}

/// `room.receipts`: `{"reads"}`.
#[derive(Debug, Serialize)]
pub struct ReceiptsData<'a> {
    /// Every participant.
    pub reads: Vec<Receipt<'a>>,
}

/// `hello`.
#[derive(Debug, Serialize)]
pub struct HelloData<'a> {
    /// Who the connection is.
    pub user: &'a User,
    /// The connection (session) id.
    pub session: &'a str,
    /// The node's id.
    pub node: &'a str,
    /// The node's clock, Unix ms.
    pub server_time: u64,
}

/// `room.bans`: `{"bans":[{"user","until","by","reason"}]}`.
#[derive(Debug, Serialize)]
pub struct BansData<'a> {
    /// The bans in force.
    pub bans: &'a [BanRecord],
}

/// `ping`.
#[derive(Debug, Serialize)]
pub struct PingData {
    /// The node's clock, Unix ms.
    pub server_time: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_the_json_of_the_struct() {
        assert_eq!(data(&Empty {}).get(), "{}");
        assert_eq!(
            data(&PingData { server_time: 7 }).get(),
            r#"{"server_time":7}"#
        );
    }

    #[test]
    fn a_mine_room_is_the_room_object_with_three_fields_added() {
        let room = Room {
            id: "r".into(),
            code: "ABC234".into(),
            name: "Lobby".into(),
            created_by: "u".into(),
            created_at: 1,
            max_participants: 50,
            private: false,
            participant_count: 2,
            last_seq: 9,
        };
        let v: serde_json::Value = serde_json::from_str(
            data(&MineData {
                rooms: vec![MineRoom {
                    room: &room,
                    read_seq: 4,
                    unread: 3,
                    role: Role::Owner,
                }],
            })
            .get(),
        )
        .expect("json");
        let r = &v["rooms"][0];
        assert_eq!(r["id"], "r");
        assert_eq!(r["last_seq"], 9);
        assert_eq!(r["read_seq"], 4);
        assert_eq!(r["unread"], 3);
        assert_eq!(r["role"], "owner");
    }
}
