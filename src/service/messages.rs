//! `MessageService`: sending and reading messages.
//!
//! Rules: only participants send or read history (`forbidden`); clients
//! cannot send `system` messages; text is 1–4000 characters; image and file
//! messages need an attachment with an `http(s)` URL and may carry a caption;
//! `client_msg_id` (≤ 64 characters) makes a send idempotent per room and
//! user for 24 hours.

use std::sync::Arc;
use std::time::Duration;

use super::{int_field, room_id, text_field, url_field};
use crate::error::ServiceError;
use crate::model::{Attachment, AttachmentInput, Event, Message, MessageKind, Role, User, now_ms};
use crate::store::{
    AppendOutcome, HistoryPage, MessageStore, ModerationStore, ReplaceOutcome, RoomStore, ScanCap,
    StoredMessage,
};

/// Longest message text.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// Checks a `client_msg_id`: 1–64 characters, not blank, no control
/// characters. It is kept verbatim (a retry must send the same bytes).
pub fn check_client_msg_id(id: &str) -> Result<(), ServiceError> {
    if id.trim().is_empty() {
        return Err(ServiceError::BadRequest(
            "`client_msg_id` must not be empty or blank".into(),
        ));
    }
    if id.chars().count() > MAX_CLIENT_MSG_ID {
        return Err(ServiceError::TooLarge(format!(
            "`client_msg_id` is longer than {MAX_CLIENT_MSG_ID} characters"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest(
            "`client_msg_id` contains control characters".into(),
        ));
    }
    Ok(())
}

/// A message's new state, decided by an edit or a delete.
enum Change {
    /// Edited: published as `message.updated`.
    Edit(Message),
    /// Deleted (a tombstone): published as `message.deleted`.
    Delete(Message),
}

impl Change {
    /// The event that stores and announces it, and the message itself.
    fn into_event(self) -> (Event, Message) {
        match self {
            Change::Edit(m) => (Event::MessageUpdated(m.clone()), m),
            Change::Delete(m) => (Event::MessageDeleted(m.clone()), m),
        }
    }
}

/// Longest `client_msg_id`.
pub const MAX_CLIENT_MSG_ID: usize = 64;
/// Longest search query.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most messages one search reads, newest first: the bound on its cost.
pub const SEARCH_SCAN_CAP: usize = 2000;
/// Bytes of stored messages a search reads at most (a room of long
/// messages is scanned less deep).
pub const SEARCH_SCAN_BYTES: usize = 2 * 1024 * 1024;
/// Attempts at a compare-and-set edit or delete racing other changes.
const REPLACE_ATTEMPTS: usize = 3;

/// The result of a send.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The message, with its seq.
    pub message: Message,
    /// A retry of an earlier send: nothing new was broadcast.
    pub duplicate: bool,
}

/// Message rules.
#[derive(Clone)]
pub struct MessageService {
    messages: Arc<dyn MessageStore>,
    rooms: Arc<dyn RoomStore>,
    /// Roles (who may delete any message) and mutes.
    moderation: Arc<dyn ModerationStore>,
    edit_window: Duration,
}

/// Parses a client-sent kind; `system` is refused.
pub fn parse_kind(kind: Option<&str>) -> Result<MessageKind, ServiceError> {
    match kind.unwrap_or("text") {
        "text" => Ok(MessageKind::Text),
        "image" => Ok(MessageKind::Image),
        "file" => Ok(MessageKind::File),
        "system" => Err(ServiceError::Forbidden(
            "clients cannot send system messages".into(),
        )),
        other => Err(ServiceError::BadRequest(format!(
            "`kind` must be text, image or file, got {other:?}"
        ))),
    }
}

/// Validates content and attachment for a kind.
pub fn validate_body(
    kind: MessageKind,
    content: Option<&str>,
    attachment: Option<&AttachmentInput>,
) -> Result<(String, Option<Attachment>), ServiceError> {
    match kind {
        MessageKind::Text => {
            if attachment.is_some() {
                return Err(ServiceError::BadRequest(
                    "text messages have no attachment; use kind image or file".into(),
                ));
            }
            let content = content.ok_or_else(|| {
                ServiceError::BadRequest("`content` is required for text messages".into())
            })?;
            Ok((text_field("content", content, MAX_CONTENT_CHARS)?, None))
        }
        MessageKind::Image | MessageKind::File => {
            let input = attachment.ok_or_else(|| {
                ServiceError::BadRequest(format!(
                    "`attachment` is required for {} messages",
                    kind.as_str()
                ))
            })?;
            let url = url_field("attachment.url", &input.url)?;
            let name = match &input.name {
                Some(n) => text_field("attachment.name", n, 255)?,
                None => url
                    .rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("file")
                    .chars()
                    .take(255)
                    .collect(),
            };
            let mime = input
                .mime
                .as_deref()
                .map(|m| text_field("attachment.mime", m, 255))
                .transpose()?;
            let caption = match content {
                Some(c) if !c.trim().is_empty() => text_field("content", c, MAX_CONTENT_CHARS)?,
                _ => String::new(),
            };
            Ok((
                caption,
                Some(Attachment {
                    url,
                    name,
                    size: input.size,
                    mime,
                }),
            ))
        }
        MessageKind::System => Err(ServiceError::Forbidden(
            "clients cannot send system messages".into(),
        )),
    }
}

impl MessageService {
    /// Rules over the given stores.
    pub fn new(
        messages: Arc<dyn MessageStore>,
        rooms: Arc<dyn RoomStore>,
        moderation: Arc<dyn ModerationStore>,
        edit_window: Duration,
    ) -> MessageService {
        MessageService {
            messages,
            rooms,
            moderation,
            edit_window,
        }
    }

    /// Sends a message.
    pub async fn send(
        &self,
        user: &User,
        room: &str,
        kind: Option<&str>,
        content: Option<&str>,
        attachment: Option<&AttachmentInput>,
        client_msg_id: Option<&str>,
    ) -> Result<Sent, ServiceError> {
        let room = room_id(room)?;
        let kind = parse_kind(kind)?;
        let (content, attachment) = validate_body(kind, content, attachment)?;
        if let Some(id) = client_msg_id {
            check_client_msg_id(id)?;
        }
        let message = Message {
            id: uuid::Uuid::now_v7().to_string(),
            room: room.to_owned(),
            seq: 0,
            user: user.clone(),
            kind,
            content,
            attachment,
            created_at: now_ms(),
            edited_at: None,
            deleted: false,
        };
        match self.messages.append(&message, client_msg_id).await? {
            AppendOutcome::Appended(message) => Ok(Sent {
                message,
                duplicate: false,
            }),
            AppendOutcome::Duplicate(message) => Ok(Sent {
                message,
                duplicate: true,
            }),
            AppendOutcome::NoRoom => Err(ServiceError::NotFound(format!(
                "room {room} does not exist"
            ))),
            AppendOutcome::NotMember => Err(ServiceError::Forbidden(
                "join the room before sending to it".into(),
            )),
            AppendOutcome::Muted(until) => Err(muted(until)),
        }
    }

    /// Messages before `before` (a seq), ascending.
    pub async fn history(
        &self,
        user: &User,
        room: &str,
        before: Option<u64>,
        limit: Option<i64>,
    ) -> Result<HistoryPage, ServiceError> {
        let room = room_id(room)?;
        let limit = int_field("limit", limit, 50, 1, 100)?;
        self.require_participant(user, room).await?;
        Ok(self.messages.history(room, before, limit as usize).await?)
    }

    /// History without a user, for the open REST endpoint in guest mode:
    /// public rooms only.
    pub async fn history_public(
        &self,
        room: &str,
        before: Option<u64>,
        limit: Option<i64>,
    ) -> Result<HistoryPage, ServiceError> {
        let room = room_id(room)?;
        let limit = int_field("limit", limit, 50, 1, 100)?;
        match self.rooms.room(room).await? {
            None => Err(ServiceError::NotFound(format!(
                "room {room} does not exist"
            ))),
            Some(r) if r.private => Err(ServiceError::Forbidden(
                "this room is private: join it to read its history".into(),
            )),
            Some(_) => Ok(self.messages.history(room, before, limit as usize).await?),
        }
    }

    /// Edits a message: its author only, within the edit window.
    pub async fn edit(
        &self,
        user: &User,
        room: &str,
        message: &str,
        content: &str,
    ) -> Result<Message, ServiceError> {
        let room = room_id(room)?;
        let message = message_id(message)?;
        self.require_participant(user, room).await?;
        self.change(room, message, |m| {
            if m.kind == MessageKind::System {
                return Err(ServiceError::Forbidden(
                    "system messages cannot be edited".into(),
                ));
            }
            if m.user.id != user.id {
                return Err(ServiceError::Forbidden(
                    "only the author may edit a message".into(),
                ));
            }
            if m.deleted {
                return Err(ServiceError::Conflict("the message was deleted".into()));
            }
            let now = now_ms();
            if now.saturating_sub(m.created_at) > self.edit_window.as_millis() as u64 {
                return Err(ServiceError::Conflict(format!(
                    "the edit window of {} s has passed",
                    self.edit_window.as_secs()
                )));
            }
            let content = match m.kind {
                MessageKind::Text => text_field("content", content, MAX_CONTENT_CHARS)?,
                _ if content.trim().is_empty() => String::new(),
                _ => text_field("content", content, MAX_CONTENT_CHARS)?,
            };
            let mut edited = m.clone();
            edited.content = content;
            edited.edited_at = Some(now);
            Ok(Some(Change::Edit(edited)))
        })
        .await
    }

    /// Deletes a message, leaving a tombstone: its author, or the room's
    /// owner or a moderator (protocol 1.1; the owner is the creator unless
    /// the room was handed over). Deleting a tombstone again returns it
    /// unchanged.
    pub async fn delete(
        &self,
        user: &User,
        room: &str,
        message: &str,
    ) -> Result<Message, ServiceError> {
        let room = room_id(room)?;
        let message = message_id(message)?;
        self.require_participant(user, room).await?;
        let role = self
            .moderation
            .roles(room, std::slice::from_ref(&user.id))
            .await?
            .pop()
            .unwrap_or(Role::Member);
        self.change(room, message, |m| {
            if m.kind == MessageKind::System {
                return Err(ServiceError::Forbidden(
                    "system messages cannot be deleted".into(),
                ));
            }
            if m.user.id != user.id && role == Role::Member {
                return Err(ServiceError::Forbidden(
                    "only the author, the room's owner or a moderator may delete a message".into(),
                ));
            }
            if m.deleted {
                return Ok(None);
            }
            let mut tombstone = m.clone();
            tombstone.deleted = true;
            tombstone.content = String::new();
            tombstone.attachment = None;
            Ok(Some(Change::Delete(tombstone)))
        })
        .await
    }

    /// Changes a message by compare-and-set: reads it, asks `decide` for its
    /// new state (`None`: leave it as it is), and stores that unless the
    /// message changed meanwhile, in which case it starts over.
    async fn change(
        &self,
        room: &str,
        message: &str,
        decide: impl Fn(&Message) -> Result<Option<Change>, ServiceError>,
    ) -> Result<Message, ServiceError> {
        for _ in 0..REPLACE_ATTEMPTS {
            let stored = self.existing(room, message).await?;
            let Some(change) = decide(&stored.message)? else {
                return Ok(stored.message);
            };
            let (event, changed) = change.into_event();
            match self.messages.replace(room, &stored.raw, &event).await? {
                ReplaceOutcome::Replaced(_) => return Ok(changed),
                ReplaceOutcome::Changed => continue,
                ReplaceOutcome::Gone => return Err(message_not_found(message)),
                ReplaceOutcome::Muted(until) => return Err(muted(until)),
            }
        }
        Err(ServiceError::Conflict(
            "the message is changing under us; try again".into(),
        ))
    }

    /// Case-insensitive search for messages containing every query word,
    /// newest first. Reads at most `SEARCH_SCAN_CAP` of the newest messages.
    pub async fn search(
        &self,
        user: &User,
        room: &str,
        query: &str,
        limit: Option<i64>,
    ) -> Result<Vec<Message>, ServiceError> {
        let room = room_id(room)?;
        let query = text_field("query", query, MAX_QUERY_CHARS)?;
        let limit = int_field("limit", limit, 20, 1, 100)?;
        self.require_participant(user, room).await?;
        let mut words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        words.sort();
        words.dedup();
        Ok(self
            .messages
            .search(
                room,
                &words,
                limit as usize,
                ScanCap {
                    messages: SEARCH_SCAN_CAP,
                    bytes: SEARCH_SCAN_BYTES,
                },
            )
            .await?)
    }

    async fn existing(&self, room: &str, message: &str) -> Result<StoredMessage, ServiceError> {
        self.messages
            .message(room, message)
            .await?
            .ok_or_else(|| message_not_found(message))
    }

    async fn require_participant(&self, user: &User, room: &str) -> Result<(), ServiceError> {
        if self.rooms.is_participant(room, &user.id).await? {
            return Ok(());
        }
        if self.rooms.room(room).await?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "room {room} does not exist"
            )));
        }
        Err(ServiceError::Forbidden(
            "join the room before reading it".into(),
        ))
    }
}

