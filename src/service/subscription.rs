//! Room subscriptions: how one connection starts and stops receiving a
//! room's events on this node.
//!
//! A join snapshot is only gap-free if the node already receives the room's
//! events when the snapshot is read: anything published after the snapshot
//! must reach the connection live. `RoomService::create` and
//! `RoomService::join` therefore take a `RoomSubscription` as proof that the
//! subscription came first; the rule lives here, not in every caller.
//!
//! A subscription is two holds taken together and released together: the
//! connection's place in the node's local fan-out (a `Listener`, which the
//! gateway implements over its hub) and one hold on the room's bus channel.
//! `release` gives both back; dropping an unreleased subscription does the
//! same (the bus hold is returned on a spawned task).
//!
//! A `UserSubscription` is the same pair for a user's own events (a `read`
//! event, whatever rooms the connection joined): the connection's place
//! among the user's local connections and a hold on the user's channel,
//! from hello to close. Its bus hold is queued, not awaited (best effort;
//! `crate::bus`), so hello never waits for it.

use std::sync::Arc;

use crate::bus::EventBus;
use crate::error::ServiceError;

/// One connection's place in this node's local fan-out of room events.
/// The gateway implements it over its hub; services never see the
/// connection's queue.
pub trait Listener: Send + Sync {
    /// Starts handing `room`'s events received by this node to the
    /// connection (idempotent).
    fn attach(&self, room: &Arc<str>);
    /// Stops it.
    fn detach(&self, room: &str);
    /// Starts handing the events addressed to `user` (the connection's
    /// user) to the connection (idempotent).
    fn attach_user(&self, user: &str);
    /// Stops it.
    fn detach_user(&self, user: &str);
}

/// A connection's subscription to one room's events; see the module docs.
pub struct RoomSubscription {
    /// The room.
    room: Arc<str>,
    /// What to give back; `None` once released.
    holds: Option<Holds>,
}

/// The two holds a subscription owns.
struct Holds {
    /// The connection's place in the local fan-out.
    listener: Arc<dyn Listener>,
    /// The channel hold on the bus.
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for RoomSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomSubscription")
            .field("room", &self.room)
            .field("released", &self.holds.is_none())
            .finish()
    }
}

impl RoomSubscription {
    /// Attaches `listener` to the room, then takes a hold on its channel and
    /// returns once this node receives the room's events.
    pub(super) async fn start(
        room: Arc<str>,
        listener: Arc<dyn Listener>,
        bus: Arc<dyn EventBus>,
    ) -> Result<RoomSubscription, ServiceError> {
        listener.attach(&room);
        if let Err(e) = bus.subscribe(&room).await {
            listener.detach(&room);
            return Err(e.into());
        }
        Ok(RoomSubscription {
            room,
            holds: Some(Holds { listener, bus }),
        })
    }

    /// The room's id.
    pub fn room(&self) -> &Arc<str> {
        &self.room
    }

    /// Stops receiving the room's events: detaches the connection, then
    /// gives the channel hold back.
    pub async fn release(mut self) {
        if let Some(holds) = self.holds.take() {
            holds.listener.detach(&self.room);
            holds.bus.unsubscribe(&self.room).await;
        }
    }
}

impl Drop for RoomSubscription {
    fn drop(&mut self) {
        let Some(Holds { listener, bus }) = self.holds.take() else {
            return;
        };
        listener.detach(&self.room);
        let room = self.room.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { bus.unsubscribe(&room).await });
            }
            // Without a runtime the node is going away and its bus with it.
            Err(_) => tracing::debug!(room = %room, "subscription dropped outside the runtime"),
        }
    }
}

/// A connection's subscription to its user's own events; see the module
/// docs.
pub struct UserSubscription {
    /// The user.
    user: Box<str>,
    /// What to give back; `None` once released.
    holds: Option<Holds>,
}

impl std::fmt::Debug for UserSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSubscription")
            .field("user", &self.user)
            .field("released", &self.holds.is_none())
            .finish()
    }
}

impl UserSubscription {
    /// Attaches `listener` to `user`'s events and queues a hold on the
    /// user's channel.
    pub(super) async fn start(
        user: &str,
        listener: Arc<dyn Listener>,
        bus: Arc<dyn EventBus>,
    ) -> UserSubscription {
        listener.attach_user(user);
        bus.hold_user(user).await;
        UserSubscription {
            user: Box::from(user),
            holds: Some(Holds { listener, bus }),
        }
    }

    /// Stops receiving the user's events: detaches the connection, then
    /// gives the channel hold back.
    pub async fn release(mut self) {
        if let Some(holds) = self.holds.take() {
            holds.listener.detach_user(&self.user);
            holds.bus.release_user(&self.user).await;
        }
    }
}

