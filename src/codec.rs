//! The bus envelope: how a room event travels between nodes and how durable
//! events are kept in Redis.
//!
//! ```text
//! byte 0        version (currently 1)
//! bytes 1..9    seq, u64 big-endian; 0 for ephemeral events
//! bytes 9..17   published-at, Unix microseconds, u64 big-endian
//! bytes 17..    bincode 2 (standard config) of `model::Event`
//! ```
//!
//! The seq sits in a fixed-width header so that the Redis send script, which
//! assigns it, can prepend `version ‖ seq` to the *tail* (`published-at ‖
//! body`) that Rust encoded, without understanding bincode. A
//! `MessageCreated` body carries `seq = 0` and takes its seq from the header
//! on decode; `MessageUpdated`/`MessageDeleted` bodies carry the message's own
//! creation seq while the header carries the event's seq.
//!
//! A user channel (`user_events:{U}`) carries events of any room, so its
//! messages name the room before the envelope (`address`, `unaddress`):
//!
//! ```text
//! bytes 0..2    room id length, u16 big-endian
//! bytes 2..     room id (UTF-8), then the envelope above
//! ```
//!
//! The same bytes are published on `events:{R}`, kept in `room_events:{R}` and
//! stored as the latest state of a message in `message:{R}:M`. This module is
//! the only place that knows bincode, so the body format can be swapped (bump
//! the version byte) in one place.

use crate::model::{Event, Message};

/// Current envelope version.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 17;
/// Largest body accepted from the wire; bounds what a corrupt or hostile
/// payload can make us allocate.
const MAX_BODY: usize = 1 << 20;

/// Why an envelope could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Shorter than the header.
    #[error("envelope too short ({0} bytes)")]
    Truncated(usize),
    /// Written by an incompatible node version.
    #[error("unknown envelope version {0}")]
    Version(u8),
    /// The body is not a valid event.
    #[error("bad envelope body: {0}")]
    Body(String),
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The event's seq in its room; 0 for ephemeral events.
    pub seq: u64,
    /// When the event was produced, Unix microseconds.
    pub published_us: u64,
    /// The event, with a created message's seq filled in from the header.
    pub event: Event,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BODY>()
}

/// Encodes `published-at ‖ body`: everything after `version ‖ seq`.
pub fn encode_tail(event: &Event, published_us: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&published_us.to_be_bytes());
    let body = bincode::serde::encode_to_vec(event, config()).expect(
        "every type in an Event derives Serialize with no custom serializer, and the size \
         limit only applies to decoding: encoding into a Vec cannot fail",
    );
    out.extend_from_slice(&body);
    out
}

/// Prepends `version ‖ seq` to a tail, as the Redis scripts do.
pub fn seal(seq: u64, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + tail.len());
    out.push(VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(tail);
    out
}

/// Encodes a whole envelope.
pub fn encode(seq: u64, event: &Event, published_us: u64) -> Vec<u8> {
    seal(seq, &encode_tail(event, published_us))
}

/// Reads only the seq, without decoding the body.
pub fn peek_seq(bytes: &[u8]) -> Result<u64, CodecError> {
    check_header(bytes)?;
    Ok(be_u64(&bytes[1..9]))
}

/// Reads a big-endian u64 from a slice of the header (checked to be long
/// enough by `check_header`).
fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(
        bytes
            .try_into()
            .expect("header fields are 8-byte slices of a checked header"),
    )
}

fn check_header(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(CodecError::Version(bytes[0]));
    }
    Ok(())
}

/// Decodes an envelope.
pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    check_header(bytes)?;
    let seq = be_u64(&bytes[1..9]);
    let published_us = be_u64(&bytes[9..17]);
    let (mut event, used): (Event, usize) =
        bincode::serde::decode_from_slice(&bytes[HEADER_LEN..], config())
            .map_err(|e| CodecError::Body(e.to_string()))?;
    if used != bytes.len() - HEADER_LEN {
        return Err(CodecError::Body(format!(
            "{} trailing bytes",
            bytes.len() - HEADER_LEN - used
        )));
    }
    if let Event::MessageCreated(m) = &mut event
        && m.seq == 0
    {
        m.seq = seq;
    }
    Ok(Envelope {
        seq,
        published_us,
        event,
    })
}

