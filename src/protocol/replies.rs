//! The `data` of successful replies, one struct per shape, serialized by
//! `data` into the raw JSON that `reply_ok` embeds.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::model::{BanRecord, Message, Participant, Room, User};

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
}
