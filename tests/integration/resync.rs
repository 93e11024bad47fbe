//! Removals told late (issue 14): `member.removed` and `room.closed` are
//! ephemeral, so a node whose pub/sub connection was down when one was
//! published never receives it, and the durable log it repairs from does
//! not hold it. After the bus resubscribes, the node re-checks its
//! connections of the room against the store and removes those that no
//! longer belong, with the system user as `by`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Client, FAST, QUIET, guest, s, two_nodes_on_one_redis};

/// Within this a late removal must arrive: the pub/sub reconnect (at most
/// 4 s of backoff after one failure, usually 0.2–0.4 s), the grace of the
/// store timeout (1 s) and one store read.
const LATE: Duration = Duration::from_secs(8);

/// Waits for `name` of `room` on `client`.
async fn event(client: &mut Client, room: &str, name: &str) -> Value {
    client
        .wait_event(name, LATE, |e| e["room"] == room && e["event"] == name)
        .await
}

/// The owner on node A; the target and a bystander on node B, joined;
/// then every node's pub/sub connection is killed.
async fn scene_without_pubsub() -> (
    crate::common::RedisServer,
    [crate::common::Node; 2],
    [Client; 3],
    String,
) {
    let (redis, a, b) = two_nodes_on_one_redis(FAST).await;
    let mut owner = guest(&a, "Owen").await;
    let room = owner.create_room("flaky removals", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut target = guest(&b, "Tim").await;
    target.join(&rid).await;
    let mut bystander = guest(&b, "Bea").await;
    bystander.join(&rid).await;
    for c in [&mut owner, &mut target, &mut bystander] {
        c.drain_events(Duration::from_millis(200)).await;
    }
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(killed, redis::Value::Int(n) if n >= 2),
        "each node holds a pub/sub connection to kill, CLIENT KILL said {killed:?}"
    );
    (redis, [a, b], [owner, target, bystander], rid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_lost_by_pubsub_still_removes_the_users_connections() {
    let (_redis, _nodes, [mut owner, mut target, mut bystander], rid) =
        scene_without_pubsub().await;
    // Published while node B has no pub/sub connection: B never gets it.
    let uid = target.user_id();
    owner
        .ok(json!({"type": "member.kick", "room": rid, "user": uid}))
        .await;
    let removed = event(&mut target, &rid, "member.removed").await;
    assert_eq!(removed["user"]["id"], uid.as_str(), "{removed}");
    assert_eq!(removed["by"]["id"], "system", "told late: {removed}");
    assert!(removed["reason"].is_null(), "{removed}");
    assert!(removed["banned_until"].is_null(), "a kick: {removed}");
    // Nothing more from the room reaches the removed connection; the
    // bystander on the same node still gets the room.
    owner.send_message(&rid, "after the kick").await;
    bystander
        .wait_event("the message after the kick", LATE, |e| {
            e["message"]["content"] == "after the kick"
        })
        .await;
    target.expect_no_event(QUIET).await;
    // The connection forgot the room: it may join again and hears it.
    target.join(&rid).await;
    owner.send_message(&rid, "welcome back").await;
    target
        .wait_event("the message after the rejoin", LATE, |e| {
            e["message"]["content"] == "welcome back"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_lost_by_pubsub_is_told_with_its_end() {
    let (_redis, _nodes, [mut owner, mut target, _bystander], rid) = scene_without_pubsub().await;
    let uid = target.user_id();
    owner
        .ok(json!({"type": "member.ban", "room": rid, "user": uid, "reason": "spam"}))
        .await;
    let removed = event(&mut target, &rid, "member.removed").await;
    assert_eq!(removed["user"]["id"], uid.as_str(), "{removed}");
    assert_eq!(
        removed["user"]["name"], "Tim",
        "the ban's record: {removed}"
    );
    assert_eq!(removed["by"]["id"], "system", "{removed}");
    assert_eq!(removed["banned_until"], -1, "{removed}");
    owner.send_message(&rid, "after the ban").await;
    target.expect_no_event(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_lost_by_pubsub_still_closes_the_room_on_every_node() {
    let (_redis, _nodes, [mut owner, mut target, mut bystander], rid) =
        scene_without_pubsub().await;
    owner.ok(json!({"type": "room.close", "room": rid})).await;
    for c in [&mut target, &mut bystander] {
        let ev = event(c, &rid, "room.closed").await;
        assert_eq!(ev["by"]["id"], "system", "{}: {ev}", c.label);
    }
    for c in [&mut target, &mut bystander] {
        c.expect_no_event(QUIET).await;
        c.expect_err(json!({"type": "room.get", "room": rid}), "not_found")
            .await;
    }
}