/// Prefixes `envelope` with the room it belongs to, for a user channel.
/// Room ids are short (the protocol bounds them far below 64 KiB); a longer
/// one is a bug.
pub fn address(room: &str, envelope: &[u8]) -> Vec<u8> {
    let len = u16::try_from(room.len()).expect("room ids are far shorter than 64 KiB");
    let mut out = Vec::with_capacity(2 + room.len() + envelope.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(room.as_bytes());
    out.extend_from_slice(envelope);
    out
}

/// Splits a user channel's message into its room and envelope.
pub fn unaddress(bytes: &[u8]) -> Result<(&str, &[u8]), CodecError> {
    let (len, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or(CodecError::Truncated(bytes.len()))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(CodecError::Truncated(bytes.len()));
    }
    let (room, envelope) = rest.split_at(len);
    let room = std::str::from_utf8(room)
        .map_err(|_| CodecError::Body("the room id is not UTF-8".into()))?;
    Ok((room, envelope))
}

/// Decodes a stored message record (the envelope of its latest event).
pub fn decode_message(bytes: &[u8]) -> Result<Message, CodecError> {
    match decode(bytes)?.event {
        Event::MessageCreated(m) | Event::MessageUpdated(m) | Event::MessageDeleted(m) => Ok(m),
        other => Err(CodecError::Body(format!(
            "stored message holds a {} event",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageKind, User};

    fn message(seq: u64) -> Message {
        Message {
            id: "m1".into(),
            room: "r1".into(),
            seq,
            user: User {
                id: "u1".into(),
                name: "Ann".into(),
                image: Some("https://x/a.png".into()),
            },
            kind: MessageKind::Text,
            content: "héllo".into(),
            attachment: None,
            created_at: 1_700_000_000_000,
            edited_at: None,
            deleted: false,
        }
    }

    #[test]
    fn round_trip_fills_created_seq_from_header() {
        let bytes = encode(42, &Event::MessageCreated(message(0)), 7);
        let env = decode(&bytes).expect("decodes");
        assert_eq!(env.seq, 42);
        assert_eq!(env.published_us, 7);
        assert_eq!(env.event, Event::MessageCreated(message(42)));
        assert_eq!(peek_seq(&bytes).expect("peek"), 42);
    }

    #[test]
    fn updated_keeps_the_message_seq() {
        let bytes = encode(50, &Event::MessageUpdated(message(42)), 0);
        let env = decode(&bytes).expect("decodes");
        assert_eq!(env.seq, 50);
        assert_eq!(env.event.message().map(|m| m.seq), Some(42));
        assert_eq!(decode_message(&bytes).expect("message").seq, 42);
    }

    #[test]
    fn an_addressed_envelope_names_its_room() {
        let ev = Event::Read {
            user: "u1".into(),
            conn: "c1".into(),
            read_seq: 9,
        };
        let env = encode(0, &ev, 5);
        let bytes = address("röom", &env);
        let (room, inner) = unaddress(&bytes).expect("splits");
        assert_eq!(room, "röom");
        assert_eq!(decode(inner).expect("decodes").event, ev);
        assert!(matches!(unaddress(&[0]), Err(CodecError::Truncated(1))));
        assert!(matches!(
            unaddress(&[0, 9, b'a']),
            Err(CodecError::Truncated(3))
        ));
        assert!(matches!(unaddress(&[0, 1, 0xff]), Err(CodecError::Body(_))));
    }

    #[test]
    fn seal_matches_encode() {
        let ev = Event::ParticipantJoined(message(0).user);
        let tail = encode_tail(&ev, 99);
        assert_eq!(seal(3, &tail), encode(3, &ev, 99));
    }

    #[test]
    fn events_of_1_1_come_after_the_1_0_tags_and_round_trip() {
        let user = message(0).user;
        // bincode writes the variant index first: the 1.0 and big-room
        // variants keep theirs, the 1.1 moderation ones follow, then `read`.
        let tag = |ev: &Event| encode(0, ev, 0)[HEADER_LEN];
        assert_eq!(tag(&Event::ParticipantLeft(user.clone())), 4);
        assert_eq!(
            tag(&Event::ParticipantsChanged {
                count: 1,
                joined: vec![],
                left: vec![],
            }),
            7
        );
        for (want, ev) in [
            (
                8,
                Event::MemberUpdated {
                    user: user.clone(),
                    role: crate::model::Role::Moderator,
                    muted_until: Some(9),
                },
            ),
            (
                9,
                Event::MemberRemoved {
                    user: user.clone(),
                    by: user.clone(),
                    reason: Some("spam".into()),
                    banned_until: Some(-1),
                },
            ),
            (10, Event::RoomClosed { by: user.clone() }),
            (
                11,
                Event::Read {
                    user: user.id.clone(),
                    conn: "c1".into(),
                    read_seq: 7,
                },
            ),
        ] {
            assert_eq!(tag(&ev), want, "{}", ev.name());
            assert_eq!(decode(&encode(0, &ev, 0)).expect("decodes").event, ev);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(decode(&[1, 2, 3]), Err(CodecError::Truncated(3))));
        let mut bytes = encode(1, &Event::ParticipantLeft(message(0).user), 0);
        bytes[0] = 9;
        assert!(matches!(decode(&bytes), Err(CodecError::Version(9))));
        bytes[0] = VERSION;
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(CodecError::Body(_))));
        let garbage = seal(
            1,
            &[0u8; 8]
                .iter()
                .chain(&[0xff; 20])
                .copied()
                .collect::<Vec<_>>(),
        );
        assert!(decode(&garbage).is_err());
        let not_message = encode(1, &Event::ParticipantLeft(message(0).user), 0);
        assert!(decode_message(&not_message).is_err());
    }
}
