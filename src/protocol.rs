//! The client frame codec: JSON text frames ↔ typed requests, replies and
//! event frames (`docs/protocol.md`).
//!
//! Parsing never panics and never closes the connection: every malformed
//! frame becomes a `BadFrame` carrying the request id when one could be read.
//! Rendering produces the exact bytes sent; an event is rendered once per node
//! and the bytes are shared by every local recipient.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::model::AttachmentInput;

mod events;
mod moderation;
pub mod replies;

pub use events::event_frame;

/// A request id as the client sent it (an integer), echoed in the reply.
pub type RequestId = serde_json::Number;

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The id to echo, if the client wants a reply.
    pub id: Option<RequestId>,
    /// What the client asks for.
    pub request: Request,
}

/// A frame that could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct BadFrame {
    /// The id, when one could be read.
    pub id: Option<RequestId>,
    /// The `bad_request` error to send.
    pub error: ApiError,
}

/// Every client verb with its fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Start the session.
    #[serde(rename = "hello")]
    Hello {
        /// JWT, when the node requires one.
        #[serde(default)]
        token: Option<String>,
        /// Display name (guest mode).
        #[serde(default)]
        name: Option<String>,
        /// Avatar URL.
        #[serde(default)]
        image: Option<String>,
    },
    /// Liveness and clock.
    #[serde(rename = "ping")]
    Ping,
    /// Create a room and join it.
    #[serde(rename = "room.create")]
    RoomCreate {
        /// Display name.
        name: String,
        /// Capacity, 2–10000.
        #[serde(default)]
        max_participants: Option<i64>,
        /// Joinable only by code.
        #[serde(default)]
        private: Option<bool>,
    },
    /// Join by id or code, optionally resuming after `since`.
    #[serde(rename = "room.join")]
    RoomJoin {
        /// Room id.
        #[serde(default)]
        room: Option<String>,
        /// Join code.
        #[serde(default)]
        code: Option<String>,
        /// Last seq the client saw.
        #[serde(default)]
        since: Option<u64>,
    },
    /// Leave a room.
    #[serde(rename = "room.leave")]
    RoomLeave {
        /// Room id.
        room: String,
    },
    /// Read a room and its participants.
    #[serde(rename = "room.get")]
    RoomGet {
        /// Room id.
        room: String,
    },
    /// Page through a room's members.
    #[serde(rename = "room.members")]
    RoomMembers {
        /// Room id.
        room: String,
        /// Where the previous page ended (its `cursor`).
        #[serde(default)]
        cursor: Option<String>,
        /// Page size, 1–500 (default 100).
        #[serde(default)]
        limit: Option<i64>,
    },
    /// The user has read a room up to `seq`.
    #[serde(rename = "room.read")]
    RoomRead {
        /// Room id.
        room: String,
        /// Read up to this seq (capped at the room's last seq).
        seq: u64,
    },
    /// The rooms the user participates in, with read state.
    #[serde(rename = "room.mine")]
    RoomMine {
        /// How many, 1–200 (default 100).
        #[serde(default)]
        limit: Option<i64>,
    },
    /// Every participant's read position in a room of at most 100.
    #[serde(rename = "room.receipts")]
    RoomReceipts {
        /// Room id.
        room: String,
    },
    /// Public rooms, most recently active first.
    #[serde(rename = "room.list")]
    RoomList {
        /// How many, 1–100.
        #[serde(default)]
        limit: Option<i64>,
    },
    /// Send a message.
    #[serde(rename = "message.send")]
    MessageSend {
        /// Room id.
        room: String,
        /// `text`, `image` or `file`.
        #[serde(default)]
        kind: Option<String>,
        /// Text or caption.
        #[serde(default)]
        content: Option<String>,
        /// Required for image and file.
        #[serde(default)]
        attachment: Option<AttachmentInput>,
        /// Idempotency key.
        #[serde(default)]
        client_msg_id: Option<String>,
    },
    /// Edit one's own message.
    #[serde(rename = "message.edit")]
    MessageEdit {
        /// Room id.
        room: String,
        /// Message id.
        message: String,
        /// New text or caption.
        content: String,
    },
    /// Delete a message (leaves a tombstone).
    #[serde(rename = "message.delete")]
    MessageDelete {
        /// Room id.
        room: String,
        /// Message id.
        message: String,
    },
    /// Search a room's messages.
    #[serde(rename = "message.search")]
    MessageSearch {
        /// Room id.
        room: String,
        /// Words that must all appear.
        query: String,
        /// How many, 1–100.
        #[serde(default)]
        limit: Option<i64>,
    },
    /// Typing indicator on or off.
    #[serde(rename = "typing")]
    Typing {
        /// Room id.
        room: String,
        /// On or off.
        active: bool,
    },
    /// Who is online in a room.
    #[serde(rename = "presence")]
    Presence {
        /// Room id.
        room: String,
    },
    /// Change a room's fields (owner, moderator).
    #[serde(rename = "room.update")]
    RoomUpdate {
        /// Room id.
        room: String,
        /// New display name.
        #[serde(default)]
        name: Option<String>,
        /// New capacity, 2–10000.
        #[serde(default)]
        max_participants: Option<i64>,
        /// Joinable only by code.
        #[serde(default)]
        private: Option<bool>,
    },
    /// Set a user's role (owner).
    #[serde(rename = "member.role")]
    MemberRole {
        /// Room id.
        room: String,
        /// The user's id.
        user: String,
        /// `moderator`, `member` or `owner` (hand the room over).
        role: String,
    },
    /// Remove a user from the room; they may join again.
    #[serde(rename = "member.kick")]
    MemberKick {
        /// Room id.
        room: String,
        /// The user's id.
        user: String,
        /// Why (at most 200 characters).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Remove a user and keep them out, for a while or until unbanned.
    #[serde(rename = "member.ban")]
    MemberBan {
        /// Room id.
        room: String,
        /// The user's id.
        user: String,
        /// How long; none: until unbanned.
        #[serde(default)]
        duration_ms: Option<i64>,
        /// Why (at most 200 characters).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Lift a ban.
    #[serde(rename = "member.unban")]
    MemberUnban {
        /// Room id.
        room: String,
        /// The user's id.
        user: String,
    },
    /// Keep a user from sending, editing and typing for a while.
    #[serde(rename = "member.mute")]
    MemberMute {
        /// Room id.
        room: String,
        /// The user's id.
        user: String,
        /// How long, 1 s – 30 d.
        #[serde(default)]
        duration_ms: Option<i64>,
    },
    /// Lift a mute.
    #[serde(rename = "member.unmute")]
    MemberUnmute {
        /// Room id.
        room: String,
        /// The user's id.
        user: String,
    },
    /// The room's bans in force.
    #[serde(rename = "room.bans")]
    RoomBans {
        /// Room id.
        room: String,
    },
    /// Delete the room for everyone (owner).
    #[serde(rename = "room.close")]
    RoomClose {
        /// Room id.
        room: String,
    },
    /// Read older messages.
    #[serde(rename = "message.history")]
    MessageHistory {
        /// Room id.
        room: String,
        /// Only messages with a smaller seq.
        #[serde(default)]
        before: Option<u64>,
        /// How many, 1–100.
        #[serde(default)]
        limit: Option<i64>,
    },
}

impl Request {
    /// The verb, for metrics and logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Ping => "ping",
            Request::RoomCreate { .. } => "room.create",
            Request::RoomJoin { .. } => "room.join",
            Request::RoomLeave { .. } => "room.leave",
            Request::RoomGet { .. } => "room.get",
            Request::RoomMembers { .. } => "room.members",
            Request::RoomList { .. } => "room.list",
            Request::RoomRead { .. } => "room.read",
            Request::RoomMine { .. } => "room.mine",
            Request::RoomReceipts { .. } => "room.receipts",
            Request::MessageSend { .. } => "message.send",
            Request::MessageHistory { .. } => "message.history",
            Request::MessageEdit { .. } => "message.edit",
            Request::MessageDelete { .. } => "message.delete",
            Request::MessageSearch { .. } => "message.search",
            Request::Typing { .. } => "typing",
            Request::Presence { .. } => "presence",
            Request::RoomUpdate { .. } => "room.update",
            Request::MemberRole { .. } => "member.role",
            Request::MemberKick { .. } => "member.kick",
            Request::MemberBan { .. } => "member.ban",
            Request::MemberUnban { .. } => "member.unban",
            Request::MemberMute { .. } => "member.mute",
            Request::MemberUnmute { .. } => "member.unmute",
            Request::RoomBans { .. } => "room.bans",
            Request::RoomClose { .. } => "room.close",
        }
    }
}

