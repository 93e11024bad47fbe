//! User channels: `user_events:{U}`, for events addressed to one user's
//! connections whatever rooms they joined (the `read` event of protocol
//! 1.1). A node holds a user's channel while it has a connection of the
//! user that said hello.
//!
//! What travels here is best effort: a lost `read` event only leaves another
//! tab's badge stale until its next `room.mine`. So a hold is a request
//! queued to the subscriber task, never awaited to the subscription, and
//! hello does not wait for Redis. The subscriber takes the queued holds and
//! releases in batches (`UserHolds::apply`): during a reconnection storm
//! thousands of hellos cost a handful of `SUBSCRIBE` calls, and a hold and
//! release of the same user in one batch cost none.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::codec;
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::model::{Event, now_us};

/// The most user commands applied in one batch.
pub(super) const BATCH: usize = 1024;

/// The queue of user commands to a subscriber task.
pub(super) const QUEUE: usize = 4096;

/// A request to the subscriber task about a user's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UserCommand {
    /// Take a hold on the user's channel.
    Hold(String),
    /// Release one.
    Release(String),
}

/// Queues `cmd` for the subscriber task; a stopped task is not an error
/// (the node is going away).
pub(super) async fn request(users: &mpsc::Sender<UserCommand>, cmd: UserCommand) {
    let _ = users.send(cmd).await;
}

/// The message of `event` of `room` on a user channel.
pub(super) fn payload(room: &str, event: &Event) -> Vec<u8> {
    codec::address(room, &codec::encode(0, event, now_us()))
}

/// `first` and whatever else is queued, up to `BATCH` commands.
pub(super) fn batch(first: UserCommand, rx: &mut mpsc::Receiver<UserCommand>) -> Vec<UserCommand> {
    let mut cmds = vec![first];
    while cmds.len() < BATCH {
        match rx.try_recv() {
            Ok(cmd) => cmds.push(cmd),
            Err(_) => break,
        }
    }
    cmds
}

/// What a batch changed: the users whose channel is to be subscribed and
/// those whose channel is to be dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Users held now and not before the batch.
    pub subscribe: Vec<String>,
    /// Users held before the batch and not now.
    pub unsubscribe: Vec<String>,
}

/// The users whose channel a node holds, with their hold counts, and where
/// their events go.
pub(super) struct UserHolds {
    holds: HashMap<String, u32>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
}

impl UserHolds {
    /// No holds; received events go to `sink`.
    pub(super) fn new(sink: Arc<dyn EventSink>, metrics: Arc<Metrics>) -> UserHolds {
        UserHolds {
            holds: HashMap::new(),
            sink,
            metrics,
        }
    }

    /// Applies `cmds` in order and returns the net change of channels.
    pub(super) fn apply(&mut self, cmds: Vec<UserCommand>) -> Changes {
        let mut added = HashSet::new();
        let mut dropped = HashSet::new();
        for cmd in cmds {
            match cmd {
                UserCommand::Hold(user) => {
                    let count = self.holds.entry(user.clone()).or_insert(0);
                    *count += 1;
                    if *count == 1 && !dropped.remove(&user) {
                        added.insert(user);
                    }
                }
                UserCommand::Release(user) => {
                    let Some(count) = self.holds.get_mut(&user) else {
                        tracing::debug!(user, "release of a user channel not held");
                        continue;
                    };
                    *count -= 1;
                    if *count == 0 {
                        self.holds.remove(&user);
                        if !added.remove(&user) {
                            dropped.insert(user);
                        }
                    }
                }
            }
        }
        self.metrics
            .pubsub_user_channels
            .set(self.holds.len() as i64);
        Changes {
            subscribe: added.into_iter().collect(),
            unsubscribe: dropped.into_iter().collect(),
        }
    }

    /// Whether `user`'s channel is held.
    pub(super) fn holds(&self, user: &str) -> bool {
        self.holds.contains_key(user)
    }