impl Drop for UserSubscription {
    fn drop(&mut self) {
        let Some(Holds { listener, bus }) = self.holds.take() else {
            return;
        };
        listener.detach_user(&self.user);
        let user = std::mem::take(&mut self.user);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { bus.release_user(&user).await });
            }
            Err(_) => {
                tracing::debug!(user = %user, "user subscription dropped outside the runtime")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::error::ErrorCode;
    use crate::model::Event;
    use crate::store::{StoreError, StoreResult};

    /// Records attach/detach and bus holds in order.
    #[derive(Default)]
    struct Log {
        steps: Mutex<Vec<String>>,
        refuse: AtomicBool,
    }

    impl Log {
        fn push(&self, step: String) {
            self.steps.lock().expect("log").push(step);
        }
        fn steps(&self) -> Vec<String> {
            self.steps.lock().expect("log").clone()
        }
    }

    struct TestListener(Arc<Log>);
    impl Listener for TestListener {
        fn attach(&self, room: &Arc<str>) {
            self.0.push(format!("attach {room}"));
        }
        fn detach(&self, room: &str) {
            self.0.push(format!("detach {room}"));
        }
        fn attach_user(&self, user: &str) {
            self.0.push(format!("attach user {user}"));
        }
        fn detach_user(&self, user: &str) {
            self.0.push(format!("detach user {user}"));
        }
    }

    struct TestBus(Arc<Log>);
    #[async_trait]
    impl EventBus for TestBus {
        async fn publish(&self, _: &str, _: &Event) -> StoreResult<()> {
            Ok(())
        }
        async fn publish_to_user(&self, _: &str, _: &str, _: &Event) -> StoreResult<()> {
            Ok(())
        }
        async fn hold_user(&self, user: &str) {
            self.0.push(format!("hold {user}"));
        }
        async fn release_user(&self, user: &str) {
            self.0.push(format!("release {user}"));
        }
        async fn subscribe(&self, room: &str) -> StoreResult<()> {
            if self.0.refuse.load(Ordering::Relaxed) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.0.push(format!("subscribe {room}"));
            Ok(())
        }
        async fn unsubscribe(&self, room: &str) {
            self.0.push(format!("unsubscribe {room}"));
        }
        fn healthy(&self) -> bool {
            true
        }
    }

    fn parts(log: &Arc<Log>) -> (Arc<dyn Listener>, Arc<dyn EventBus>) {
        (
            Arc::new(TestListener(log.clone())),
            Arc::new(TestBus(log.clone())),
        )
    }

    #[tokio::test]
    async fn attach_before_subscribe_and_release_both() {
        let log = Arc::new(Log::default());
        let (listener, bus) = parts(&log);
        let sub = RoomSubscription::start(Arc::from("r"), listener, bus)
            .await
            .expect("subscribed");
        assert_eq!(&**sub.room(), "r");
        sub.release().await;
        assert_eq!(
            log.steps(),
            ["attach r", "subscribe r", "detach r", "unsubscribe r"]
        );
    }

    #[tokio::test]
    async fn a_refused_subscribe_leaves_nothing_attached() {
        let log = Arc::new(Log::default());
        log.refuse.store(true, Ordering::Relaxed);
        let (listener, bus) = parts(&log);
        let err = RoomSubscription::start(Arc::from("r"), listener, bus)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(log.steps(), ["attach r", "detach r"]);
    }

    #[tokio::test]
    async fn dropping_releases_too() {
        let log = Arc::new(Log::default());
        let (listener, bus) = parts(&log);
        let sub = RoomSubscription::start(Arc::from("r"), listener, bus)
            .await
            .expect("subscribed");
        drop(sub);
        // The bus hold is given back on a spawned task.
        for _ in 0..100 {
            if log.steps().len() == 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            log.steps(),
            ["attach r", "subscribe r", "detach r", "unsubscribe r"]
        );
    }

    #[tokio::test]
    async fn a_user_subscription_holds_from_start_to_release_or_drop() {
        let log = Arc::new(Log::default());
        let (listener, bus) = parts(&log);
        let sub = UserSubscription::start("ann", listener.clone(), bus.clone()).await;
        sub.release().await;
        let expected = [
            "attach user ann",
            "hold ann",
            "detach user ann",
            "release ann",
        ];
        assert_eq!(log.steps(), expected);

        let log = Arc::new(Log::default());
        let (listener, bus) = parts(&log);
        drop(UserSubscription::start("ann", listener, bus).await);
        for _ in 0..100 {
            if log.steps().len() == 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(log.steps(), expected);
    }
}