/// The refusal of a muted user's send or edit.
fn muted(until: u64) -> ServiceError {
    ServiceError::Forbidden(format!(
        "you are muted in this room until {until} (Unix ms)"
    ))
}

fn message_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("message {id} does not exist (or has expired)"))
}

/// Checks a message id's shape (same rule as room ids).
fn message_id(value: &str) -> Result<&str, ServiceError> {
    room_id(value)
        .map_err(|_| ServiceError::BadRequest(format!("`message` {value:?} is not a message id")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn att(url: &str) -> AttachmentInput {
        AttachmentInput {
            url: url.into(),
            name: None,
            size: Some(10),
            mime: Some("image/png".into()),
        }
    }

    #[test]
    fn client_msg_ids_are_visible_text() {
        assert!(check_client_msg_id("c-1 ünïcode").is_ok());
        assert!(check_client_msg_id(&"x".repeat(MAX_CLIENT_MSG_ID)).is_ok());
        for bad in ["", "   ", "\t", "a\u{0}b", "a\nb", "\u{7f}"] {
            assert_eq!(
                check_client_msg_id(bad).unwrap_err().code(),
                ErrorCode::BadRequest,
                "{bad:?}"
            );
        }
        assert_eq!(
            check_client_msg_id(&"x".repeat(MAX_CLIENT_MSG_ID + 1))
                .unwrap_err()
                .code(),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(parse_kind(None).expect("default"), MessageKind::Text);
        assert_eq!(
            parse_kind(Some("system")).unwrap_err().code(),
            ErrorCode::Forbidden
        );
        assert_eq!(
            parse_kind(Some("video")).unwrap_err().code(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn bodies() {
        let (c, a) = validate_body(MessageKind::Text, Some("hi"), None).expect("text");
        assert_eq!((c.as_str(), a), ("hi", None));
        let code = |r: Result<_, ServiceError>| r.unwrap_err().code();
        assert_eq!(
            code(validate_body(MessageKind::Text, None, None)),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(validate_body(MessageKind::Text, Some(""), None)),
            ErrorCode::BadRequest
        );
        let long = "x".repeat(MAX_CONTENT_CHARS + 1);
        assert_eq!(
            code(validate_body(MessageKind::Text, Some(&long), None)),
            ErrorCode::TooLarge
        );
        assert!(validate_body(MessageKind::Text, Some(&long[1..]), None).is_ok());
        assert_eq!(
            code(validate_body(MessageKind::Image, None, None)),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(validate_body(
                MessageKind::Image,
                None,
                Some(&att("ftp://x/y.png"))
            )),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(validate_body(
                MessageKind::Text,
                Some("x"),
                Some(&att("https://x/y.png"))
            )),
            ErrorCode::BadRequest
        );
        let (caption, a) =
            validate_body(MessageKind::Image, None, Some(&att("https://x/y.png"))).expect("image");
        assert_eq!(caption, "");
        let a = a.expect("attachment");
        assert_eq!(a.name, "y.png");
        assert_eq!(a.size, Some(10));
    }
}