    /// Every held user.
    pub(super) fn held(&self) -> Vec<String> {
        self.holds.keys().cloned().collect()
    }

    /// Hands a message of `user`'s channel to the sink.
    pub(super) fn receive(&self, user: &str, payload: &[u8]) {
        if !self.holds(user) {
            return;
        }
        match codec::unaddress(payload) {
            Ok((room, envelope)) => self.sink.deliver_to_user(user, room, envelope),
            Err(e) => tracing::warn!(user, error = %e, "dropping an undecodable user event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, Vec<u8>)>>);

    impl EventSink for Recorder {
        fn deliver(&self, _room: &str, _envelope: &[u8]) {}
        fn deliver_to_user(&self, user: &str, room: &str, envelope: &[u8]) {
            self.0
                .lock()
                .expect("lock")
                .push((user.into(), room.into(), envelope.to_vec()));
        }
    }

    fn holds() -> (UserHolds, Arc<Recorder>, Arc<Metrics>) {
        let sink = Arc::new(Recorder::default());
        let metrics = Arc::new(Metrics::new());
        (UserHolds::new(sink.clone(), metrics.clone()), sink, metrics)
    }

    fn hold(u: &str) -> UserCommand {
        UserCommand::Hold(u.into())
    }

    fn release(u: &str) -> UserCommand {
        UserCommand::Release(u.into())
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn a_channel_is_subscribed_with_the_first_hold_and_dropped_with_the_last() {
        let (mut users, _, metrics) = holds();
        let c = users.apply(vec![hold("ann"), hold("ann"), hold("bob")]);
        assert_eq!(sorted(c.subscribe), ["ann", "bob"]);
        assert!(c.unsubscribe.is_empty());
        assert_eq!(metrics.pubsub_user_channels.get(), 2);

        let c = users.apply(vec![release("ann")]);
        assert_eq!(c, Changes::default(), "ann has a second connection");
        let c = users.apply(vec![release("ann"), release("bob")]);
        assert_eq!(sorted(c.unsubscribe), ["ann", "bob"]);
        assert!(c.subscribe.is_empty());
        assert!(!users.holds("ann"));
        assert_eq!(metrics.pubsub_user_channels.get(), 0);
    }

    #[test]
    fn a_batch_applies_only_its_net_change() {
        let (mut users, _, _) = holds();
        users.apply(vec![hold("held")]);
        // A user who came and went within the batch costs nothing; one who
        // went and came back keeps the channel.
        let c = users.apply(vec![
            hold("brief"),
            release("brief"),
            release("held"),
            hold("held"),
        ]);
        assert_eq!(c, Changes::default());
        assert!(users.holds("held"));
        assert!(!users.holds("brief"));
        assert_eq!(users.held(), ["held"]);
    }

    #[test]
    fn a_release_without_a_hold_changes_nothing() {
        let (mut users, _, _) = holds();
        let c = users.apply(vec![release("nobody")]);
        assert_eq!(c, Changes::default());
        assert!(users.held().is_empty());
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_its_bound() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        for i in 0..BATCH + 5 {
            tx.send(hold(&format!("u{i}"))).await.expect("queued");
        }
        let first = rx.recv().await.expect("one");
        assert_eq!(batch(first, &mut rx).len(), BATCH);
        let first = rx.recv().await.expect("the rest");
        assert_eq!(batch(first, &mut rx).len(), 5);
    }

    #[test]
    fn only_held_users_events_reach_the_sink() {
        let (mut users, sink, _) = holds();
        users.apply(vec![hold("ann")]);
        let payload = codec::address("r1", b"envelope");
        users.receive("ann", &payload);
        users.receive("bob", &payload);
        users.receive("ann", &[0]);
        assert_eq!(
            *sink.0.lock().expect("lock"),
            [("ann".into(), "r1".into(), b"envelope".to_vec())]
        );
    }
}
