//! One WebSocket connection: a reader that parses frames and calls services,
//! and a writer that owns the socket's sending half and the bounded queue.
//!
//! The reader handles one request at a time, in order, and queues its reply.
//! The hub queues event frames to the same queue. The writer sends both in
//! queue order and keeps, per room, the seq floor below which events are
//! already covered by a join snapshot: while a join is in flight the room's
//! events are held (`Outbound::Pending`), then the snapshot reply is sent and
//! the held events above its floor follow (`Outbound::Joined`). That is how a
//! joining client sees every event exactly once, in order, with no gap
//! between its snapshot and the live stream.
//!
//! Close codes: 1000 normal, 1001 idle too long, 1009 frame too large, 1012
//! node shutting down, 1013 outbound queue full, 4001 bad token, 4008
//! sustained abuse of the rate limit.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rand::RngExt;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::hub::{CLOSE_SLOW, Kill, Outbound, Subscriber};
use crate::app::App;
use crate::error::{ApiError, ErrorCode, ServiceError};
use crate::metrics::TypeLabel;
use crate::model::{Message, Room, User, now_ms};
use crate::protocol::{self, Request, RequestId};
use crate::service::{JoinHistory, Joined};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Close codes used by the node.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Client silent past the idle timeout.
    pub const IDLE: u16 = 1001;
    /// Frame larger than `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The node is shutting down.
    pub const RESTART: u16 = 1012;
    /// The client does not read its frames.
    pub const SLOW: u16 = super::CLOSE_SLOW;
    /// Bad or expired token.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Sustained abuse of the rate limit.
    pub const ABUSE: u16 = 4008;
}

/// Runs a connection until it closes. When `shutdown` fires, the connection
/// finishes the request in hand and closes with 1012 at a random moment
/// within `--drain-window`, so clients do not all reconnect at once.
pub async fn run(app: App, socket: Socket, id: u64, peer: SocketAddr, shutdown: CancellationToken) {
    let conn_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("conn", id, session = %conn_id, %peer);
    async move {
        tracing::debug!("connected");
        let config = app.config();
        let (sink, stream) = socket.split();
        let (tx, rx) = mpsc::channel(config.outbound_queue);
        let kill = Arc::new(Kill::default());
        let writer = tokio::spawn(
            write_loop(sink, rx, kill.clone(), config.ping_interval, app.clone()).in_current_span(),
        );
        let quota =
            Quota::per_second(NonZeroU32::new(config.rate_limit).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN));
        let mut conn = Connection {
            app: app.clone(),
            id,
            conn_id,
            user: None,
            rooms: HashSet::new(),
            tx,
            kill: kill.clone(),
            limiter: RateLimiter::direct(quota),
            abuse: AbuseMeter::new(config.rate_limit.saturating_mul(5)),
            typing: HashMap::new(),
            messages_sent: 0,
            drained: false,
        };
        let drain_window = config.drain_window;
        let drain = async move {
            shutdown.cancelled().await;
            let spread = drain_window.as_millis() as u64;
            let delay = rand::rng().random_range(0..=spread);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        };
        conn.read_loop(stream, config.idle_timeout, drain).await;
        conn.cleanup().await;
        drop(conn);
        // Let the writer send what is queued and the close frame.
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        tracing::debug!(code = kill.code(), "closed");
    }
    .instrument(span)
    .await
}

struct Connection {
    app: App,
    id: u64,
    conn_id: String,
    user: Option<User>,
    rooms: HashSet<Arc<str>>,
    tx: mpsc::Sender<Outbound>,
    kill: Arc<Kill>,
    limiter: DefaultDirectRateLimiter,
    abuse: AbuseMeter,
    /// Rooms where this connection's typing indicator is on, and when it
    /// lapses unless repeated.
    typing: HashMap<Arc<str>, tokio::time::Instant>,
    /// Messages sent, for the user's activity record.
    messages_sent: u64,
    /// Closed by the node's drain (1012): the client is expected back on
    /// another node, so its participation is left to the janitor.
    drained: bool,
}

