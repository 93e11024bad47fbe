//! A connection's requests: from a WebSocket message to a typed request
//! (`protocol::parse`), through the limits, to the service that answers it,
//! and back as one reply (or one `error` frame for a request without an id).
//! Verbs about room membership and typing are in `membership`.

use std::time::Instant;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tracing::Instrument;

use super::limits::Verdict;
use super::{Connection, Flow};
use crate::error::{ApiError, ErrorCode, ServiceError, close};
use crate::metrics::TypeLabel;
use crate::model::now_ms;
use crate::protocol::replies::{
    BansData, Empty, HelloData, HistoryData, MembersData, MessageData, MineData, MineRoom,
    PingData, PresenceData, ReadData, Receipt, ReceiptsData, RoomData, RoomWithParticipants,
    RoomsData, SearchData, data,
};
use crate::protocol::{self, Request, RequestId};

impl Connection {
    /// Handles one thing read from the socket.
    pub(super) async fn on_frame(&mut self, next: Result<WsMessage, WsError>) -> Flow {
        let msg = match next {
            Ok(msg) => msg,
            Err(WsError::Capacity(e)) => {
                tracing::debug!(error = %e, "frame too large");
                return Flow::Close(close::TOO_BIG);
            }
            Err(WsError::Protocol(e)) => {
                tracing::debug!(error = %e, "websocket protocol error");
                return Flow::Close(close::PROTOCOL);
            }
            Err(WsError::Utf8(e)) => {
                tracing::debug!(error = %e, "text frame is not utf-8");
                return Flow::Close(close::NOT_UTF8);
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                return Flow::Closed;
            }
        };
        match msg {
            WsMessage::Text(text) => self.on_text(&text).await,
            WsMessage::Binary(_) => {
                self.count_in("binary");
                match self.admit(None) {
                    Err(flow) => flow,
                    Ok(()) => {
                        self.fail(
                            None,
                            ApiError::bad_request(
                                "binary frames are not accepted; send JSON in text frames",
                            ),
                        );
                        Flow::Continue
                    }
                }
            }
            // tungstenite has queued the close reply.
            WsMessage::Close(_) => Flow::Closed,
            // Pings are answered by tungstenite; pongs only prove life.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Flow::Continue,
        }
    }

