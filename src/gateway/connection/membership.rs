//! A connection's rooms: creating, joining (with `since`), leaving, typing,
//! and leaving everything when the socket ends.
//!
//! Each joined room is held as the services' `RoomSubscription`, which
//! attaches the connection to the hub and holds the room's bus channel, and
//! gives both back when released. Ordering with the writer: a join first
//! queues `Outbound::Pending` (the writer holds the room's events), then
//! subscribes and reads the snapshot, then queues `Outbound::Joined` (the
//! reply, then the held events above the snapshot's floor). A failed join
//! goes back to what was before.

use std::sync::Arc;

use rand::RngExt;

use serde_json::value::RawValue;

use super::super::hub::{Outbound, Snapshot};
use super::super::wire;
use super::Connection;
use crate::error::{ApiError, ServiceError};
use crate::model::User;
use crate::protocol::replies::{Empty, JoinEvents, JoinMessages, RoomData, data};
use crate::protocol::{self, RequestId};
use crate::service::{JoinHistory, Joined, NewRoom, RoomSubscription};

/// How long the leaves and the session removal of a closed connection are
/// tried while the store is unavailable (see `Connection::cleanup`).
const CLEANUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
/// The first wait before trying them again; it doubles.
const CLEANUP_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest wait between tries.
const CLEANUP_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(4);

impl Connection {
    pub(super) async fn create(
        &mut self,
        id: Option<&RequestId>,
        user: &User,
        name: &str,
        max: Option<i64>,
        private: Option<bool>,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let app = self.app.clone();
        // The room does not exist before `create`, so none of its events can
        // arrive before the writer holds them.
        let subscription = app.rooms().subscribe_new(self.listener.clone()).await?;
        let key = subscription.room().clone();
        self.enqueue(Outbound::Pending(Box::new(key.clone())));
        match app
            .rooms()
            .create(
                &subscription,
                user,
                &self.conn_id,
                NewRoom {
                    name,
                    max_participants: max,
                    private,
                },
                Some(self.address),
            )
            .await
        {
            Ok(room) => {
                self.rooms.insert(subscription);
                self.joined(id, &key, room.last_seq, data(&RoomData { room: &room }));
                Ok(None)
            }
            Err(e) => {
                subscription.release().await;
                self.enqueue(Outbound::Left(Box::new(key)));
                Err(e.into())
            }
        }
    }

