//! Who is in a room and who is online, across two nodes: participant
//! events and distinct-user counts, presence, typing indicators (and their
//! lapse), and users dropped when their connections or their node end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    Client, EVENT_TIMEOUT, FAST, FAST_JANITOR, JWT_SECRET, QUIET, event_story, ids, s,
    two_jwt_nodes, two_nodes, user,
};

/// The sorted user ids of a reply's `participants`.
fn participant_ids(data: &Value) -> Vec<String> {
    let mut list = ids(&data["participants"]);
    list.sort();
    list
}

/// Owned strings, to compare with lists of ids.
fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A join and a leave on one node reach the other as their system message
/// and then their participant event, once each (the membership scripts
/// publish both, so a connection gets them in one write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_leave_are_announced_once_right_after_their_message() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1a = user(&a, "u1", "Una").await;
    let rid = s(&u1a.create_room("story", json!({})).await, "id").to_string();
    let mut u2b = user(&b, "u2", "Udo").await;
    u2b.join(&rid).await;
    // A second connection of the same user is no news.
    let mut u2a = user(&a, "u2", "Udo").await;
    u2a.join(&rid).await;
    u2a.ok(json!({"type": "room.leave", "room": rid})).await;
    u2b.ok(json!({"type": "room.leave", "room": rid})).await;
    let events = u1a.drain_events(QUIET).await;
    assert_eq!(
        event_story(&events),
        [
            "message Udo joined",
            "participant.joined Udo",
            "message Udo left",
            "participant.left Udo"
        ],
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_events_cross_nodes_and_count_distinct_users() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1a = user(&a, "u1", "Una").await;
    let room = u1a.create_room("people", json!({})).await;
    let rid = s(&room, "id").to_string();
    assert_eq!(room["created_by"], "u1", "created_by: {room}");
    assert_eq!(
        room["participant_count"], 1,
        "the creator has joined: {room}"
    );

    // u2 joins on node B: u1 on node A hears about it.
    let mut u2b = user(&b, "u2", "Udo").await;
    let data = u2b.join(&rid).await;
    assert_eq!(data["room"]["participant_count"], 2, "{data}");
    assert_eq!(participant_ids(&data), strings(&["u1", "u2"]), "{data}");
    assert!(
        data["messages"].is_array(),
        "plain join returns messages: {data}"
    );
    let ev = u1a
        .wait_event("participant.joined of u2", EVENT_TIMEOUT, |e| {
            e["event"] == "participant.joined" && e["user"]["id"] == "u2"
        })
        .await;
    assert_eq!(ev["room"], rid, "{ev}");
    assert!(
        ev.get("seq").is_none(),
        "participant events are ephemeral, no seq: {ev}"
    );

    // u3 joins on node A: u2 on node B hears about it.
    let mut u3a = user(&a, "u3", "Ute").await;
    assert_eq!(u3a.join(&rid).await["room"]["participant_count"], 3);
    u2b.wait_event("participant.joined of u3", EVENT_TIMEOUT, |e| {
        e["event"] == "participant.joined" && e["user"]["id"] == "u3" && e["room"] == rid
    })
    .await;

    // u1 again from a second connection on the other node: still 3 users.
    let mut u1b = user(&b, "u1", "Una").await;
    let data = u1b.join(&rid).await;
    assert_eq!(
        data["room"]["participant_count"], 3,
        "participant_count counts distinct users, not connections: {data}"
    );
    assert_eq!(
        participant_ids(&data),
        strings(&["u1", "u2", "u3"]),
        "{data}"
    );
    let got = u2b.ok(json!({"type": "room.get", "room": rid})).await;
    assert_eq!(got["room"]["participant_count"], 3, "{got}");
    assert_eq!(participant_ids(&got), strings(&["u1", "u2", "u3"]), "{got}");

    // u3 leaves on node A: u2 on node B hears about it; the count drops.
    u3a.ok(json!({"type": "room.leave", "room": rid})).await;
    u2b.wait_event("participant.left of u3", EVENT_TIMEOUT, |e| {
        e["event"] == "participant.left" && e["user"]["id"] == "u3" && e["room"] == rid
    })
    .await;
    let got = u1a.room_get(&rid).await;
    assert_eq!(got["participant_count"], 2, "after u3 left: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_typing_span_nodes() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1a = user(&a, "u1", "Una").await;
    let room = u1a.create_room("who is here", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut u2b = user(&b, "u2", "Udo").await;
    u2b.join(&rid).await;
    let mut u1b = user(&b, "u1", "Una").await;
    u1b.join(&rid).await;

    for c in [&mut u1a, &mut u2b] {
        let presence = c.ok(json!({"type": "presence", "room": rid})).await;
        let mut online = ids(&presence["online"]);
        online.sort();
        assert_eq!(
            online,
            strings(&["u1", "u2"]),
            "{}: presence lists each online user once, across nodes: {presence}",
            c.label
        );
    }

    // Typing on node B reaches node A; it is ephemeral (no seq).
    u2b.ok(json!({"type": "typing", "room": rid, "active": true}))
        .await;
    let ev = u1a
        .wait_event("typing of u2", EVENT_TIMEOUT, |e| {
            e["event"] == "typing" && e["user"]["id"] == "u2"
        })
        .await;
    assert_eq!(ev["room"], rid, "{ev}");
    assert_eq!(ev["active"], true, "{ev}");
    assert!(ev.get("seq").is_none(), "typing has no seq: {ev}");
    // An active indicator lapses by itself after 5 s unless repeated.
    let started = std::time::Instant::now();
    let lapse = u1a
        .wait_event("typing of u2 lapsing", Duration::from_secs(8), |e| {
            e["event"] == "typing" && e["user"]["id"] == "u2" && e["active"] == false
        })
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "typing lapsed after only {waited:?}, expected about 5 s: {lapse}"
    );
    // Stopping explicitly is announced too.
    u2b.ok(json!({"type": "typing", "room": rid, "active": true}))
        .await;
    u2b.ok(json!({"type": "typing", "room": rid, "active": false}))
        .await;
    u1a.wait_event("typing stop of u2", EVENT_TIMEOUT, |e| {
        e["event"] == "typing" && e["user"]["id"] == "u2" && e["active"] == false
    })
    .await;
    // Typing writes no message.
    let history = u1a.all_messages(&rid).await;
    assert!(
        history.iter().all(|m| m["kind"] == "system"),
        "typing stores nothing: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_drops_users_whose_connections_end() {
    let mut args = FAST.to_vec();
    args.extend(["--jwt-secret", JWT_SECRET]);
    args.extend(FAST_JANITOR);
    let (_redis, mut a, b) = two_nodes(&args).await;
    let mut u1a = user(&a, "u1", "Una").await;
    let room = u1a.create_room("who is left", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut u1b = user(&b, "u1", "Una").await;
    u1b.join(&rid).await;
    let mut u2a = user(&a, "u2", "Udo").await;
    u2a.join(&rid).await;
    let mut u3b = user(&b, "u3", "Ute").await;
    u3b.join(&rid).await;

    async fn online(c: &mut Client, rid: &str) -> Vec<String> {
        let presence = c.ok(json!({"type": "presence", "room": rid})).await;
        let mut list = ids(&presence["online"]);
        list.sort();
        list
    }
    assert_eq!(online(&mut u3b, &rid).await, strings(&["u1", "u2", "u3"]));

    // u1 closes one of its two connections: still online.
    drop(u1a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        online(&mut u3b, &rid).await,
        strings(&["u1", "u2", "u3"]),
        "a user with one live connection left is still online"
    );

    // Node A dies: u2 had no other connection.
    a.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = online(&mut u3b, &rid).await;
        if now == strings(&["u1", "u3"]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "10 s after node A died, presence still says {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(u2a);
}
