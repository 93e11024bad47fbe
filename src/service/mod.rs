//! Services: every business rule, on top of the store traits and the bus.
//!
//! - `RoomService`: creating, joining (by id or code, resuming with
//!   `since`), leaving, reading and listing rooms; system messages and
//!   participant events.
//! - `MessageService`: sending and reading messages.
//! - `SessionService`: who a connection is (guest or JWT) and its session
//!   record.
//!
//! Services know neither WebSocket nor Redis. The validation helpers here are
//! pure functions so the rules are unit-tested without any I/O.

use crate::error::ServiceError;

pub mod messages;
pub mod rooms;
pub mod sessions;

pub use messages::MessageService;
pub use rooms::{JoinHistory, Joined, RoomService};
pub use sessions::{Claims, SessionService};

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
