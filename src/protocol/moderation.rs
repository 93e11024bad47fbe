//! Rendering of the 1.1 moderation events (`member.updated`,
//! `member.removed`, `room.closed`), whose fields differ from the 1.0
//! event frame's: `member.removed` always carries `reason` and
//! `banned_until` (`null` when none), and `member.updated`'s user carries
//! `role` and `muted_until`.

use serde::Serialize;

use crate::model::{Event, Participant, User};

/// The 1.1 moderation events: `member.updated` `{user}` (with `role` and
/// `muted_until`), `member.removed` `{user, by, reason, banned_until}` (the
/// last two always present, `null` when none), `room.closed` `{by}`.
pub(super) fn frame(room: &str, event: &Event) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T: Serialize> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        event: &'static str,
        #[serde(flatten)]
        body: T,
    }
    #[derive(Serialize)]
    struct Updated {
        user: Participant,
    }
    #[derive(Serialize)]
    struct Removed<'a> {
        user: &'a User,
        by: &'a User,
        reason: Option<&'a str>,
        banned_until: Option<i64>,
    }
    #[derive(Serialize)]
    struct Closed<'a> {
        by: &'a User,
    }
    let name = event.name();
    match event {
        Event::MemberUpdated {
            user,
            role,
            muted_until,
        } => super::to_json(&Frame {
            kind: "event",
            room,
            event: name,
            body: Updated {
                user: Participant {
                    user: user.clone(),
                    role: *role,
                    muted_until: *muted_until,
                },
            },
        }),
        Event::MemberRemoved {
            user,
            by,
            reason,
            banned_until,
        } => super::to_json(&Frame {
            kind: "event",
            room,
            event: name,
            body: Removed {
                user,
                by,
                reason: reason.as_deref(),
                banned_until: *banned_until,
            },
        }),
        Event::RoomClosed { by } => super::to_json(&Frame {
            kind: "event",
            room,
            event: name,
            body: Closed { by },
        }),
        other => super::event_frame(room, 0, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_moderation_events_as_the_contract_shows_them() {
        let user = |id: &str| User {
            id: id.into(),
            name: id.to_uppercase(),
            image: None,
        };
        let frame = |e: &Event| -> serde_json::Value {
            serde_json::from_str(&super::super::event_frame("r", 0, e)).expect("json")
        };
        let removed = frame(&Event::MemberRemoved {
            user: user("u3"),
            by: user("u2"),
            reason: None,
            banned_until: None,
        });
        assert_eq!(
            removed,
            serde_json::json!({"type": "event", "room": "r", "event": "member.removed",
                "user": {"id": "u3", "name": "U3", "image": null},
                "by": {"id": "u2", "name": "U2", "image": null},
                "reason": null, "banned_until": null})
        );
        let updated = frame(&Event::MemberUpdated {
            user: user("u3"),
            role: crate::model::Role::Moderator,
            muted_until: Some(5),
        });
        assert_eq!(updated["event"], "member.updated");
        assert_eq!(updated["user"]["role"], "moderator");
        assert_eq!(updated["user"]["muted_until"], 5);
        assert_eq!(updated["user"]["id"], "u3");
        let unmuted = frame(&Event::MemberUpdated {
            user: user("u3"),
            role: crate::model::Role::Member,
            muted_until: None,
        });
        assert!(unmuted["user"].get("muted_until").is_none(), "{unmuted}");
        let closed = frame(&Event::RoomClosed { by: user("u1") });
        assert_eq!(closed["event"], "room.closed");
        assert_eq!(closed["by"]["id"], "u1");
        assert!(closed.get("seq").is_none());
    }
}
