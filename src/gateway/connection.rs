//! One WebSocket connection, served by one task.
//!
//! The task reads the client's frames and handles one request at a time, in
//! order. Replies and the room's events meet in one bounded queue (the hub
//! pushes events to it from the bus), and the task sends what is queued, in
//! queue order, also while a request is waiting on Redis. The writer side
//! keeps, per room, the seq floor below which events are already covered by
//! a join snapshot: while a join is in flight the room's events are held
//! (`Outbound::Pending`), then the snapshot reply is sent and the held events
//! above its floor follow (`Outbound::Joined`). That is how a joining client
//! sees every event exactly once, in order, with no gap between its snapshot
//! and the live stream.
//!
//! Close codes: 1000 normal, 1001 idle too long, 1009 frame too large, 1012
//! node shutting down, 1013 outbound queue full, 4001 bad token, 4008
//! sustained abuse of the rate limit.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::upgrade::Upgraded;
use prometheus_client::metrics::counter::Counter;
use rand::RngExt;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::hub::{CLOSE_SLOW, Kill, Outbound, RoomFrame, Snapshot, Subscriber};
use super::wire::{self, Outbox, Wire};
use crate::app::App;
use crate::error::{ApiError, ErrorCode, ServiceError};
use crate::metrics::TypeLabel;
use crate::model::{Message, Room, User, now_ms};
use crate::protocol::{self, Request, RequestId};
use crate::service::{JoinHistory, Joined};

type Socket = WebSocketStream<Wire>;

/// Close codes used by the node.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Client silent past the idle timeout.
    pub const IDLE: u16 = 1001;
    /// The client broke the WebSocket protocol (an unmasked frame, reserved
    /// bits or opcodes).
    pub const PROTOCOL: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const NOT_UTF8: u16 = 1007;
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
    /// No close frame: the socket failed or the client closed first.
    pub const NONE: u16 = 0;
}

/// Runs a connection until it closes. When `shutdown` fires, the connection
/// finishes the request in hand and closes with 1012 at a random moment
/// within `--drain-window`, so clients do not all reconnect at once.
pub async fn run(
    app: App,
    upgraded: Upgraded,
    ws_config: WebSocketConfig,
    id: u64,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let conn_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("conn", id, session = %conn_id, %peer);
    async move {
        let Some(wire) = Wire::from_upgraded(upgraded) else {
            tracing::warn!("the upgraded connection is not a TCP stream; dropping it");
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(wire, Role::Server, Some(ws_config)).await;
        tracing::debug!("connected");
        let config = app.config();
        let (tx, rx) = mpsc::channel(config.outbound_queue);
        let kill = Arc::new(Kill::default());
        let mut writer = Writer::new(rx, kill.clone(), &app);
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
        let timers = Timers {
            idle: config.idle_timeout,
            ping: config.ping_interval,
        };
        let code = conn.serve(&mut socket, &mut writer, timers, drain).await;
        // From here the hub's pushes fail quietly (no slow-consumer count).
        kill.kill(if code == close::NONE {
            close::NORMAL
        } else {
            code
        });
        // The close frame may wait on a client that does not read; leaving
        // the rooms does not wait for it. Boxed, like every rarely taken path
        // with a deep future: the task of an idle connection stays small.
        let tcp = socket.get_ref().tcp();
        tokio::join!(Box::pin(writer.close(tcp, code)), Box::pin(conn.cleanup()));
        drop(writer);
        drop(socket);
        tracing::debug!(code, "closed");
    }
    .instrument(span)
    .await
}

/// The connection's timers.
#[derive(Debug, Clone, Copy)]
struct Timers {
    /// Close a client silent for this long.
    idle: Duration,
    /// Send a WebSocket ping this often.
    ping: Duration,
}

/// Runs `work` (a request) while sending what is queued meanwhile, so that a
/// request waiting on Redis does not hold up the connection's events. Only
/// what the socket takes at once is written here: the request never waits
/// on the client. When the client does not keep up, the rest stays in the
/// outbox and the queue fills behind it (a slow consumer is closed 1013).
async fn pumping<T>(work: impl Future<Output = T>, out: &mut Writer, tcp: &TcpStream) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return done,
            Some(item) = out.rx.recv(), if out.closed.is_none() && !out.backed_up() => {
                out.pump_now(item, tcp).await;
            }
        }
    }
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

