//! Small helpers for assertions: reading fields of JSON frames with
//! context in the panic message, the protocol's error shape, seq order, and
//! unique names.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A JSON value as text, cut to 400 characters for assertion messages
/// (requests in these tests can be tens of kilobytes).
pub(crate) fn brief(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 400 {
        return text;
    }
    let head: String = text.chars().take(400).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// `true` for `message.created` / `message.updated` / `message.deleted`.
pub(crate) fn is_message_event(ev: &Value) -> bool {
    ev["type"] == "event"
        && ev["event"]
            .as_str()
            .is_some_and(|s| s.starts_with("message."))
}

/// An error object must carry string `code` and `message`, and the code
/// must be one of the protocol's complete set.
pub(crate) fn assert_error_shape(error: &Value, frame: &Value) {
    const CODES: &[&str] = &[
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "rate_limited",
        "too_large",
        "unavailable",
        "internal",
    ];
    let code = error["code"].as_str().unwrap_or_else(|| {
        panic!("error without string `code`: {frame}");
    });
    assert!(
        CODES.contains(&code),
        "error code {code:?} is not in the protocol's set: {frame}"
    );
    assert!(
        error["message"].is_string(),
        "error without string `message`: {frame}"
    );
}

/// Asserts that `v` is a Unix time in milliseconds within a minute of now.
pub(crate) fn assert_recent_ms(v: &Value, what: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ms = v
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: expected Unix milliseconds, got {v}"));
    assert!(
        ms.abs_diff(now) < 60_000,
        "{what}: {ms} is not Unix milliseconds near now ({now})"
    );
}

/// `v[key]` as a string (panics with context when absent).
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("expected string field `{key}` in {v}"))
}

/// `v["seq"]` (panics with context when absent).
pub(crate) fn seq(v: &Value) -> u64 {
    v["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("expected integer `seq` in {v}"))
}

/// The `id`s of a JSON array of objects.
pub(crate) fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {list}"))
        .iter()
        .map(|v| s(v, "id").to_string())
        .collect()
}

/// The `seq`s of a JSON array of messages.
pub(crate) fn seqs(list: &[Value]) -> Vec<u64> {
    list.iter().map(seq).collect()
}

/// Asserts that `seqs` increase by exactly 1 at every step.
pub(crate) fn assert_consecutive(seqs: &[u64], context: &str) {
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{context}: seq must increase by exactly 1, got {seqs:?}"
        );
    }
}

/// A random-enough unique string for names and client message ids.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Room events as short lines for comparing a sequence: `message CONTENT`
/// for a new message, `EVENT NAME` for an event about a user.
pub(crate) fn event_story(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["event"].as_str().unwrap_or_default() {
            "message.created" => format!(
                "message {}",
                e["message"]["content"].as_str().unwrap_or("?")
            ),
            other => format!("{other} {}", e["user"]["name"].as_str().unwrap_or("?")),
        })
        .collect()
}