/// Whether the reader goes on.
enum Flow {
    Continue,
    Stop,
}

fn data<T: Serialize>(value: &T) -> Box<RawValue> {
    protocol::raw(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
}

#[derive(Serialize)]
struct RoomData<'a> {
    room: &'a Room,
}

#[derive(Serialize)]
struct RoomWithParticipants<'a> {
    room: &'a Room,
    participants: &'a [User],
}

#[derive(Serialize)]
struct JoinMessages<'a> {
    room: &'a Room,
    participants: &'a [User],
    messages: &'a [Message],
}

#[derive(Serialize)]
struct JoinEvents<'a> {
    room: &'a Room,
    participants: &'a [User],
    events: Vec<Box<RawValue>>,
    complete: bool,
}

#[derive(Serialize)]
struct MessageData<'a> {
    message: &'a Message,
}

#[derive(Serialize)]
struct HistoryData<'a> {
    messages: &'a [Message],
    has_more: bool,
}

#[derive(Serialize)]
struct SearchData<'a> {
    messages: &'a [Message],
}

#[derive(Serialize)]
struct PresenceData<'a> {
    online: &'a [User],
}

#[derive(Serialize)]
struct RoomsData<'a> {
    rooms: &'a [Room],
}

#[derive(Serialize)]
struct HelloData<'a> {
    user: &'a User,
    session: &'a str,
    node: &'a str,
    server_time: u64,
}

#[derive(Serialize)]
struct PingData {
    server_time: u64,
}