/// What follows a frame from the client.
enum Flow {
    /// Read the next one.
    Continue,
    /// Close with this code once what is queued before it is sent.
    Close(u16),
    /// The client closed, or the socket failed: end without a close frame.
    Closed,
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
    /// Reads and answers the client's frames and sends what is queued,
    /// until the connection is to close; returns the close code to send.
    async fn serve(
        &mut self,
        socket: &mut Socket,
        out: &mut Writer,
        timers: Timers,
        drain: impl Future<Output = ()>,
    ) -> u16 {
        tokio::pin!(drain);
        let idle = tokio::time::sleep(timers.idle);
        tokio::pin!(idle);
        let start = tokio::time::Instant::now() + timers.ping;
        let mut ping = tokio::time::interval_at(start, timers.ping);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Cleared once a close is queued: nothing more is read.
        let mut reading = true;
        let mut turn = 0u32;
        loop {
            if let Some(code) = out.closed {
                return code;
            }
            if self.kill.is_killed() {
                return self.kill.code().unwrap_or(close::NORMAL);
            }
            if out.backed_up() {
                // Left by a request that ran while the client was not
                // reading: wait for the socket now (or give up on it).
                out.write(socket.get_ref().tcp()).await;
                continue;
            }
            let lapse = self.typing.values().min().copied();
            // The select below reaches the timers only when the queue is not
            // ready (polling the drain future locks the node-wide shutdown
            // token, too dear for every event). A room busy enough to keep
            // the queue always ready must not starve them: every 16th turn
            // they are looked at first.
            turn = turn.wrapping_add(1);
            if turn.is_multiple_of(16) {
                let tcp = socket.get_ref().tcp();
                if idle.is_elapsed() {
                    tracing::debug!("idle timeout");
                    return close::IDLE;
                }
                if reading && !self.drained && drain.as_mut().now_or_never().is_some() {
                    reading = false;
                    self.start_drain();
                    continue;
                }
                if ping.tick().now_or_never().is_some() {
                    out.send_now(wire::ping_frame(), tcp).await;
                }
                if lapse.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    pumping(Box::pin(self.lapse_typing()), out, tcp).await;
                    continue;
                }
            }
            tokio::select! {
                biased;
                _ = self.kill.killed() => return self.kill.code().unwrap_or(close::NORMAL),
                next = socket.next(), if reading => {
                    idle.as_mut().reset(tokio::time::Instant::now() + timers.idle);
                    // tungstenite answers pings and closes on its next write:
                    // make it now, then send what it wrote.
                    if matches!(next, Some(Ok(WsMessage::Ping(_) | WsMessage::Close(_)))) {
                        let _ = socket.flush().await;
                    }
                    if let Some(control) = socket.get_mut().take_control() {
                        out.send_now(control, socket.get_ref().tcp()).await;
                    }
                    let flow = match next {
                        None => Flow::Closed,
                        Some(next) => {
                            let tcp = socket.get_ref().tcp();
                            // Boxed: a request's state lives on the heap only
                            // while it runs.
                            pumping(Box::pin(self.on_frame(next)), out, tcp).await
                        }
                    };
                    match flow {
                        Flow::Continue => {
                            // Reading first is fair only if what is queued
                            // goes out between frames: a client sending fast
                            // must not hold up its own replies and events.
                            if let Ok(item) = out.rx.try_recv() {
                                out.pump(item, socket.get_ref().tcp()).await;
                            }
                        }
                        Flow::Closed => return close::NONE,
                        Flow::Close(code) => {
                            reading = false;
                            self.close_after_queue(code);
                        }
                    }
                }
                item = out.rx.recv() => {
                    // This connection holds a sender: the queue does not end.
                    let Some(item) = item else { return close::NORMAL };
                    out.pump(item, socket.get_ref().tcp()).await;
                }
                _ = &mut drain, if reading && !self.drained => {
                    reading = false;
                    self.start_drain();
                }
                _ = ping.tick() => out.send_now(wire::ping_frame(), socket.get_ref().tcp()).await,
                _ = sleep_until_some(lapse) => {
                    pumping(Box::pin(self.lapse_typing()), out, socket.get_ref().tcp()).await;
                }
                _ = &mut idle => {
                    tracing::debug!("idle timeout");
                    return close::IDLE;
                }
            }
        }
    }

    /// The node is shutting down: close 1012 after what is queued. Runs
    /// between requests, so the one in hand has been answered.
    fn start_drain(&mut self) {
        self.drained = true;
        self.close_after_queue(close::RESTART);
    }

    /// Handles one thing read from the socket.
    async fn on_frame(&mut self, next: Result<WsMessage, WsError>) -> Flow {
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

    /// Applies the rate limit to one frame. A refused frame gets exactly
    /// one answer: a `rate_limited` reply to its id, or an `error` frame
    /// when it has none.
    fn admit(&mut self, id: Option<&RequestId>) -> Result<(), Flow> {
        let abusive = self.abuse.record(Instant::now());
        if abusive {
            tracing::info!("closing a connection that keeps flooding");
            return Err(Flow::Close(close::ABUSE));
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
        let outcome = self
            .dispatch(frame.id.as_ref(), frame.request)
            .instrument(span)
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
                    return Flow::Close(close::UNAUTHORIZED);
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
        self.enqueue(Outbound::Pending(Box::new(room.clone())));
        if self.rooms.contains(room) {
            return Ok(());
        }
        self.app.hub().attach(room, self.subscriber());
        if let Err(e) = self.app.bus().subscribe(room).await {
            self.app.hub().detach(room, self.id);
            self.enqueue(Outbound::Left(Box::new(room.clone())));
            return Err(ServiceError::from(e).into());
        }
        Ok(())
    }

    /// Undoes `start_room` after a failed join.
    async fn abort_room(&mut self, room: &Arc<str>) {
        if self.rooms.contains(room) {
            // Still joined from before: go back to live delivery.
            self.enqueue(Outbound::Joined(Box::new(Snapshot {
                room: room.clone(),
                floor: 0,
                reply: None,
            })));
            return;
        }
        self.app.hub().detach(room, self.id);
        self.app.bus().unsubscribe(room).await;
        self.enqueue(Outbound::Left(Box::new(room.clone())));
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
        let reply = id.map(|id| wire::text_frame(&protocol::reply_ok(id, &data)));
        self.enqueue(Outbound::Joined(Box::new(Snapshot {
            room: room.clone(),
            floor,
            reply,
        })));
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
            self.enqueue(Outbound::Left(Box::new(key)));
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
        self.enqueue(Outbound::Frame(Box::new(wire::text_frame(&frame))));
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
                .map(|e| protocol::raw(protocol::event_frame(&joined.room.id, e.seq, &e.event)))
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
    Holding(u64, Vec<Arc<RoomFrame>>),
    /// Deliver events above the floor.
    Live(u64),
}

/// The sending side of a connection: its queue, the per-room delivery
/// state, and the frames gathered for the next write.
struct Writer {
    rx: mpsc::Receiver<Outbound>,
    kill: Arc<Kill>,
    rooms: HashMap<Arc<str>, RoomState>,
    /// Events held for one joining room before the connection is too slow.
    hold_limit: usize,
    outbox: Outbox,
    /// Set once the connection is to close: the code (`close::NONE` when the
    /// socket failed).
    closed: Option<u16>,
    /// How long a write may wait on a client that takes nothing.
    stall: Duration,
    events_out: Counter,
    replies_out: Counter,
    slow_consumers: Counter,
}

/// Frames gathered in one go that make a connection "busy".
const BUSY_BATCH: usize = 8;
/// How long a busy connection gathers more frames before writing.
const BUSY_LINGER: Duration = Duration::from_millis(1);
/// How long the close frame may take to send: a client that stopped reading
/// gets this long to take what its socket holds and then the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Writer {
    fn new(rx: mpsc::Receiver<Outbound>, kill: Arc<Kill>, app: &App) -> Writer {
        let metrics = app.metrics();
        let frames = |kind: &'static str| {
            metrics
                .frames_out
                .get_or_create(&TypeLabel { r#type: kind })
                .clone()
        };
        Writer {
            rx,
            kill,
            rooms: HashMap::new(),
            hold_limit: app.config().outbound_queue,
            outbox: Outbox::default(),
            closed: None,
            stall: app.config().idle_timeout,
            events_out: frames("event"),
            replies_out: frames("reply"),
            slow_consumers: metrics.slow_consumers.clone(),
        }
    }

    /// Sends `first` and everything queued behind it, in one write.
    async fn pump(&mut self, first: Outbound, tcp: &TcpStream) {
        self.gather(first).await;
        self.write(tcp).await;
    }

    /// Takes `first` and everything queued behind it, and writes what the
    /// socket takes without waiting for it (see `pumping`).
    async fn pump_now(&mut self, first: Outbound, tcp: &TcpStream) {
        self.gather(first).await;
        self.write_now(tcp);
    }

    /// Takes `first` and what is queued behind it, for one write.
    async fn gather(&mut self, first: Outbound) {
        self.take(first);
        self.take_ready();
        if self.closed.is_none() {
            // Give the producers one more turn first: what they queue
            // meanwhile goes out in the same write. A busy connection (a
            // batch of several frames) waits a little longer, so under load
            // a write carries many frames; a quiet one writes at once.
            if self.outbox.len() >= BUSY_BATCH {
                tokio::time::sleep(BUSY_LINGER).await;
            } else {
                tokio::task::yield_now().await;
            }
            self.take_ready();
        }
    }

    /// Frames are waiting for the socket.
    fn backed_up(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Writes what the socket takes now; whether everything went.
    fn write_now(&mut self, tcp: &TcpStream) -> bool {
        match self.outbox.write_now(tcp) {
            Ok(done) => done,
            Err(e) => {
                self.failed(e);
                true
            }
        }
    }

    fn failed(&mut self, e: std::io::Error) {
        tracing::debug!(error = %e, "write failed");
        self.closed = Some(close::NONE);
        self.kill.kill(close::NONE);
    }

    /// Sends one frame of the connection's own (a ping, a pong) now, after
    /// anything gathered before it.
    async fn send_now(&mut self, frame: Bytes, tcp: &TcpStream) {
        if self.closed.is_none() {
            self.outbox.push(frame);
            self.write(tcp).await;
        }
    }

    fn take_ready(&mut self) {
        while self.closed.is_none() {
            match self.rx.try_recv() {
                Ok(item) => self.take(item),
                Err(_) => return,
            }
        }
    }

    /// Applies one queued item: gathers its frames for the next write.
    fn take(&mut self, item: Outbound) {
        match item {
            Outbound::Frame(frame) => {
                self.replies_out.inc();
                self.outbox.push(*frame);
            }
            Outbound::Event(event) => match self.rooms.get_mut(&event.room) {
                Some(RoomState::Live(floor)) if event.seq == 0 || event.seq > *floor => {
                    *floor = (*floor).max(event.seq);
                    self.events_out.inc();
                    self.outbox.push(event.frame.clone());
                }
                Some(RoomState::Live(_)) | None => {}
                Some(RoomState::Holding(_, held)) => {
                    if held.len() >= self.hold_limit {
                        if self.kill.kill(CLOSE_SLOW) {
                            self.slow_consumers.inc();
                        }
                        return;
                    }
                    held.push(event);
                }
            },
            Outbound::Pending(room) => {
                let room = *room;
                let prev = match self.rooms.get(&room) {
                    Some(RoomState::Live(floor) | RoomState::Holding(floor, _)) => *floor,
                    None => 0,
                };
                self.rooms
                    .insert(room, RoomState::Holding(prev, Vec::new()));
            }
            Outbound::Joined(snapshot) => {
                let Snapshot { room, floor, reply } = *snapshot;
                let (prev, held) = match self.rooms.remove(&room) {
                    Some(RoomState::Holding(prev, held)) => (prev, held),
                    Some(RoomState::Live(prev)) => (prev, Vec::new()),
                    None => (0, Vec::new()),
                };
                if let Some(reply) = reply {
                    self.replies_out.inc();
                    self.outbox.push(reply);
                }
                let mut floor = floor.max(prev);
                for event in held {
                    if event.seq == 0 || event.seq > floor {
                        floor = floor.max(event.seq);
                        self.events_out.inc();
                        self.outbox.push(event.frame.clone());
                    }
                }
                self.rooms.insert(room, RoomState::Live(floor));
            }
            Outbound::Left(room) => {
                self.rooms.remove(&*room);
            }
            Outbound::Close(code) => self.closed = Some(code),
        }
    }

    /// Writes what is gathered. A client too slow to take it is cut off
    /// mid-write when the hub finds its queue full, or when it has taken
    /// nothing for the idle timeout.
    async fn write(&mut self, tcp: &TcpStream) {
        if self.outbox.is_empty() || self.write_now(tcp) {
            return;
        }
        // The socket is full: wait for it (a timer only on this slow path).
        let kill = self.kill.clone();
        let cut_off = async move {
            kill.killed().await;
            if kill.code() != Some(CLOSE_SLOW) {
                // Other closes wait for what is being written.
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = self.outbox.write_to(tcp) => r,
            _ = cut_off => return,
            _ = tokio::time::sleep(self.stall) => {
                tracing::debug!("the client took nothing for the idle timeout");
                if self.kill.kill(CLOSE_SLOW) {
                    self.slow_consumers.inc();
                }
                return;
            }
        };
        if let Err(e) = result {
            self.failed(e);
        }
    }

    /// Sends the close frame (after the rest of a frame cut off mid-write),
    /// giving the client `CLOSE_TIMEOUT` to take it.
    async fn close(&mut self, tcp: &TcpStream, code: u16) {
        if code == close::NONE {
            return;
        }
        self.outbox.discard_unstarted();
        self.outbox
            .push(wire::close_frame(code, close_reason(code)));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.outbox.write_to(tcp)).await;
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::IDLE => "idle timeout",
        close::TOO_BIG => "frame too large",
        close::PROTOCOL => "websocket protocol error",
        close::NOT_UTF8 => "text frame is not utf-8",
        close::RESTART => "node restarting; reconnect and resume with since",
        close::SLOW => "outbound queue full; read faster",
        close::UNAUTHORIZED => "unauthorized",
        close::ABUSE => "rate limit abused",
        _ => "",
    }
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