    pub(super) async fn join(
        &mut self,
        request_id: Option<&RequestId>,
        user: &User,
        room: Option<&str>,
        code: Option<&str>,
        since: Option<u64>,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let app = self.app.clone();
        let (id, entry) = app
            .rooms()
            .resolve_join(user, room, code, Some(self.address))
            .await?;
        let key: Arc<str> = Arc::from(id.as_str());
        // Hold the room's events from before the subscription starts.
        self.enqueue(Outbound::Pending(Box::new(key.clone())));
        // Joined already on this connection (a resume): the subscription in
        // hand serves.
        let fresh = if self.rooms.get(&key).is_some() {
            None
        } else {
            match app.rooms().subscribe(&key, self.listener.clone()).await {
                Ok(subscription) => Some(subscription),
                Err(e) => {
                    self.enqueue(Outbound::Left(Box::new(key)));
                    return Err(e.into());
                }
            }
        };
        let outcome = {
            let subscription = match &fresh {
                Some(fresh) => fresh,
                None => self
                    .rooms
                    .get(&key)
                    .expect("checked above: the connection holds the room"),
            };
            app.rooms()
                .join(subscription, entry, user, &self.conn_id, since)
                .await
        };
        match outcome {
            Ok(joined) => {
                if let Some(fresh) = fresh {
                    self.rooms.insert(fresh);
                }
                let reply = join_reply(&joined, app.config().resume_max_bytes);
                self.charge_read(reply.get().len());
                self.joined(request_id, &key, joined.floor, reply);
                Ok(None)
            }
            Err(failed) => {
                match fresh {
                    Some(fresh) => {
                        // The client is told the join failed: a join that
                        // was written (only its snapshot failed) is taken
                        // back. If that fails too, the connection keeps the
                        // room without its events, so that closing leaves
                        // it and a retried join answers as a resume.
                        let mut keep = false;
                        if failed.written {
                            tracing::warn!(room = %key, error = %failed.error, "a join was written but not read: leaving again");
                            if let Err(e) = app.rooms().leave(user, &self.conn_id, &key).await {
                                tracing::warn!(room = %key, error = %e, "could not leave after a failed join");
                                keep = true;
                            }
                        }
                        if keep {
                            self.rooms.insert(fresh);
                        } else {
                            fresh.release().await;
                        }
                        self.enqueue(Outbound::Left(Box::new(key)));
                    }
                    // Still joined from before: back to live delivery.
                    None => self.enqueue(Outbound::Joined(Box::new(Snapshot {
                        room: key,
                        floor: 0,
                        reply: None,
                    }))),
                }
                Err(failed.error.into())
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

    pub(super) async fn leave(
        &mut self,
        user: &User,
        room: &str,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let app = self.app.clone();
        if self.typing.clear(room) {
            self.tell_typing_stopped(user, room).await;
        }
        app.rooms().leave(user, &self.conn_id, room).await?;
        if let Some(subscription) = self.rooms.remove(room) {
            let key = subscription.room().clone();
            subscription.release().await;
            self.enqueue(Outbound::Left(Box::new(key)));
        }
        Ok(Some(data(&Empty {})))
    }

    pub(super) async fn typing(
        &mut self,
        user: &User,
        room: &str,
        active: bool,
    ) -> Result<Option<Box<RawValue>>, ApiError> {
        let Some(key) = self.rooms.get(room).map(|s| s.room().clone()) else {
            // A room that is gone (closed, or never was) is `not_found`.
            self.app.rooms().ensure_exists(room).await?;
            return Err(ServiceError::Forbidden("join the room before typing in it".into()).into());
        };
        if self.typing.set(&key, active, tokio::time::Instant::now()) {
            // A muted user may not type (1.1). Checked only when the room
            // would be told: repeats in between cost no round trip.
            if active && let Err(e) = self.app.moderation().check_not_muted(user, &key).await {
                self.typing.clear(&key);
                return Err(e.into());
            }
            self.app.rooms().typing(user, &key, active).await?;
        }
        Ok(Some(data(&Empty {})))
    }

    /// Turns off typing indicators whose 5 s have passed without a repeat.
    pub(super) async fn lapse_typing(&mut self) {
        let Some(user) = self.user.clone() else {
            return;
        };
        for room in self.typing.take_lapsed(tokio::time::Instant::now()) {
            self.tell_typing_stopped(&user, &room).await;
        }
    }

    /// Tells the room that `user` stopped typing; a failure only costs the
    /// others' indicator its lapse, so it is logged.
    async fn tell_typing_stopped(&self, user: &User, room: &str) {
        if let Err(e) = self.app.rooms().typing(user, room, false).await {
            tracing::debug!(room, error = %e, "could not clear typing");
        }
    }

    /// Forgets rooms this connection was removed from (kicked, banned, or
    /// closed): the store has removed it already and the hub has detached
    /// it, so the subscription is released, and a later close does not
    /// leave those rooms again. The store's leave still runs for this
    /// connection: it finds nothing to do, unless a join of this connection
    /// sent before the client saw the removal was applied after it; then it
    /// undoes that join, so the store and the connection agree. (A join the
    /// client sends after seeing the removal is read only after this ran.)
    pub(super) async fn forget(&mut self, rooms: Vec<Arc<str>>) {
        for room in rooms {
            self.typing.clear(&room);
            if let Some(subscription) = self.rooms.remove(&room) {
                subscription.release().await;
            }
            let Some(user) = self.user.clone() else {
                continue;
            };
            // A closed room is gone: `not_found` is the expected answer.
            if let Err(e) = self.app.rooms().leave(&user, &self.conn_id, &room).await {
                tracing::debug!(room = %room, error = %e, "leave after a removal");
            }
        }
    }

    /// Leaves every room and removes the session; runs when the socket ends.
    pub(super) async fn cleanup(&mut self) {
        let typing = self.typing.take_all();
        if let Some(own) = self.own.take() {
            own.release().await;
        }
        let Some(user) = self.user.take() else {
            return;
        };
        // A turn like a request's: when thousands of clients drop at once
        // (a balancer or a network path failing), their leaves queue here
        // rather than all at once in the Redis pipeline, where they would
        // time out and leave participants behind.
        let mut turn = self.turn().await;
        for room in typing {
            self.tell_typing_stopped(&user, &room).await;
        }
        let app = self.app.clone();
        let rooms = self.rooms.take_all();
        if self.drained {
            // A rolling update: the client reconnects elsewhere and resumes.
            // Leaving now would write "left" and, a moment later, "joined";
            // the janitor removes this session once the node is gone, and
            // announces a departure only if the user did not come back.
            for subscription in rooms {
                subscription.release().await;
            }
            app.sessions()
                .record_activity(&user, self.messages_sent)
                .await;
            return;
        }
        // Tried again while the store is unavailable (an open breaker, an
        // overloaded Redis), for `CLEANUP_PATIENCE`: given up at once, the
        // user would stay a participant of the room, and online, until this
        // node ends. The turn is given back while waiting.
        let mut pause = CLEANUP_FIRST_PAUSE;
        let give_up = tokio::time::Instant::now() + CLEANUP_PATIENCE;
        let mut wait = async |turn: &mut Option<_>, e: &ServiceError| {
            let now = tokio::time::Instant::now();
            let unavailable = matches!(e, ServiceError::Store(s) if s.is_unavailable());
            if !unavailable || now + pause > give_up {
                return false;
            }
            *turn = None;
            // Jittered, so that the connections a failure closed at once
            // do not all come back at the same moment.
            let jittered = pause.mul_f64(rand::rng().random_range(0.5..1.5));
            tokio::time::sleep(jittered).await;
            pause = (pause * 2).min(CLEANUP_MAX_PAUSE);
            *turn = self.turn().await;
            true
        };
        for subscription in rooms {
            let room = subscription.room().clone();
            subscription.release().await;
            loop {
                match app.rooms().leave(&user, &self.conn_id, &room).await {
                    Ok(()) => break,
                    Err(e) if wait(&mut turn, &e).await => {}
                    Err(e) => {
                        tracing::warn!(room = %room, error = %e, "could not leave on disconnect");
                        break;
                    }
                }
            }
        }
        loop {
            let closed = app
                .sessions()
                .close(&self.conn_id, &user, self.messages_sent)
                .await;
            match closed {
                Ok(()) => break,
                Err(e) if wait(&mut turn, &e).await => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove session");
                    break;
                }
            }
        }
    }
}

/// The reply data of a join: the latest messages, or the events after
/// `since` rendered as they are pushed live.
fn join_reply(joined: &Joined, max_bytes: usize) -> Box<RawValue> {
    let participants = &joined.participants;
    match &joined.history {
        JoinHistory::Messages(messages) => data(&JoinMessages {
            room: &joined.room,
            participants,
            messages,
        }),
        JoinHistory::Events { events, complete } => {
            // Rendered in order until the reply's byte budget is spent; what
            // does not fit is paged with `message.history`.
            let mut complete = *complete;
            let mut bytes = 0;
            let mut frames = Vec::with_capacity(events.len());
            for e in events {
                let frame = protocol::event_frame(&joined.room.id, e.seq, &e.event);
                if bytes + frame.len() > max_bytes {
                    complete = false;
                    break;
                }
                bytes += frame.len();
                frames.push(protocol::raw(frame));
            }
            data(&JoinEvents {
                room: &joined.room,
                participants,
                events: frames,
                complete,
            })
        }
    }
}

/// The rooms a connection has joined, each held by its subscription: a
/// vector sorted by room id (most connections hold one or a few rooms, and
/// an idle connection's memory counts).
#[derive(Debug, Default)]
pub(super) struct JoinedRooms(Vec<RoomSubscription>);

impl JoinedRooms {
    fn position(&self, room: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|s| (**s.room()).cmp(room))
    }

    /// The subscription of `room`, if joined.
    pub(super) fn get(&self, room: &str) -> Option<&RoomSubscription> {
        self.position(room).ok().map(|at| &self.0[at])
    }

    /// Holds a new subscription (its room is not held yet). Grows by one:
    /// most connections hold one room or a few, and every idle connection
    /// would otherwise carry room for four.
    fn insert(&mut self, subscription: RoomSubscription) {
        match self.position(subscription.room()) {
            Ok(at) => self.0[at] = subscription,
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, subscription)
            }
        }
    }

    /// Takes the subscription of `room` out.
    fn remove(&mut self, room: &str) -> Option<RoomSubscription> {
        self.position(room).ok().map(|at| self.0.remove(at))
    }

    /// Takes every subscription out.
    fn take_all(&mut self) -> Vec<RoomSubscription> {
        std::mem::take(&mut self.0)
    }
}