impl Connection {
    async fn read_loop(
        &mut self,
        mut stream: futures_util::stream::SplitStream<Socket>,
        idle_timeout: Duration,
        drain: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(drain);
        loop {
            let lapse = self.typing.values().min().copied();
            let next = tokio::select! {
                biased;
                                _ = self.kill.killed() => return,
                                _ = &mut drain => {
                    // Between requests: the one in hand has been answered.
                    self.drained = true;
                    self.close_after_queue(close::RESTART);
                    return;
                }
                _ = sleep_until_some(lapse) => {
                    self.lapse_typing().await;
                    continue;
                }
                next = tokio::time::timeout(idle_timeout, stream.next()) => next,
            };
            let msg = match next {
                Err(_) => {
                    tracing::debug!("idle timeout");
                    self.kill.kill(close::IDLE);
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(WsError::Capacity(e)))) => {
                    tracing::debug!(error = %e, "frame too large");
                    self.close_after_queue(close::TOO_BIG);
                    return;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "read failed");
                    return;
                }
                Ok(Some(Ok(msg))) => msg,
            };
            let flow = match msg {
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
                WsMessage::Close(_) => return,
                // Pings are answered by tungstenite; pongs only prove life.
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Flow::Continue,
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    fn count_in(&self, verb: &'static str) {
        self.app
            .metrics()
            .frames_in
            .get_or_create(&TypeLabel { r#type: verb })
            .inc();
    }

    /// Applies the rate limit to one frame. A refused frame gets exactly
    /// one answer: a `rate_limited` reply to its id, or an `error` frame
    /// when it has none.
    fn admit(&mut self, id: Option<&RequestId>) -> Result<(), Flow> {
        let abusive = self.abuse.record(Instant::now());
        if abusive {
            tracing::info!("closing a connection that keeps flooding");
            self.close_after_queue(close::ABUSE);
            return Err(Flow::Stop);
        }
        match self.limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                self.app.metrics().rate_limited.inc();
                let mut err = ApiError::new(ErrorCode::RateLimited, "too many requests; slow down");
                err.retry_after_ms = Some((wait.as_millis() as u64).max(1));
                self.fail(id, err);
                Err(Flow::Continue)
            }
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
        let verb = frame.request.verb();
        let span = tracing::info_span!(
            "request",
            verb,
            id = frame.id.as_ref().map(|n| n.to_string())
        );
        // Boxed: the request's state lives on the heap only while it runs,
        // so an idle connection's task stays small.
        let outcome = Box::pin(
            self.dispatch(frame.id.as_ref(), frame.request)
                .instrument(span),
        )
        .await;
        match outcome {
            Ok(Some(reply)) => {
                if let Some(id) = &frame.id {
                    self.send_frame(protocol::reply_ok(id, &reply));
                }
                Flow::Continue
            }
            Ok(None) => Flow::Continue,
            Err(err) => {
                let fatal = verb == "hello" && err.code == ErrorCode::Unauthorized;
                self.fail(frame.id.as_ref(), err);
                if fatal {
                    self.close_after_queue(close::UNAUTHORIZED);
                    return Flow::Stop;
                }
                Flow::Continue
            }
        }
    }

    /// Runs a request. `Ok(None)` means the reply was queued already (joins).
    async fn dispatch(
        &mut self,
        id: Option<&RequestId>,
        request: Request,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        if let Request::Hello { token, name, image } = &request {
            return self
                .hello(token.as_deref(), name.as_deref(), image.as_deref())
                .await
                .map(Some);
        }
        let Some(user) = self.user.clone() else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the first frame must be hello",
            ));
        };
        if let Request::Ping = request {
            return Ok(Some(data(&PingData {
                server_time: now_ms(),
            })));
        }
        let app = self.app.clone();
        let result: Result<Option<Box<RawValue>>, ServiceError> = match request {
            Request::Hello { .. } | Request::Ping => Ok(None),
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
            Request::RoomGet { room } => app.rooms().get(&user, &room).await.map(|(r, p)| {
                Some(data(&RoomWithParticipants {
                    room: &r,
                    participants: &p,
                }))
            }),
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
            } => app
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
                .map(|sent| {
                    if !sent.duplicate {
                        app.metrics().messages_sent.inc();
                        self.messages_sent += 1;
                    }
                    Some(data(&MessageData {
                        message: &sent.message,
                    }))
                }),
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
            Request::Presence { room } => app
                .rooms()
                .presence(&user, &room)
                .await
                .map(|online| Some(data(&PresenceData { online: &online }))),
            Request::Typing { room, active } => return self.typing(&user, &room, active).await,
        };
        result.map_err(ApiError::from)
    }

    async fn typing(
        &mut self,
        user: &User,
        room: &str,
        active: bool,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let Some(key) = self.rooms.get(room).cloned() else {
            return Err(ServiceError::Forbidden("join the room before typing in it".into()).into());
        };
        let was_active = self.typing.contains_key(&key);
        if active {
            self.typing.insert(
                key.clone(),
                tokio::time::Instant::now() + crate::service::rooms::TYPING_TTL,
            );
        } else {
            self.typing.remove(&key);
        }
        // Repeating "still typing" only extends the lapse; tell the room
        // about changes, and refresh others' 5 s windows on repeats too.
        if active || was_active {
            self.app.rooms().typing(user, &key, active).await?;
        }
        Ok(Some(data(&serde_json::json!({}))))
    }

    /// Turns off typing indicators whose 5 s have passed without a repeat.
    async fn lapse_typing(&mut self) {
        let now = tokio::time::Instant::now();
        let lapsed: Vec<Arc<str>> = self
            .typing
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in lapsed {
            self.stop_typing(&room).await;
        }
    }

    /// Clears this connection's typing indicator in a room, if on.
    async fn stop_typing(&mut self, room: &Arc<str>) {
        if self.typing.remove(room).is_none() {
            return;
        }
        let Some(user) = self.user.clone() else {
            return;
        };
        if let Err(e) = self.app.rooms().typing(&user, room, false).await {
            tracing::debug!(room = %room, error = %e, "could not clear typing");
        }
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
        self.user = Some(user);
        Ok(reply)
    }

    fn subscriber(&self) -> Subscriber {
        Subscriber {
            id: self.id,
            tx: self.tx.clone(),
            kill: self.kill.clone(),
        }
    }

    /// Starts receiving a room's events (held until the snapshot is sent).
    async fn start_room(&mut self, room: &Arc<str>) -> Result<(), ApiError> {
        self.enqueue(Outbound::Pending(room.clone()));
        if self.rooms.contains(room) {
            return Ok(());
        }
        self.app.hub().attach(room, self.subscriber());
        if let Err(e) = self.app.bus().subscribe(room).await {
            self.app.hub().detach(room, self.id);
            self.enqueue(Outbound::Left(room.clone()));
            return Err(ServiceError::from(e).into());
        }
        Ok(())
    }

    /// Undoes `start_room` after a failed join.
    async fn abort_room(&mut self, room: &Arc<str>) {
        if self.rooms.contains(room) {
            // Still joined from before: go back to live delivery.
            self.enqueue(Outbound::Joined {
                room: room.clone(),
                floor: 0,
                reply: Utf8Bytes::from_static(""),
            });
            return;
        }
        self.app.hub().detach(room, self.id);
        self.app.bus().unsubscribe(room).await;
        self.enqueue(Outbound::Left(room.clone()));
    }

    async fn create(
        &mut self,
        id: Option<&RequestId>,
        user: &User,
        name: &str,
        max: Option<i64>,
        private: Option<bool>,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let room_id = crate::service::RoomService::new_id();
        let key: Arc<str> = Arc::from(room_id.as_str());
        self.start_room(&key).await?;
        let app = self.app.clone();
        match app
            .rooms()
            .create(&room_id, user, &self.conn_id, name, max, private)
            .await
        {
            Ok(room) => {
                self.rooms.insert(key.clone());
                self.joined(id, &key, room.last_seq, data(&RoomData { room: &room }));
                Ok(None)
            }
            Err(e) => {
                self.abort_room(&key).await;
                Err(e.into())
            }
        }
    }

    async fn join(
        &mut self,
        request_id: Option<&RequestId>,
        user: &User,
        room: Option<&str>,
        code: Option<&str>,
        since: Option<u64>,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let app = self.app.clone();
        let id = app.rooms().resolve_join(user, room, code).await?;
        let key: Arc<str> = Arc::from(id.as_str());
        self.start_room(&key).await?;
        match app.rooms().join(user, &self.conn_id, &id, since).await {
            Ok(joined) => {
                self.rooms.insert(key.clone());
                self.joined(request_id, &key, joined.floor, join_reply(&joined));
                Ok(None)
            }
            Err(e) => {
                self.abort_room(&key).await;
                Err(e.into())
            }
        }
    }

    /// Queues a join snapshot through the writer's room state, so the reply
    /// is ordered with the room's held events. Without a request id the
    /// reply is silent, but the held events are still released.
    fn joined(&mut self, id: Option<&RequestId>, room: &Arc<str>, floor: u64, data: Box<RawValue>) {
        let reply = match id {
            Some(id) => Utf8Bytes::from(protocol::reply_ok(id, &data)),
            None => Utf8Bytes::from_static(""),
        };
        self.enqueue(Outbound::Joined {
            room: room.clone(),
            floor,
            reply,
        });
    }

    async fn leave(&mut self, user: &User, room: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        let app = self.app.clone();
        if let Some(key) = self.rooms.get(room).cloned() {
            self.stop_typing(&key).await;
        }
        app.rooms().leave(user, &self.conn_id, room).await?;
        if let Some(key) = self.rooms.take(room) {
            app.hub().detach(&key, self.id);
            app.bus().unsubscribe(&key).await;
            self.enqueue(Outbound::Left(key));
        }
        Ok(Some(data(&serde_json::json!({}))))
    }

    /// Leaves every room and removes the session; runs when the socket ends.
    async fn cleanup(&mut self) {
        let typing: Vec<Arc<str>> = self.typing.keys().cloned().collect();
        for room in typing {
            self.stop_typing(&room).await;
        }
        let Some(user) = self.user.take() else {
            return;
        };
        let app = self.app.clone();
        if self.drained {
            // A rolling update: the client reconnects elsewhere and resumes.
            // Leaving now would write "left" and, a moment later, "joined";
            // the janitor removes this session once the node is gone, and
            // announces a departure only if the user did not come back.
            for room in std::mem::take(&mut self.rooms) {
                app.hub().detach(&room, self.id);
                app.bus().unsubscribe(&room).await;
            }
            app.sessions()
                .record_activity(&user, self.messages_sent)
                .await;
            return;
        }
        for room in std::mem::take(&mut self.rooms) {
            app.hub().detach(&room, self.id);
            app.bus().unsubscribe(&room).await;
            if let Err(e) = app.rooms().leave(&user, &self.conn_id, &room).await {
                tracing::warn!(room = %room, error = %e, "could not leave on disconnect");
            }
        }
        if let Err(e) = app
            .sessions()
            .close(&self.conn_id, &user, self.messages_sent)
            .await
        {
            tracing::warn!(error = %e, "could not remove session");
        }
    }

    fn enqueue(&mut self, item: Outbound) {
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.kill.kill(close::SLOW) {
                    self.app.metrics().slow_consumers.inc();
                }
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn send_frame(&mut self, frame: String) {
        self.enqueue(Outbound::Frame(Utf8Bytes::from(frame)));
    }

    fn fail(&mut self, id: Option<&RequestId>, err: ApiError) {
        self.app.metrics().error(err.code);
        if err.code != ErrorCode::Internal && err.code != ErrorCode::Unavailable {
            tracing::debug!(code = err.code.as_str(), message = %err.message, "refused");
        }
        self.send_frame(protocol::failure(id, &err));
    }

    fn close_after_queue(&mut self, code: u16) {
        if self.tx.try_send(Outbound::Close(code)).is_err() {
            self.kill.kill(code);
        }
    }
}

