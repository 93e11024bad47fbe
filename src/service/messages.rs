//! `MessageService`: sending and reading messages.
//!
//! Rules: only participants send or read history (`forbidden`); clients
//! cannot send `system` messages; text is 1–4000 characters; image and file
//! messages need an attachment with an `http(s)` URL and may carry a caption;
//! `client_msg_id` (≤ 64 characters) makes a send idempotent per room and
//! user for 24 hours.

use std::sync::Arc;

use super::{int_field, room_id, text_field, url_field};
use crate::error::ServiceError;
use crate::model::{Attachment, Message, MessageKind, User, now_ms};
use crate::protocol::AttachmentInput;
use crate::store::{AppendOutcome, HistoryPage, MessageStore, RoomStore};

/// Longest message text.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// Longest `client_msg_id`.
pub const MAX_CLIENT_MSG_ID: usize = 64;

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
    pub fn new(messages: Arc<dyn MessageStore>, rooms: Arc<dyn RoomStore>) -> MessageService {
        MessageService { messages, rooms }
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
            if id.is_empty() {
                return Err(ServiceError::BadRequest(
                    "`client_msg_id` must not be empty".into(),
                ));
            }
            if id.chars().count() > MAX_CLIENT_MSG_ID {
                return Err(ServiceError::TooLarge(format!(
                    "`client_msg_id` is longer than {MAX_CLIENT_MSG_ID} characters"
                )));
            }
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
