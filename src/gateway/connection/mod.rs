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
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the task: the socket loop, timers (idle, ping, typing lapse, drain) |
//! | `dispatch.rs` | frames → requests → services → one reply each |
//! | `membership.rs` | create, join, leave, typing; leaving everything at the end |
//! | `writer.rs` | the queue, per-room delivery state, batched writes |
//! | `limits.rs` | the rate limit and the abuse meter |
//!
//! The close codes and their reasons are chosen in `crate::error::close`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::upgrade::Upgraded;
use rand::RngExt;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Gateway;
use super::hub::{HubListener, Kill, Outbound, Subscriber};
use super::queue::{self, TrySendError};
use super::wire::{self, Socket, Wire};
use crate::app::App;
use crate::error::{ApiError, ErrorCode, close};
use crate::model::User;
use crate::protocol::{self, RequestId};
use crate::service::{Listener, Typing, UserSubscription};

use self::limits::{Limits, ReadBudget};
use self::membership::JoinedRooms;
use self::writer::{Writer, pumping};

mod dispatch;
mod limits;
mod membership;
mod writer;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// Node-local connection number.
    pub id: u64,
    /// The socket's peer (a balancer, often).
    pub peer: SocketAddr,
    /// The client's own address (`--trusted-proxies`), for the per-address
    /// limits.
    pub address: IpAddr,
}

/// Runs a connection until it closes. When `shutdown` fires, the connection
/// finishes the request in hand and closes with 1012 at a random moment
/// within `--drain-window`, so clients do not all reconnect at once.
pub async fn run(
    gateway: Gateway,
    upgraded: Upgraded,
    ws_config: WebSocketConfig,
    client: Client,
    shutdown: CancellationToken,
) {
    let Client { id, peer, address } = client;
    let conn_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("conn", id, session = %conn_id, %peer);
    async move {
        let Some(wire) = Wire::from_upgraded(upgraded) else {
            tracing::warn!("the upgraded connection is not a TCP stream; dropping it");
            return;
        };
        let mut socket = Socket::new(wire, ws_config);
        tracing::debug!("connected");
        let app = gateway.app().clone();
        let config = app.config();
        let (tx, rx) = queue::channel(config.outbound_queue);
        let kill = Arc::new(Kill::default());
        let mut writer = Writer::new(rx, kill.clone(), &app);
        let user_slot = Arc::new(std::sync::OnceLock::new());
        let listener = Arc::new(HubListener::new(
            gateway.hub().clone(),
            Subscriber {
                id,
                tx: tx.clone(),
                kill: kill.clone(),
                conn: Arc::from(conn_id.as_str()),
                user: user_slot.clone(),
            },
        ));
        let mut conn = Connection {
            admission: gateway.admission().clone(),
            app,
            conn_id,
            address,
            user: None,
            user_slot,
            own: None,
            rooms: JoinedRooms::default(),
            listener,
            tx,
            kill: kill.clone(),
            limits: Limits::new(config.rate_limit, config.rate_burst),
            read_budget: ReadBudget::new(config.read_bytes_per_sec, std::time::Instant::now()),
            typing: Typing::new(config.typing_repeat),
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
            hello: config.hello_timeout,
        };
        // Boxed: the serving future has a heap cell of its own, sized for it,
        // instead of being copied into this one (rustc keeps room for both).
        let code = Box::pin(conn.serve(&mut socket, &mut writer, timers, drain)).await;
        // From here the hub's pushes fail quietly (no slow-consumer count).
        kill.kill(if code == close::NONE {
            close::NORMAL
        } else {
            code
        });
        // The close frame may wait on a client that does not read; leaving
        // the rooms does not wait for it. Boxed, like every rarely taken path
        // with a deep future: the task of an idle connection stays small.
        let tcp = socket.get_mut().tcp_mut();
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
    /// Close a client that has not completed `hello` this long after it
    /// connected, whatever else it sends.
    hello: Duration,
}

/// When a connection is closed for what it did not send: nothing at all
/// for the idle timeout (1001), or no `hello` by the hello deadline (4001).
/// One timer serves both: it is set to the nearer deadline.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    /// The idle timeout.
    idle: Duration,
    /// The hello deadline.
    hello_by: tokio::time::Instant,
    /// When the client last sent anything.
    last_heard: tokio::time::Instant,
}

impl Quiet {
    fn new(timers: Timers, now: tokio::time::Instant) -> Quiet {
        Quiet {
            idle: timers.idle,
            hello_by: now + timers.hello,
            last_heard: now,
        }
    }

    /// The client sent something at `now`.
    fn heard(&mut self, now: tokio::time::Instant) {
        self.last_heard = now;
    }

    /// When the timer should fire next.
    fn next(&self, said_hello: bool) -> tokio::time::Instant {
        let idle = self.last_heard + self.idle;
        if said_hello {
            idle
        } else {
            idle.min(self.hello_by)
        }
    }

