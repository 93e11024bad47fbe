//! Services: every business rule, on top of the store traits and the bus.
//!
//! - `RoomService`: creating, joining (by id or code, resuming with
//!   `since`), leaving, reading and listing rooms; system messages and
//!   participant events.
//! - `Crowd`: the coalesced `participants.changed` of big rooms.
//! - `MessageService`: sending and reading messages.
//! - `ModerationService`: roles, kicks, bans, mutes, room updates and
//!   closes (protocol 1.1), with their audit trail.
//! - `ReadService`: read state: `room.read`, `room.mine`, receipts, the
//!   user's room index.
//! - `SessionService`: who a connection is (guest or JWT) and its session
//!   record.
//! - `RoomSubscription`: a connection's hold on a room's events, taken
//!   before a join reads its snapshot; `Typing`: a connection's typing
//!   indicators and when they lapse.
//!
//! Services know neither WebSocket nor Redis. The validation helpers here are
//! pure functions so the rules are unit-tested without any I/O.

use crate::error::ServiceError;

pub mod crowd;
pub mod janitor;
pub mod limits;
pub mod messages;
pub mod moderation;
pub mod reads;
pub mod rooms;
pub mod sessions;
pub mod subscription;
pub mod typing;

pub use crowd::Crowd;
pub use janitor::{Janitor, JanitorSettings};
pub use limits::{LimitSettings, Limits};
pub use messages::MessageService;
pub use moderation::ModerationService;
pub use reads::{MineEntry, ReadService};
pub use rooms::{JoinFailed, JoinHistory, Joined, NewRoom, RoomService, RoomSettings};
pub use sessions::{Claims, SessionService};
pub use subscription::{Listener, RoomSubscription, UserSubscription};
pub use typing::Typing;

/// Longest accepted URL (image, attachment).
pub const MAX_URL_CHARS: usize = 2048;

/// Checks a required text field: trimmed, non-empty, at most `max` characters.
pub fn text_field(field: &str, value: &str, max: usize) -> Result<String, ServiceError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ServiceError::BadRequest(format!(
            "`{field}` must not be empty"
        )));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(ServiceError::TooLarge(format!(
            "`{field}` is {chars} characters; the limit is {max}"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ServiceError::BadRequest(format!(
            "`{field}` contains control characters"
        )));
    }
    Ok(value.to_owned())
}

/// Characters that reorder or hide text: bidirectional controls (which can
/// make a name read as something else) and invisible fillers. Joiners
/// (U+200C, U+200D) and variation selectors are not here: scripts and emoji
/// need them inside names.
fn hides_text(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

/// Checks a display name (1–64 characters): a text field with no
/// bidirectional controls or invisible fillers, at least one visible
/// character, and not the system user's name (messages from "Huddle" are
/// the server's own).
pub fn display_name(field: &str, value: &str) -> Result<String, ServiceError> {
    let name = text_field(field, value, 64)?;
    if name.chars().any(hides_text) {
        return Err(ServiceError::BadRequest(format!(
            "`{field}` contains invisible or text-direction characters"
        )));
    }
    if name
        .chars()
        .all(|c| c.is_whitespace() || matches!(c, '\u{200C}' | '\u{200D}'))
    {
        return Err(ServiceError::BadRequest(format!(
            "`{field}` has no visible character"
        )));
    }
    if name.eq_ignore_ascii_case(&crate::model::system_user().name) {
        return Err(ServiceError::BadRequest(format!(
            "`{field}` {name:?} is reserved for the server's own messages"
        )));
    }
    Ok(name)
}

/// Checks an integer field against an inclusive range, with a default.
pub fn int_field(
    field: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ServiceError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(ServiceError::BadRequest(format!(
            "`{field}` must be between {min} and {max}, got {v}"
        )));
    }
    Ok(v)
}

/// Checks an `http(s)` URL.
pub fn url_field(field: &str, value: &str) -> Result<String, ServiceError> {
    let value = value.trim();
    let chars = value.chars().count();
    if chars > MAX_URL_CHARS {
        return Err(ServiceError::TooLarge(format!(
            "`{field}` is {chars} characters; the limit is {MAX_URL_CHARS}"
        )));
    }
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !value.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(value.to_owned())
        }
        _ => Err(ServiceError::BadRequest(format!(
            "`{field}` must be an http:// or https:// URL"
        ))),
    }
}

