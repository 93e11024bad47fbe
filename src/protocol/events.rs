//! Pushed event frames (`{"type":"event",...}`): one rendering per event
//! variant, done once per node; the 1.1 moderation events are rendered by
//! `moderation`, `room.updated` carries the room object.

use serde::Serialize;

use super::{moderation, to_json};
use crate::model::{Event, Message, Room, User};

#[derive(Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    participant_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<&'a [User]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    left: Option<&'a [User]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_seq: Option<u64>,
}

/// Renders a pushed event frame: `event` of `room`, with its `seq` shown
/// when the event is durable.
pub fn event_frame(room: &str, seq: u64, event: &Event) -> String {
    let mut frame = EventFrame {
        kind: "event",
        room,
        seq: event.is_durable().then_some(seq),
        event: event.name(),
        message: None,
        user: None,
        active: None,
        participant_count: None,
        joined: None,
        left: None,
        read_seq: None,
    };
    match event {
        Event::MessageCreated(m) | Event::MessageUpdated(m) | Event::MessageDeleted(m) => {
            frame.message = Some(m)
        }
        Event::ParticipantJoined(u) | Event::ParticipantLeft(u) => frame.user = Some(u),
        Event::Typing { user, active } => {
            frame.user = Some(user);
            frame.active = Some(*active);
        }
        Event::ParticipantsChanged {
            count,
            joined,
            left,
        } => {
            frame.participant_count = Some(*count);
            frame.joined = Some(joined);
            frame.left = Some(left);
        }
        Event::MemberUpdated { .. } | Event::MemberRemoved { .. } | Event::RoomClosed { .. } => {
            return moderation::frame(room, event);
        }
        // Who read and from which connection stay on the bus: the frame
        // goes to that user's own connections only.
        Event::Read { read_seq, .. } => frame.read_seq = Some(*read_seq),
        Event::RoomUpdated(r) => {
            // The protocol shows both `"room":"<id>"` and `"room":{…}` here;
            // a JSON object cannot hold both, so `room` is the room object,
            // whose `id` is the room id (documented in docs/protocol.md).
            return room_updated_frame(r);
        }
    }
    to_json(&frame)
}

fn room_updated_frame(room: &Room) -> String {
    #[derive(Serialize)]
    struct RoomUpdated<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        event: &'static str,
        room: &'a Room,
    }
    to_json(&RoomUpdated {
        kind: "event",
        event: "room.updated",
        room,
    })
}