    /// The close code due at `now`, if a deadline has passed.
    fn expired(&self, said_hello: bool, now: tokio::time::Instant) -> Option<u16> {
        if !said_hello && now >= self.hello_by {
            tracing::debug!("no hello by the deadline");
            Some(close::UNAUTHORIZED)
        } else if now >= self.last_heard + self.idle {
            tracing::debug!("idle timeout");
            Some(close::IDLE)
        } else {
            None
        }
    }
}

/// A connection's state, as the request handlers see it.
struct Connection {
    /// The node's services, config and metrics.
    app: App,
    /// Turns to run a request, shared by the node's connections.
    admission: Arc<tokio::sync::Semaphore>,
    /// The session id (`hello`'s `session`), a UUID.
    conn_id: String,
    /// The client's address, for the per-address limits.
    address: IpAddr,
    /// Who, once `hello` succeeded.
    user: Option<User>,
    /// The user id as the hub sees it (set by `hello`, shared with this
    /// connection's `Subscriber`), so that a `member.removed` for this user
    /// detaches this connection and `read` events reach it.
    user_slot: Arc<std::sync::OnceLock<Box<str>>>,
    /// The user's own events (`read`) reach this connection while it holds
    /// this (from hello to close).
    own: Option<UserSubscription>,
    /// The rooms joined on this connection, each held by its subscription.
    rooms: JoinedRooms,
    /// This connection's place in the hub, for new subscriptions.
    listener: Arc<dyn Listener>,
    /// The connection's own queue, for replies and join markers.
    tx: queue::Sender<Outbound>,
    /// Closes the connection from any task.
    kill: Arc<Kill>,
    /// Rate limit and abuse meter.
    limits: Limits,
    /// Bytes of history this connection may still be sent.
    read_budget: Option<ReadBudget>,
    /// Rooms where this connection's typing indicator is on.
    typing: Typing,
    /// Messages sent, for the user's activity record.
    messages_sent: u64,
    /// Closed by the node's drain (1012): the client is expected back on
    /// another node, so its participation is left to the janitor.
    drained: bool,
}