/// Checks a room id's shape (ids are UUIDs; anything with other characters
/// could not be one and must not reach a key name).
pub fn room_id(value: &str) -> Result<&str, ServiceError> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ServiceError::BadRequest(format!(
            "`room` {value:?} is not a room id"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn text_fields() {
        assert_eq!(text_field("name", "  Ann ", 64).expect("ok"), "Ann");
        assert_eq!(
            text_field("name", "   ", 64).unwrap_err().code(),
            ErrorCode::BadRequest
        );
        assert_eq!(
            text_field("name", &"é".repeat(65), 64).unwrap_err().code(),
            ErrorCode::TooLarge
        );
        assert!(text_field("name", &"é".repeat(64), 64).is_ok());
        assert_eq!(
            text_field("name", "a\u{0}b", 64).unwrap_err().code(),
            ErrorCode::BadRequest
        );
        assert!(text_field("content", "line\nline", 64).is_ok());
    }

    #[test]
    fn display_names_refuse_impersonation_and_hidden_text() {
        assert_eq!(display_name("name", " Ann ").expect("ok"), "Ann");
        assert_eq!(
            display_name("name", "Zoë 👨‍👩‍👧").expect("emoji joiners"),
            "Zoë 👨‍👩‍👧"
        );
        assert!(
            display_name("name", "می‌خواهم").is_ok(),
            "a joiner inside a word"
        );
        for bad in [
            "Huddle",
            "huddle",
            " HUDDLE ",
            "Ann\u{202E}nnA",
            "\u{2066}Ann",
            "A\u{200B}nn",
            "\u{3164}",
            "\u{200D}\u{200C}",
            "\u{FEFF}Ann",
        ] {
            let err = display_name("name", bad).expect_err(bad);
            assert_eq!(err.code(), ErrorCode::BadRequest, "{bad:?}");
        }
        assert_eq!(
            display_name("name", &"a".repeat(65)).unwrap_err().code(),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn int_fields() {
        assert_eq!(int_field("max", None, 50, 2, 10_000).expect("default"), 50);
        assert!(int_field("max", Some(1), 50, 2, 10_000).is_err());
        assert!(int_field("max", Some(10_001), 50, 2, 10_000).is_err());
        assert_eq!(
            int_field("max", Some(10_000), 50, 2, 10_000).expect("max"),
            10_000
        );
    }

    #[test]
    fn urls() {
        assert!(url_field("url", "https://example.com/a.png").is_ok());
        assert!(url_field("url", "http://x").is_ok());
        for bad in [
            "ftp://x/y",
            "javascript:alert(1)",
            "https://",
            "https:///x",
            "https://a b",
            "x",
        ] {
            assert_eq!(
                url_field("url", bad).unwrap_err().code(),
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        let long = format!("https://x/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(
            url_field("url", &long).unwrap_err().code(),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn room_ids() {
        assert!(room_id("0190a1b2-c3d4-7e5f").is_ok());
        assert!(room_id("nope").is_ok());
        for bad in ["", "a}b", "a:b", "a b", &"a".repeat(65)] {
            assert!(room_id(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::error::ErrorCode;
    use crate::model::{AttachmentInput, MessageKind};
    use crate::service::messages::{parse_kind, validate_body};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Validators never panic and refuse only with the documented codes.
        #[test]
        fn validators_refuse_cleanly(
            text in "\\PC{0,120}|.{0,5000}",
            n in any::<i64>(),
            kind in ".{0,10}",
        ) {
            let allowed = [ErrorCode::BadRequest, ErrorCode::TooLarge];
            for r in [text_field("f", &text, 100).map(|_| ()), url_field("u", &text).map(|_| ()),
                      room_id(&text).map(|_| ()), int_field("n", Some(n), 1, 1, 100).map(|_| ())] {
                if let Err(e) = r {
                    prop_assert!(allowed.contains(&e.code()), "{e}");
                }
            }
            if let Err(e) = parse_kind(Some(&kind)) {
                prop_assert!([ErrorCode::BadRequest, ErrorCode::Forbidden].contains(&e.code()));
            }
            let att = AttachmentInput { url: text.clone(), name: Some(text.clone()), size: None, mime: None };
            for k in [MessageKind::Text, MessageKind::Image, MessageKind::File] {
                for a in [None, Some(&att)] {
                    if let Err(e) = validate_body(k, Some(&text), a) {
                        prop_assert!(allowed.contains(&e.code()), "{e}");
                    }
                }
            }
        }

        /// What a validator accepts is within its limits.
        #[test]
        fn accepted_text_is_within_limits(text in "\\PC{0,150}") {
            if let Ok(v) = text_field("f", &text, 100) {
                let chars = v.chars().count();
                prop_assert!((1..=100).contains(&chars));
                prop_assert_eq!(v.trim(), v.as_str());
            }
        }
    }
}