/// Every verb name, for pre-registering metrics.
pub const VERBS: [&str; 27] = [
    "room.update",
    "member.role",
    "member.kick",
    "member.ban",
    "member.unban",
    "member.mute",
    "member.unmute",
    "room.bans",
    "room.close",
    "message.edit",
    "message.delete",
    "message.search",
    "typing",
    "presence",
    "hello",
    "ping",
    "room.create",
    "room.join",
    "room.leave",
    "room.get",
    "room.members",
    "room.list",
    "message.send",
    "message.history",
    "room.read",
    "room.mine",
    "room.receipts",
];

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Frame, BadFrame> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| BadFrame {
        id: None,
        error: ApiError::bad_request(format!("frame is not valid JSON: {e}")),
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(BadFrame {
            id: None,
            error: ApiError::bad_request("frame must be a JSON object"),
        });
    };
    let id = match map.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.clone()),
        Some(_) => {
            return Err(BadFrame {
                id: None,
                error: ApiError::bad_request("`id` must be an integer"),
            });
        }
    };
    match map.get("type") {
        Some(serde_json::Value::String(_)) => {}
        Some(_) => {
            return Err(BadFrame {
                id,
                error: ApiError::bad_request("`type` must be a string"),
            });
        }
        None => {
            return Err(BadFrame {
                id,
                error: ApiError::bad_request("frame has no `type`"),
            });
        }
    }
    let request =
        serde_json::from_value::<Request>(serde_json::Value::Object(map)).map_err(|e| {
            BadFrame {
                id: id.clone(),
                error: ApiError::bad_request(e.to_string()),
            }
        })?;
    Ok(Frame { id, request })
}

