//! Reading Redis replies into model types, and the error constructors the
//! engine shares. Nothing read from Redis is unwrapped: what cannot be read
//! is `StoreError::Corrupt`.

use std::collections::HashMap;

use redis::{RedisError, Value};

use crate::codec;
use crate::error::{StoreError, StoreResult};
use crate::model::{Event, Message, Room, User, now_us};

/// A failed Redis call: the Redis error stays the source.
pub(super) fn unavailable(e: RedisError) -> StoreError {
    StoreError::backend(e)
}

/// Something Redis holds or answered that we cannot read.
pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Splits a script reply into its status and data. `late` (the write's
/// deadline passed before Redis ran it) is `Unavailable`: nothing was written.
pub(super) fn status(value: Value) -> StoreResult<(String, Vec<Value>)> {
    let mut items: Vec<Value> = redis::from_redis_value(value).map_err(corrupt)?;
    if items.is_empty() {
        return Err(corrupt("empty script reply"));
    }
    let head: String = redis::from_redis_value(items.remove(0)).map_err(corrupt)?;
    if head == "late" {
        return Err(StoreError::Unavailable(
            "Redis ran the write after its deadline and refused it; nothing was written".into(),
        ));
    }
    Ok((head, items))
}

/// A room from its hash and its member count; `None` when the hash is empty.
pub(super) fn parse_room(
    fields: &HashMap<String, String>,
    count: u32,
) -> StoreResult<Option<Room>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .ok_or_else(|| corrupt(format!("room hash has no {k}")))
    };
    let num = |k: &str| -> StoreResult<u64> {
        get(k)?
            .parse::<u64>()
            .map_err(|e| corrupt(format!("room field {k}: {e}")))
    };
    Ok(Some(Room {
        id: get("id")?.clone(),
        code: get("code")?.clone(),
        name: get("name")?.clone(),
        created_by: get("created_by")?.clone(),
        created_at: num("created_at")?,
        max_participants: num("max_participants")? as u32,
        private: get("private")? == "1",
        participant_count: count,
        last_seq: num("seq")?,
    }))
}

/// Users stored as JSON (`room_members` values), sorted as both engines list
/// them.
pub(super) fn parse_users<'a>(raw: impl Iterator<Item = &'a String>) -> StoreResult<Vec<User>> {
    let mut users = raw
        .map(|j| serde_json::from_str::<User>(j).map_err(corrupt))
        .collect::<StoreResult<Vec<User>>>()?;
    crate::store::sort_users(&mut users);
    Ok(users)
}

/// A stored message record (an envelope).
pub(super) fn parse_message(raw: &[u8]) -> StoreResult<Message> {
    codec::decode_message(raw).map_err(corrupt)
}

/// A user as stored in `room_members` and sessions.
pub(super) fn user_json(user: &User) -> String {
    // Invariant: a `User` is three strings with derived `Serialize`;
    // serde_json cannot fail on it.
    serde_json::to_string(user).expect("a User always serializes to JSON")
}

/// The `presence:{R}` member of a connection.
pub(super) fn presence_member(user: &str, conn: &str) -> String {
    format!("{user}:{conn}")
}

/// The envelope tail of a system message (created with seq 0: the script
/// assigns it).
pub(super) fn note_tail(note: &Message) -> Vec<u8> {
    let mut stored = note.clone();
    stored.seq = 0;
    codec::encode_tail(&Event::MessageCreated(stored), now_us())
}