    fn count_in(&self, verb: &'static str) {
        self.app
            .metrics()
            .frames_in
            .get_or_create(&TypeLabel { r#type: verb })
            .inc();
    }

    /// Applies the limits to one frame. A refused frame gets exactly one
    /// answer: a `rate_limited` reply to its id, or an `error` frame when it
    /// has none.
    fn admit(&mut self, id: Option<&RequestId>) -> Result<(), Flow> {
        match self.limits.check() {
            Verdict::Pass => Ok(()),
            Verdict::Abusive => {
                tracing::info!("closing a connection that keeps flooding");
                Err(Flow::Close(close::ABUSE))
            }
            Verdict::Limited(wait) => {
                self.app.metrics().rate_limited.inc();
                let mut err = ApiError::new(ErrorCode::RateLimited, "too many requests; slow down");
                err.retry_after_ms = Some(wait.as_millis() as u64);
                self.fail(id, err);
                Err(Flow::Continue)
            }
        }
    }

    /// Whether the connection may be sent more history now.
    fn check_read_budget(&mut self) -> Result<(), ApiError> {
        let Some(budget) = &mut self.read_budget else {
            return Ok(());
        };
        budget.check(Instant::now()).map_err(|wait| {
            self.app.metrics().abuse_limited("read_bytes");
            let mut err = ApiError::new(
                ErrorCode::RateLimited,
                "too much history read; wait before reading more",
            );
            err.retry_after_ms = Some(wait.as_millis() as u64 + 1);
            err
        })
    }

    /// Takes a history reply of `bytes` out of the read budget.
    pub(super) fn charge_read(&mut self, bytes: usize) {
        if let Some(budget) = &mut self.read_budget {
            budget.charge(bytes, Instant::now());
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(bad) => {
                self.count_in("invalid");
                if let Err(flow) = self.admit(bad.id.as_ref()) {
                    return flow;
                }
                self.fail(bad.id.as_ref(), bad.error);
                return Flow::Continue;
            }
        };
        self.count_in(frame.request.verb());
        if let Err(flow) = self.admit(frame.id.as_ref()) {
            return flow;
        }
        let reads_history = matches!(
            frame.request,
            Request::RoomJoin { .. }
                | Request::MessageHistory { .. }
                | Request::MessageSearch { .. }
        );
        if reads_history && let Err(err) = self.check_read_budget() {
            self.fail(frame.id.as_ref(), err);
            return Flow::Continue;
        }
        let verb = frame.request.verb();
        // Every request but a ping waits for a turn: in a storm, requests
        // queue here (the connection still sends its events meanwhile)
        // rather than all at once in the Redis pipeline.
        let _turn = match frame.request {
            Request::Ping => None,
            _ => Some(self.turn().await),
        };
        let span = tracing::info_span!(
            "request",
            verb,
            id = frame.id.as_ref().map(|n| n.to_string())
        );
        let outcome = self
            .dispatch(frame.id.as_ref(), frame.request)
            .instrument(span)
            .await;
        match outcome {
            Ok(Some(reply)) => {
                if reads_history {
                    self.charge_read(reply.get().len());
                }
                if let Some(id) = &frame.id {
                    self.send_frame(protocol::reply_ok(id, &reply));
                }
                Flow::Continue
            }
            Ok(None) => Flow::Continue,
            Err(err) => {
                let then_close = close::after_refusal(verb, err.code);
                self.fail(frame.id.as_ref(), err);
                match then_close {
                    Some(code) => Flow::Close(code),
                    None => Flow::Continue,
                }
            }
        }
    }

    /// A turn to run a request (`--max-inflight-requests`); counted in
    /// `huddle_requests_waiting` while the node has none free.
    pub(super) async fn turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.admission.clone().try_acquire_owned() {
            return Some(permit);
        }
        let waiting = &self.app.metrics().requests_waiting;
        waiting.inc();
        let permit = self.admission.clone().acquire_owned().await.ok();
        waiting.dec();
        permit
    }

    /// Runs a request. `Ok(None)` means the reply was queued already (joins).
    async fn dispatch(
        &mut self,
        id: Option<&RequestId>,
        request: Request,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let request = match request {
            Request::Hello { token, name, image } => {
                return self
                    .hello(token.as_deref(), name.as_deref(), image.as_deref())
                    .await
                    .map(Some);
            }
            other => other,
        };
        let Some(user) = self.user.clone() else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the first frame must be hello",
            ));
        };
        let app = self.app.clone();
        let result: Result<Option<Box<RawValue>>, ServiceError> = match request {
            Request::Hello { .. } => Err(ServiceError::BadRequest(
                "hello was already said on this connection".into(),
            )),
            Request::Ping => Ok(Some(data(&PingData {
                server_time: now_ms(),
            }))),
            Request::RoomCreate {
                name,
                max_participants,
                private,
            } => {
                return self
                    .create(id, &user, &name, max_participants, private)
                    .await;
            }
            Request::RoomJoin { room, code, since } => {
                return self
                    .join(id, &user, room.as_deref(), code.as_deref(), since)
                    .await;
            }
            Request::RoomLeave { room } => return self.leave(&user, &room).await,
            Request::Typing { room, active } => return self.typing(&user, &room, active).await,
            Request::RoomGet { room } => match app.rooms().get(&user, &room).await {
                Ok((r, p)) => app.moderation().participants(&r.id, p).await.map(|p| {
                    Some(data(&RoomWithParticipants {
                        room: &r,
                        participants: &p,
                    }))
                }),
                Err(e) => Err(e),
            },
            Request::RoomMembers {
                room,
                cursor,
                limit,
            } => match app
                .rooms()
                .members(&user, &room, cursor.as_deref(), limit)
                .await
            {
                Ok(page) => app
                    .moderation()
                    .participants(&room, page.users)
                    .await
                    .map(|members| {
                        Some(data(&MembersData {
                            members: &members,
                            cursor: page.next.as_deref(),
                        }))
                    }),
                Err(e) => Err(e),
            },
            Request::RoomRead { room, seq } => app
                .reads()
                .read(&user, &self.conn_id, &room, seq)
                .await
                .map(|read_seq| Some(data(&ReadData { read_seq }))),
            Request::RoomMine { limit } => app.reads().mine(&user, limit).await.map(|rooms| {
                Some(data(&MineData {
                    rooms: rooms
                        .iter()
                        .map(|m| MineRoom {
                            room: &m.room,
                            read_seq: m.read_seq,
                            unread: m.unread,
                            role: m.role,
                        })
                        .collect(),
                }))
            }),
            Request::RoomReceipts { room } => {
                app.reads().receipts(&user, &room).await.map(|reads| {
                    Some(data(&ReceiptsData {
                        reads: reads
                            .iter()
                            .map(|(user, read_seq)| Receipt {
                                user,
                                read_seq: *read_seq,
                            })
                            .collect(),
                    }))
                })
            }
            Request::RoomList { limit } => app
                .rooms()
                .list(limit)
                .await
                .map(|rooms| Some(data(&RoomsData { rooms: &rooms }))),
            Request::MessageSend {
                room,
                kind,
                content,
                attachment,
                client_msg_id,
            } => match app
                .messages()
                .send(
                    &user,
                    &room,
                    kind.as_deref(),
                    content.as_deref(),
                    attachment.as_ref(),
                    client_msg_id.as_deref(),
                )
                .await
            {
                Ok(sent) => {
                    if !sent.duplicate {
                        app.metrics().messages_sent.inc();
                        self.messages_sent += 1;
                        // The send marked the room read for its author:
                        // their other connections are told.
                        app.reads()
                            .sent(&user, &self.conn_id, &room, sent.message.seq);
                    }
                    Ok(Some(data(&MessageData {
                        message: &sent.message,
                    })))
                }
                Err(e) => Err(e),
            },
            Request::MessageHistory {
                room,
                before,
                limit,
            } => app
                .messages()
                .history(&user, &room, before, limit)
                .await
                .map(|page| {
                    Some(data(&HistoryData {
                        messages: &page.messages,
                        has_more: page.has_more,
                    }))
                }),
            Request::MessageEdit {
                room,
                message,
                content,
            } => app
                .messages()
                .edit(&user, &room, &message, &content)
                .await
                .map(|m| Some(data(&MessageData { message: &m }))),
            Request::MessageDelete { room, message } => app
                .messages()
                .delete(&user, &room, &message)
                .await
                .map(|m| Some(data(&MessageData { message: &m }))),
            Request::MessageSearch { room, query, limit } => app
                .messages()
                .search(&user, &room, &query, limit)
                .await
                .map(|messages| {
                    Some(data(&SearchData {
                        messages: &messages,
                    }))
                }),
            Request::RoomUpdate {
                room,
                name,
                max_participants,
                private,
            } => app
                .moderation()
                .update(&user, &room, name.as_deref(), max_participants, private)
                .await
                .map(|r| Some(data(&RoomData { room: &r }))),
            Request::MemberRole {
                room,
                user: target,
                role,
            } => app
                .moderation()
                .set_role(&user, &room, &target, &role)
                .await
                .map(|()| Some(data(&Empty {}))),
            Request::MemberKick {
                room,
                user: target,
                reason,
            } => app
                .moderation()
                .remove(&user, &room, &target, None, reason.as_deref())
                .await
                .map(|()| Some(data(&Empty {}))),
            Request::MemberBan {
                room,
                user: target,
                duration_ms,
                reason,
            } => app
                .moderation()
                .remove(&user, &room, &target, Some(duration_ms), reason.as_deref())
                .await
                .map(|()| Some(data(&Empty {}))),
            Request::MemberUnban { room, user: target } => app
                .moderation()
                .unban(&user, &room, &target)
                .await
                .map(|()| Some(data(&Empty {}))),
            Request::MemberMute {
                room,
                user: target,
                duration_ms,
            } => app
                .moderation()
                .mute(&user, &room, &target, Some(duration_ms))
                .await
                .map(|()| Some(data(&Empty {}))),
            Request::MemberUnmute { room, user: target } => app
                .moderation()
                .mute(&user, &room, &target, None)
                .await
                .map(|()| Some(data(&Empty {}))),
            Request::RoomBans { room } => app
                .moderation()
                .bans(&user, &room)
                .await
                .map(|bans| Some(data(&BansData { bans: &bans }))),
            Request::RoomClose { room } => app
                .moderation()
                .close(&user, &room)
                .await
                .map(|()| Some(data(&Empty {}))),
            Request::Presence { room } => app
                .rooms()
                .presence(&user, &room)
                .await
                .map(|online| Some(data(&PresenceData { online: &online }))),
        };
        result.map_err(ApiError::from)
    }

    async fn hello(
        &mut self,
        token: Option<&str>,
        name: Option<&str>,
        image: Option<&str>,
    ) -> Result<Box<RawValue>, ApiError> {
        if self.user.is_some() {
            return Err(ApiError::bad_request(
                "hello was already said on this connection",
            ));
        }
        let sessions = self.app.sessions();
        let user = sessions.authenticate(token, name, image)?;
        sessions.open(&self.conn_id, &user).await?;
        tracing::debug!(user = %user.id, "hello");
        let reply = data(&HelloData {
            user: &user,
            session: &self.conn_id,
            node: sessions.node(),
            server_time: now_ms(),
        });
        let _ = self.user_slot.set(user.id.clone().into_boxed_str());
        self.own = Some(self.app.reads().follow(&user, self.listener.clone()).await);
        self.user = Some(user);
        Ok(reply)
    }
}
