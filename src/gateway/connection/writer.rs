//! The sending side of a connection: its bounded queue, the per-room
//! delivery state (the seq floor below which a join snapshot already covers
//! a room's events, and the events held while a join is in flight), and the
//! frames gathered for the next write.
//!
//! Frames go to the kernel with one `writev` per batch, straight from the
//! shared bytes (`wire::Outbox`). A quiet connection writes at once; a busy
//! one lingers a moment so that a write carries many frames. A client that
//! does not keep up is cut off: when the hub finds its queue full, or when it
//! takes nothing for the idle timeout (close 1013).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::super::hub::{Kill, Outbound, RoomFrame, Snapshot};
use super::super::queue;
use super::super::wire::{self, Outbox};
use crate::app::App;
use crate::error::close;
use crate::metrics::TypeLabel;

/// Runs `work` (a request) while sending what is queued meanwhile, so that a
/// request waiting on Redis does not hold up the connection's events. Only
/// what the socket takes at once is written here: the request never waits
/// on the client. When the client does not keep up, the rest stays in the
/// outbox and the queue fills behind it (a slow consumer is closed 1013).
pub(super) async fn pumping<T>(
    work: impl Future<Output = T>,
    out: &mut Writer,
    tcp: &TcpStream,
) -> T {
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

/// Per-room delivery state of the writer.
enum RoomState {
    /// A join is in flight: hold events (and remember the floor of an
    /// earlier join of the same room, if any).
    Holding(u64, Vec<Arc<RoomFrame>>),
    /// Deliver events above the floor.
    Live(u64),
}

/// The per-room delivery states of a connection, sorted by room. A vector
/// grown one at a time rather than a map: a connection holds one room or a
/// few, and a map would keep room for several on every idle connection.
#[derive(Default)]
struct RoomStates(Vec<(Arc<str>, RoomState)>);

impl RoomStates {
    fn position(&self, room: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(r, _)| (**r).cmp(room))
    }

    fn get(&self, room: &str) -> Option<&RoomState> {
        self.position(room).ok().map(|at| &self.0[at].1)
    }

    fn get_mut(&mut self, room: &str) -> Option<&mut RoomState> {
        self.position(room).ok().map(|at| &mut self.0[at].1)
    }

    fn insert(&mut self, room: Arc<str>, state: RoomState) {
        match self.position(&room) {
            Ok(at) => self.0[at].1 = state,
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (room, state));
            }
        }
    }

    fn remove(&mut self, room: &str) -> Option<RoomState> {
        self.position(room).ok().map(|at| self.0.remove(at).1)
    }
}

/// The sending side of a connection: its queue, the per-room delivery
/// state, and the frames gathered for the next write.
pub(super) struct Writer {
    /// The connection's queue: replies, events, join and leave markers.
    pub(super) rx: queue::Receiver<Outbound>,
    /// Cuts the connection off (slow consumer) or tells a failed write.
    kill: Arc<Kill>,
    /// Per-room delivery state.
    rooms: RoomStates,
    /// Events held for one joining room before the connection is too slow.
    hold_limit: usize,
    /// Frames gathered for the next write.
    outbox: Outbox,
    /// Set once the connection is to close: the code (`close::NONE` when the
    /// socket failed).
    pub(super) closed: Option<u16>,
    /// How long a write may wait on a client that takes nothing.
    stall: Duration,
    /// `huddle_frames_out_total{type="event"}`.
    events_out: Counter,
    /// `huddle_frames_out_total{type="reply"}`.
    replies_out: Counter,
    /// `huddle_slow_consumers_total`.
    slow_consumers: Counter,
    /// Rooms this connection was removed from (`Outbound::Removed`), for
    /// the connection to forget.
    removed: Vec<Arc<str>>,
}

/// Frames gathered in one go that make a connection "busy".
const BUSY_BATCH: usize = 8;
/// How long a busy connection gathers more frames before writing.
const BUSY_LINGER: Duration = Duration::from_millis(1);
/// How long the close frame may take to send: a client that stopped reading
/// gets this long to take what its socket holds and then the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, after the close frame and the FIN, what the client still sends
/// is read out before the socket is dropped (see `Writer::close`).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