/// What woke a connection's loop.
enum Step {
    /// The hub cut the connection off.
    Killed,
    /// The client sent something (or the stream ended).
    Read(Option<Result<WsMessage, WsError>>),
    /// Something was queued for the client.
    Queued(Option<Outbound>),
    /// The node is shutting down.
    Drain,
    /// Time to ping the client.
    Ping,
    /// The timer fired: the idle or hello deadline, or a typing lapse.
    Timer,
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
        let mut quiet = Quiet::new(timers, tokio::time::Instant::now());
        let idle = tokio::time::sleep_until(quiet.next(false));
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
            if out.has_removed() {
                // Kicked, banned or the room closed: the hub has detached
                // this connection; forget the rooms without leaving them.
                let rooms = out.take_removed();
                Box::pin(pumping(
                    Box::pin(self.forget(rooms)),
                    out,
                    socket.get_ref().tcp(),
                ))
                .await;
                continue;
            }
            if self.kill.is_killed() {
                return self.kill.code().unwrap_or(close::NORMAL);
            }
            if out.backed_up() {
                // Left by a request that ran while the client was not
                // reading: wait for the socket now (or give up on it).
                Box::pin(out.write(socket.get_ref().tcp())).await;
                continue;
            }
            let lapse = self.typing.next_lapse();
            // One timer serves the idle and hello deadlines and the next
            // typing lapse: each timer in the select below would be room
            // kept in every connection's task.
            let said_hello = self.user.is_some();
            let wake = lapse.map_or(quiet.next(said_hello), |at| at.min(quiet.next(said_hello)));
            if idle.deadline() != wake {
                idle.as_mut().reset(wake);
            }
            // The select below reaches the timers only when the queue is not
            // ready (polling the drain future locks the node-wide shutdown
            // token, too dear for every event). A room busy enough to keep
            // the queue always ready must not starve them: every 16th turn
            // they are looked at first.
            turn = turn.wrapping_add(1);
            if turn.is_multiple_of(16) {
                let tcp = socket.get_ref().tcp();
                if idle.is_elapsed() {
                    let said_hello = self.user.is_some();
                    if let Some(code) = quiet.expired(said_hello, tokio::time::Instant::now()) {
                        return self.closed_for_quiet(code);
                    }
                    // Otherwise it was the typing lapse, handled below; the
                    // loop's top sets the timer again.
                }
                if reading && !self.drained && drain.as_mut().now_or_never().is_some() {
                    reading = false;
                    self.start_drain();
                    continue;
                }
                if ping.tick().now_or_never().is_some() {
                    Box::pin(out.send_now(wire::ping_frame(), tcp)).await;
                }
                if lapse.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    Box::pin(pumping(Box::pin(self.lapse_typing()), out, tcp)).await;
                    continue;
                }
            }
            // The select only chooses; what follows runs after its futures
            // are gone, so the task never holds both at once (rustc keeps a
            // select's futures alive through an awaiting branch body).
            let step = tokio::select! {
                biased;
                _ = self.kill.killed() => Step::Killed,
                next = socket.next(), if reading => Step::Read(next),
                item = out.rx.recv() => Step::Queued(item),
                _ = &mut drain, if reading && !self.drained => Step::Drain,
                _ = ping.tick() => Step::Ping,
                _ = &mut idle => Step::Timer,
            };
            match step {
                Step::Killed => return self.kill.code().unwrap_or(close::NORMAL),
                Step::Read(next) => {
                    // The loop's top moves the timer to the new deadline.
                    quiet.heard(tokio::time::Instant::now());
                    // tungstenite answers pings and closes on its next write:
                    // make it now, then send what it wrote.
                    if matches!(next, Some(Ok(WsMessage::Ping(_) | WsMessage::Close(_)))) {
                        let _ = socket.flush();
                    }
                    if let Some(control) = socket.get_mut().take_control() {
                        Box::pin(out.send_now(control, socket.get_ref().tcp())).await;
                    }
                    let data = matches!(next, Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))));
                    let flow = match next {
                        None => Flow::Closed,
                        Some(next) => {
                            let tcp = socket.get_ref().tcp();
                            // Boxed: a request's state lives on the heap only
                            // while it runs.
                            Box::pin(pumping(Box::pin(self.on_frame(next)), out, tcp)).await
                        }
                    };
                    match flow {
                        Flow::Continue => {
                            // A large frame's buffer is given back once the
                            // message is handled.
                            if data && socket.shrink() {
                                tracing::trace!("read buffer given back");
                            }
                            // Reading first is fair only if what is queued
                            // goes out between frames: a client sending fast
                            // must not hold up its own replies and events.
                            if let Ok(item) = out.rx.try_recv() {
                                Box::pin(out.pump(item, socket.get_ref().tcp())).await;
                            }
                        }
                        Flow::Closed => return close::NONE,
                        Flow::Close(code) => {
                            reading = false;
                            self.close_after_queue(code);
                        }
                    }
                }
                Step::Queued(item) => {
                    // This connection holds a sender: the queue does not end.
                    let Some(item) = item else {
                        return close::NORMAL;
                    };
                    Box::pin(out.pump(item, socket.get_ref().tcp())).await;
                }
                Step::Drain => {
                    reading = false;
                    self.start_drain();
                }
                Step::Ping => {
                    Box::pin(out.send_now(wire::ping_frame(), socket.get_ref().tcp())).await
                }
                Step::Timer => {
                    let now = tokio::time::Instant::now();
                    if lapse.is_some_and(|at| at <= now) {
                        let tcp = socket.get_ref().tcp();
                        Box::pin(pumping(Box::pin(self.lapse_typing()), out, tcp)).await;
                    }
                    if let Some(code) = quiet.expired(self.user.is_some(), now) {
                        return self.closed_for_quiet(code);
                    }
                }
            }
        }
    }

    /// Counts a close for silence: no hello by the deadline is an abuse
    /// limit.
    fn closed_for_quiet(&self, code: u16) -> u16 {
        if code == close::UNAUTHORIZED {
            self.app.metrics().abuse_limited("hello_timeout");
        }
        code
    }

    /// The node is shutting down: close 1012 after what is queued. Runs
    /// between requests, so the one in hand has been answered.
    fn start_drain(&mut self) {
        self.drained = true;
        self.close_after_queue(close::RESTART);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    fn quiet(now: Instant) -> Quiet {
        Quiet::new(
            Timers {
                idle: Duration::from_secs(60),
                ping: Duration::from_secs(25),
                hello: Duration::from_secs(10),
            },
            now,
        )
    }

    #[test]
    fn no_hello_closes_4001_whatever_else_is_sent() {
        let t0 = Instant::now();
        let mut q = quiet(t0);
        assert_eq!(q.next(false), t0 + Duration::from_secs(10));
        // Pings keep the idle timer away, not the hello deadline.
        for s in 1..10 {
            q.heard(t0 + Duration::from_secs(s));
            assert_eq!(q.expired(false, t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(q.next(false), t0 + Duration::from_secs(10));
        assert_eq!(
            q.expired(false, t0 + Duration::from_secs(10)),
            Some(close::UNAUTHORIZED)
        );
    }

    #[test]
    fn after_hello_only_silence_closes() {
        let t0 = Instant::now();
        let mut q = quiet(t0);
        q.heard(t0 + Duration::from_secs(1));
        // The timer set before hello fires at the hello deadline: nothing is
        // due, and it is set again for the idle timeout.
        assert_eq!(q.expired(true, t0 + Duration::from_secs(10)), None);
        assert_eq!(q.next(true), t0 + Duration::from_secs(61));
        assert_eq!(
            q.expired(true, t0 + Duration::from_secs(61)),
            Some(close::IDLE)
        );
    }
}