fn join_reply(joined: &Joined) -> Box<RawValue> {
    match &joined.history {
        JoinHistory::Messages(messages) => data(&JoinMessages {
            room: &joined.room,
            participants: &joined.participants,
            messages,
        }),
        JoinHistory::Events { events, complete } => data(&JoinEvents {
            room: &joined.room,
            participants: &joined.participants,
            events: events
                .iter()
                .map(|e| protocol::raw(protocol::event_frame(&joined.room.id, e)))
                .collect(),
            complete: *complete,
        }),
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts frames per second and spots a client that keeps sending at more
/// than five times its rate for ten seconds in a row.
struct AbuseMeter {
    threshold: u32,
    window_start: Instant,
    count: u32,
    streak: u32,
}

/// Consecutive over-threshold seconds that count as abuse.
const ABUSE_SECONDS: u32 = 10;

impl AbuseMeter {
    fn new(threshold: u32) -> AbuseMeter {
        AbuseMeter {
            threshold: threshold.max(1),
            window_start: Instant::now(),
            count: 0,
            streak: 0,
        }
    }

    /// Records a frame; true when the connection is abusive.
    fn record(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let over = self.count > self.threshold;
            // A whole quiet second in between breaks the streak.
            self.streak = if over && elapsed < Duration::from_secs(2) {
                self.streak + 1
            } else {
                0
            };
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.streak >= ABUSE_SECONDS
    }
}

/// Per-room delivery state of the writer.
enum RoomState {
    /// A join is in flight: hold events (and remember the floor of an
    /// earlier join of the same room, if any).
    Holding(u64, Vec<(u64, Utf8Bytes)>),
    /// Deliver events above the floor.
    Live(u64),
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<Socket, WsMessage>,
    mut rx: mpsc::Receiver<Outbound>,
    kill: Arc<Kill>,
    ping_interval: Duration,
    app: App,
) {
    let metrics = app.metrics();
    let hold_limit = app.config().outbound_queue;
    let mut rooms: HashMap<Arc<str>, RoomState> = HashMap::new();
    let mut unflushed = 0usize;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let out = |kind: &'static str| {
        metrics
            .frames_out
            .get_or_create(&TypeLabel { r#type: kind })
            .inc()
    };
    let code = loop {
        let item = tokio::select! {
            biased;
                        _ = kill.killed() => break kill.code().unwrap_or(close::NORMAL),
            _ = ping.tick() => {
                if send(&mut sink, &kill, WsMessage::Ping(Default::default())).await.is_err() {
                    break 0;
                }
                continue;
            }
            item = rx.recv() => item,
        };
        let Some(item) = item else {
            break close::NORMAL;
        };
        let mut frames: Vec<(&'static str, Utf8Bytes)> = Vec::new();
        match item {
            Outbound::Frame(f) => frames.push(("reply", f)),
            Outbound::Event { room, seq, frame } => match rooms.get_mut(&room) {
                Some(RoomState::Live(floor)) if seq == 0 || seq > *floor => {
                    *floor = (*floor).max(seq);
                    frames.push(("event", frame));
                }
                Some(RoomState::Live(_)) => {}
                Some(RoomState::Holding(_, held)) => {
                    if held.len() >= hold_limit {
                        if kill.kill(CLOSE_SLOW) {
                            metrics.slow_consumers.inc();
                        }
                        continue;
                    }
                    held.push((seq, frame));
                }
                None => {}
            },
            Outbound::Pending(room) => {
                let prev = match rooms.get(&room) {
                    Some(RoomState::Live(floor)) => *floor,
                    Some(RoomState::Holding(floor, _)) => *floor,
                    None => 0,
                };
                rooms.insert(room, RoomState::Holding(prev, Vec::new()));
            }
            Outbound::Joined { room, floor, reply } => {
                let (prev, previous) = match rooms.remove(&room) {
                    Some(RoomState::Holding(prev, held)) => (prev, held),
                    Some(RoomState::Live(prev)) => (prev, Vec::new()),
                    None => (0, Vec::new()),
                };
                if !reply.is_empty() {
                    frames.push(("reply", reply));
                }
                let mut floor = floor.max(prev);
                for (seq, frame) in previous {
                    if seq == 0 || seq > floor {
                        floor = floor.max(seq);
                        frames.push(("event", frame));
                    }
                }
                rooms.insert(room, RoomState::Live(floor));
            }
            Outbound::Left(room) => {
                rooms.remove(&room);
            }
            Outbound::Close(code) => break code,
        }
        for (kind, frame) in frames {
            let mut failed = false;
            for msg in fragments(frame) {
                if feed(&mut sink, &kill, msg).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed {
                kill.kill(0);
                return;
            }
            out(kind);
            unflushed += 1;
        }
        if rx.is_empty() {
            // Give the producers one more turn first: what they queue
            // meanwhile goes out in the same write. A connection that is
            // busy (a batch of several frames) waits a little longer, so
            // under load a write carries many frames; a quiet one is
            // flushed at once, so latency stays low.
            if unflushed >= BUSY_BATCH {
                tokio::time::sleep(BUSY_LINGER).await;
            } else {
                tokio::task::yield_now().await;
            }
            if rx.is_empty() {
                if flush(&mut sink, &kill).await.is_err() {
                    kill.kill(0);
                    return;
                }
                unflushed = 0;
            }
        }
    };
    if code != 0 {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(close_reason(code)),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            sink.send(WsMessage::Close(Some(frame))),
        )
        .await;
    }
    // Stop the reader too, whichever side ended first.
    kill.kill(code);
}

/// Frames written since the last flush that make a connection "busy".
const BUSY_BATCH: usize = 8;
/// How long a busy connection gathers more frames before flushing.
const BUSY_LINGER: Duration = Duration::from_millis(1);

/// Largest frame sent whole; longer text goes out as continuation frames.
/// tungstenite keeps its write buffer at the largest size it ever held, so
/// this bounds what a big join snapshot leaves behind on an idle connection.
pub const FRAGMENT_BYTES: usize = 8 * 1024;

/// One text message as WebSocket messages: itself, or fragments of at most
/// `FRAGMENT_BYTES` (slices of the same shared bytes, no copy).
fn fragments(text: Utf8Bytes) -> Vec<WsMessage> {
    if text.len() <= FRAGMENT_BYTES {
        return vec![WsMessage::Text(text)];
    }
    let bytes = bytes::Bytes::from(text);
    let count = bytes.len().div_ceil(FRAGMENT_BYTES);
    (0..count)
        .map(|i| {
            let chunk =
                bytes.slice(i * FRAGMENT_BYTES..((i + 1) * FRAGMENT_BYTES).min(bytes.len()));
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            WsMessage::Frame(Frame::message(chunk, opcode, i + 1 == count))
        })
        .collect()
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::IDLE => "idle timeout",
        close::TOO_BIG => "frame too large",
        close::RESTART => "node restarting; reconnect and resume with since",
        close::SLOW => "outbound queue full; read faster",
        close::UNAUTHORIZED => "unauthorized",
        close::ABUSE => "rate limit abused",
        _ => "",
    }
}

async fn feed(
    sink: &mut futures_util::stream::SplitSink<Socket, WsMessage>,
    kill: &Kill,
    msg: WsMessage,
) -> Result<(), ()> {
    tokio::select! {
        r = sink.feed(msg) => r.map_err(|_| ()),
        _ = kill.killed(), if kill.code() == Some(CLOSE_SLOW) => Err(()),
    }
}

async fn flush(
    sink: &mut futures_util::stream::SplitSink<Socket, WsMessage>,
    kill: &Kill,
) -> Result<(), ()> {
    tokio::select! {
        r = sink.flush() => r.map_err(|_| ()),
        _ = kill.killed(), if kill.code() == Some(CLOSE_SLOW) => Err(()),
    }
}

async fn send(
    sink: &mut futures_util::stream::SplitSink<Socket, WsMessage>,
    kill: &Kill,
    msg: WsMessage,
) -> Result<(), ()> {
    feed(sink, kill, msg).await?;
    flush(sink, kill).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abuse_needs_ten_busy_seconds_in_a_row() {
        let start = Instant::now();
        let mut m = AbuseMeter::new(5);
        m.window_start = start;
        let mut abusive = false;
        for sec in 0..12u64 {
            for i in 0..7u64 {
                let t = start + Duration::from_millis(sec * 1000 + i * 10);
                abusive = m.record(t);
            }
            if sec < 10 {
                assert!(!abusive, "not yet at second {sec}");
            }
        }
        assert!(abusive);
        // A quiet gap resets.
        let later = start + Duration::from_secs(20);
        assert!(!m.record(later));
    }

    #[test]
    fn long_text_is_sent_in_fragments_of_the_same_bytes() {
        let short = Utf8Bytes::from("x".repeat(FRAGMENT_BYTES));
        assert!(matches!(fragments(short).as_slice(), [WsMessage::Text(_)]));
        let long = "é".repeat(FRAGMENT_BYTES); // 2 bytes each: splits inside characters
        let parts = fragments(Utf8Bytes::from(long.clone()));
        assert_eq!(parts.len(), 2);
        let mut joined = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let WsMessage::Frame(f) = p else {
                panic!("fragment {i} is a frame")
            };
            assert_eq!(f.header().is_final, i == 1);
            let want = if i == 0 { Data::Text } else { Data::Continue };
            assert_eq!(f.header().opcode, OpCode::Data(want));
            assert!(f.payload().len() <= FRAGMENT_BYTES);
            joined.extend_from_slice(f.payload());
        }
        assert_eq!(joined, long.as_bytes());
    }

    #[test]
    fn modest_rates_are_not_abuse() {
        let start = Instant::now();
        let mut m = AbuseMeter::new(5);
        m.window_start = start;
        for sec in 0..30u64 {
            for i in 0..5u64 {
                assert!(!m.record(start + Duration::from_millis(sec * 1000 + i * 100)));
            }
        }
    }
}