impl Writer {
    pub(super) fn new(rx: queue::Receiver<Outbound>, kill: Arc<Kill>, app: &App) -> Writer {
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
            rooms: RoomStates::default(),
            hold_limit: app.config().outbound_queue,
            outbox: Outbox::default(),
            closed: None,
            stall: app.config().idle_timeout,
            events_out: frames("event"),
            replies_out: frames("reply"),
            slow_consumers: metrics.slow_consumers.clone(),
            removed: Vec::new(),
        }
    }

    /// Sends `first` and everything queued behind it, in one write.
    pub(super) async fn pump(&mut self, first: Outbound, tcp: &TcpStream) {
        self.gather(first).await;
        self.write(tcp).await;
    }

    /// Takes `first` and everything queued behind it, and writes what the
    /// socket takes without waiting for it (see `pumping`).
    pub(super) async fn pump_now(&mut self, first: Outbound, tcp: &TcpStream) {
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

    /// Whether the connection was removed from a room it has not forgotten
    /// yet.
    pub(super) fn has_removed(&self) -> bool {
        !self.removed.is_empty()
    }

    /// The rooms the connection was removed from, to forget.
    pub(super) fn take_removed(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.removed)
    }

    /// Frames are waiting for the socket.
    pub(super) fn backed_up(&self) -> bool {
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
    pub(super) async fn send_now(&mut self, frame: Bytes, tcp: &TcpStream) {
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
                        if self.kill.kill(close::SLOW) {
                            self.slow_consumers.inc();
                        }
                        return;
                    }
                    held.push(event);
                }
            },
            Outbound::Direct(event) => {
                self.events_out.inc();
                self.outbox.push(event.frame.clone());
            }
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
                self.rooms.remove(&room);
            }
            Outbound::Removed(room) => {
                // A join in flight held the room's events, the removal's
                // own frame among them: they go out, nothing after them.
                if let Some(RoomState::Holding(floor, held)) = self.rooms.remove(&room) {
                    for event in held {
                        if event.seq == 0 || event.seq > floor {
                            self.events_out.inc();
                            self.outbox.push(event.frame.clone());
                        }
                    }
                }
                self.removed.push(*room);
            }
            Outbound::Close(code) => self.closed = Some(code),
        }
    }

    /// Writes what is gathered. A client too slow to take it is cut off
    /// mid-write when the hub finds its queue full, or when it has taken
    /// nothing for the idle timeout.
    pub(super) async fn write(&mut self, tcp: &TcpStream) {
        if self.outbox.is_empty() || self.write_now(tcp) {
            return;
        }
        // The socket is full: wait for it (a timer only on this slow path).
        let kill = self.kill.clone();
        let cut_off = async move {
            kill.killed().await;
            if kill.code() != Some(close::SLOW) {
                // Other closes wait for what is being written.
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = self.outbox.write_to(tcp) => r,
            _ = cut_off => return,
            _ = tokio::time::sleep(self.stall) => {
                tracing::debug!("the client took nothing for the idle timeout");
                if self.kill.kill(close::SLOW) {
                    self.slow_consumers.inc();
                }
                return;
            }
        };
        if let Err(e) = result {
            self.failed(e);
        }
    }

    /// Sends the close frame (after the rest of a frame cut off mid-write)
    /// and ends the connection so that the client reads it.
    ///
    /// A client may still be sending when the server closes (a flood, the
    /// rest of a frame over the size limit). Closing a socket with unread
    /// bytes in its receive buffer makes the kernel reset the connection,
    /// which throws away what is still in flight towards the client, the
    /// close frame included: the client sees an abnormal closure (1006)
    /// instead of the code. So what the client sends is read and discarded
    /// while the close frame goes out (a client blocked writing to us gets
    /// to read), then the sending side is shut (FIN) and the input read out
    /// until the client hangs up too, `CLOSE_LINGER` at most. The close
    /// frame itself gets `CLOSE_TIMEOUT`: a client that reads nothing is
    /// dropped then.
    pub(super) async fn close(&mut self, tcp: &mut TcpStream, code: u16) {
        if code == close::NONE {
            return;
        }
        self.outbox.discard_unstarted();
        self.outbox
            .push(wire::close_frame(code, close::reason(code)));
        let mut input = wire::Discard::new();
        let give_up = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        let sent = {
            let tcp: &TcpStream = tcp;
            loop {
                tokio::select! {
                    biased;
                    written = self.outbox.write_to(tcp) => break written.is_ok(),
                    read = input.discard(tcp), if input.open() => {
                        if read.is_err() {
                            break false;
                        }
                    }
                    _ = tokio::time::sleep_until(give_up) => break false,
                }
            }
        };
        if !sent {
            tracing::debug!("the close frame could not be sent");
            return;
        }
        if let Err(e) = tcp.shutdown().await {
            tracing::debug!(error = %e, "half-close failed");
            return;
        }
        let hang_up = tokio::time::Instant::now() + CLOSE_LINGER;
        while input.open() {
            tokio::select! {
                read = input.discard(tcp) => {
                    if read.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(hang_up) => {
                    tracing::debug!("the client did not hang up after the close");
                    return;
                }
            }
        }
    }
}