#[derive(Serialize)]
struct ReplyOk<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a RequestId,
    ok: bool,
    data: &'a T,
}

#[derive(Serialize)]
struct ReplyErr<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a RequestId,
    ok: bool,
    error: &'a ApiError,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: &'a ApiError,
}

/// `{"type":"reply","id":…,"ok":true,"data":…}`.
pub fn reply_ok<T: Serialize>(id: &RequestId, data: &T) -> String {
    to_json(&ReplyOk {
        kind: "reply",
        id,
        ok: true,
        data,
    })
}

/// The reply for a failure: a `reply` with `ok: false` when the request had
/// an id, otherwise an `error` frame.
pub fn failure(id: Option<&RequestId>, error: &ApiError) -> String {
    match id {
        Some(id) => to_json(&ReplyErr {
            kind: "reply",
            id,
            ok: false,
            error,
        }),
        None => to_json(&ErrorFrame {
            kind: "error",
            error,
        }),
    }
}

/// JSON rendered by this module (an event frame, reply data) embedded as-is
/// in a reply.
pub fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).expect("JSON rendered by serde_json is valid JSON")
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .expect("frames are plain structs of strings, numbers and lists: they always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::model::{Event, Message, MessageKind, User};

    fn bad(text: &str) -> BadFrame {
        parse(text).expect_err("should be refused")
    }

    #[test]
    fn parses_verbs() {
        let f = parse(r#"{"type":"hello","id":1,"name":"Ann"}"#).expect("ok");
        assert_eq!(f.id, Some(1.into()));
        assert_eq!(
            f.request,
            Request::Hello {
                token: None,
                name: Some("Ann".into()),
                image: None
            }
        );
        let f = parse(r#"{"type":"room.join","code":"ABC234","since":5}"#).expect("ok");
        assert_eq!(f.id, None);
        assert!(matches!(
            f.request,
            Request::RoomJoin { since: Some(5), .. }
        ));
        let f = parse(
            r#"{"type":"message.send","id":9,"room":"r","kind":"image","attachment":{"url":"https://x/y.png"}}"#,
        )
        .expect("ok");
        assert_eq!(f.request.verb(), "message.send");
    }

    #[test]
    fn refuses_malformed_frames_with_id_when_readable() {
        assert!(bad("{nope").id.is_none());
        assert_eq!(bad("[1,2]").error.code, ErrorCode::BadRequest);
        assert_eq!(bad("42").error.message, "frame must be a JSON object");
        let b = bad(r#"{"id":3}"#);
        assert_eq!(b.id, Some(3.into()));
        assert_eq!(b.error.message, "frame has no `type`");
        let b = bad(r#"{"id":4,"type":"fly"}"#);
        assert_eq!(b.id, Some(4.into()));
        assert!(
            b.error.message.contains("unknown variant"),
            "{}",
            b.error.message
        );
        let b = bad(r#"{"id":5,"type":"room.create","name":5}"#);
        assert_eq!(b.id, Some(5.into()));
        assert!(
            b.error.message.contains("invalid type"),
            "{}",
            b.error.message
        );
        let b = bad(r#"{"id":6,"type":"room.get"}"#);
        assert!(b.error.message.contains("missing field `room`"));
        assert!(bad(r#"{"id":"x","type":"ping"}"#).id.is_none());
        assert!(bad(r#"{"id":1.5,"type":"ping"}"#).id.is_none());
        let b = bad(r#"{"id":7,"type":7}"#);
        assert_eq!(b.id, Some(7.into()));
    }

    #[test]
    fn renders_participants_changed_as_the_protocol_shows_it() {
        let ann = User {
            id: "u1".into(),
            name: "Ann".into(),
            image: None,
        };
        let event = Event::ParticipantsChanged {
            count: 101,
            joined: vec![ann],
            left: vec![],
        };
        assert_eq!(
            event_frame("r", 0, &event),
            r#"{"type":"event","room":"r","event":"participants.changed","participant_count":101,"joined":[{"id":"u1","name":"Ann","image":null}],"left":[]}"#
        );
    }

    #[test]
    fn renders_replies_and_errors() {
        let id: RequestId = 7.into();
        assert_eq!(
            reply_ok(&id, &serde_json::json!({})),
            r#"{"type":"reply","id":7,"ok":true,"data":{}}"#
        );
        let err = ApiError::new(ErrorCode::NotFound, "room x does not exist");
        assert_eq!(
            failure(Some(&id), &err),
            r#"{"type":"reply","id":7,"ok":false,"error":{"code":"not_found","message":"room x does not exist"}}"#
        );
        assert_eq!(
            failure(None, &err),
            r#"{"type":"error","error":{"code":"not_found","message":"room x does not exist"}}"#
        );
    }

    #[test]
    fn renders_events() {
        let user = User {
            id: "u".into(),
            name: "Ann".into(),
            image: None,
        };
        let msg = Message {
            id: "m".into(),
            room: "r".into(),
            seq: 42,
            user: user.clone(),
            kind: MessageKind::Text,
            content: "hi".into(),
            attachment: None,
            created_at: 1,
            edited_at: None,
            deleted: false,
        };
        let v: serde_json::Value =
            serde_json::from_str(&event_frame("r", 42, &Event::MessageCreated(msg))).expect("json");
        assert_eq!(v["type"], "event");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["event"], "message.created");
        assert_eq!(v["message"]["kind"], "text");
        assert_eq!(v["message"]["attachment"], serde_json::Value::Null);
        let typing = Event::Typing { user, active: true };
        let v: serde_json::Value =
            serde_json::from_str(&event_frame("r", 0, &typing)).expect("json");
        assert!(v.get("seq").is_none());
        assert_eq!(v["active"], true);
        assert_eq!(v["user"]["name"], "Ann");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::error::ErrorCode;

    const TYPES: &[&str] = &[
        "hello",
        "ping",
        "room.create",
        "room.join",
        "room.leave",
        "room.get",
        "room.list",
        "message.send",
        "message.edit",
        "message.delete",
        "message.history",
        "message.search",
        "typing",
        "presence",
        "room.read",
        "room.mine",
        "room.receipts",
        "nope",
    ];
    const FIELDS: &[&str] = &[
        "id",
        "room",
        "code",
        "since",
        "name",
        "max_participants",
        "private",
        "limit",
        "kind",
        "content",
        "attachment",
        "client_msg_id",
        "message",
        "before",
        "query",
        "active",
        "token",
        "image",
        "url",
        "size",
        "seq",
    ];

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(FIELDS), inner), 0..4).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    fn frame() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(TYPES),
            prop::collection::vec((prop::sample::select(FIELDS), value()), 0..6),
        )
            .prop_map(|(ty, fields)| {
                let mut map: serde_json::Map<String, Value> =
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                map.insert("type".into(), json!(ty));
                Value::Object(map)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary text never panics the parser; a refusal is always
        /// `bad_request` and renders as valid JSON.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,200}") {
            if let Err(bad) = parse(&text) {
                prop_assert_eq!(bad.error.code, ErrorCode::BadRequest);
                let rendered: Value = serde_json::from_str(&failure(bad.id.as_ref(), &bad.error))
                    .expect("valid JSON");
                prop_assert_eq!(&rendered["error"]["code"], "bad_request");
            }
        }

        /// Frames shaped like requests, with fields of any type: parsing
        /// never panics, the id is echoed whenever it is an integer, and a
        /// refusal says what is wrong.
        #[test]
        fn request_shaped_frames(v in frame()) {
            let text = v.to_string();
            let id_is_int = v.get("id").is_some_and(|i| i.is_i64() || i.is_u64());
            match parse(&text) {
                Ok(frame) => {
                    prop_assert_eq!(frame.id.is_some(), id_is_int);
                    prop_assert_ne!(frame.request.verb(), "");
                }
                Err(bad) => {
                    prop_assert_eq!(bad.error.code, ErrorCode::BadRequest);
                    prop_assert!(!bad.error.message.is_empty());
                    if id_is_int {
                        prop_assert_eq!(bad.id.as_ref().map(|n| n.to_string()), v.get("id").map(|i| i.to_string()));
                    }
                    let rendered: Value = serde_json::from_str(&failure(bad.id.as_ref(), &bad.error))
                        .expect("valid JSON");
                    prop_assert!(rendered.is_object());
                }
            }
        }
    }
}
