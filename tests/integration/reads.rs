//! Read state (protocol 1.1) on two nodes: `room.read` and the `read` event
//! to the user's other connections only (on any node, in the room or not), unread counts in
//! `room.mine` (others' sends, own sends, deletes), `room.receipts`, and
//! the refusals, each with its code and nothing changed; `room.mine`'s role
//! and a removed user's `room.mine` on both engines.

use serde_json::{Value, json};

use std::time::Duration;

use crate::common::{
    Client, EVENT_TIMEOUT, FAST, JWT_SECRET, Node, QUIET, guest, s, solo, two_jwt_nodes,
    two_nodes_on_one_redis, user,
};

/// The `read` events among what arrives within `QUIET`.
async fn read_events(c: &mut Client) -> Vec<Value> {
    c.drain_events(QUIET)
        .await
        .into_iter()
        .filter(|e| e["event"] == "read")
        .collect()
}

/// The room `rid` of `c`'s `room.mine`.
async fn mine_of(c: &mut Client, rid: &str) -> Value {
    let data = c.ok(json!({"type": "room.mine"})).await;
    data["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["id"] == rid)
        .cloned()
        .unwrap_or_else(|| panic!("{rid} is not in room.mine: {data}"))
}

async fn receipts(c: &mut Client, rid: &str) -> Vec<(String, u64)> {
    let data = c.ok(json!({"type": "room.receipts", "room": rid})).await;
    data["reads"]
        .as_array()
        .expect("reads")
        .iter()
        .map(|r| {
            (
                r["user"]["id"].as_str().expect("user id").to_owned(),
                r["read_seq"].as_u64().expect("read_seq"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_read_tells_the_users_other_connections_on_any_node_and_no_one_else() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let mut ann_a = user(&a, "ann", "Ann").await;
    let room = ann_a.create_room("reads", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut ann_b = user(&b, "ann", "Ann").await;
    ann_b.join(&rid).await;
    let mut bob_b = user(&b, "bob", "Bob").await;
    bob_b.join(&rid).await;
    let mut last = 0;
    for i in 0..3 {
        last = bob_b.send_message(&rid, &format!("hi {i}")).await["seq"]
            .as_u64()
            .expect("seq");
    }
    ann_a.drain_events(QUIET).await;
    ann_b.drain_events(QUIET).await;
    bob_b.drain_events(QUIET).await;

    let data = ann_a
        .ok(json!({"type": "room.read", "room": rid, "seq": last - 1}))
        .await;
    assert_eq!(data, json!({"read_seq": last - 1}));
    let ev = ann_b
        .wait_event("ann's read", EVENT_TIMEOUT, |e| e["event"] == "read")
        .await;
    assert_eq!(
        ev,
        json!({"type": "event", "room": rid, "event": "read", "read_seq": last - 1}),
        "the user and the origin connection stay on the bus"
    );
    assert!(
        read_events(&mut ann_a).await.is_empty(),
        "not to the connection that sent room.read"
    );
    assert!(read_events(&mut bob_b).await.is_empty(), "not to others");

    // A lower value changes nothing and tells no one; a value past the end
    // is capped at the last seq.
    let data = ann_b
        .ok(json!({"type": "room.read", "room": rid, "seq": 1}))
        .await;
    assert_eq!(data["read_seq"], last - 1);
    assert!(read_events(&mut ann_a).await.is_empty());
    let data = ann_b
        .ok(json!({"type": "room.read", "room": rid, "seq": last + 100}))
        .await;
    assert_eq!(data["read_seq"], last);
    let ev = ann_a
        .wait_event("ann's read", EVENT_TIMEOUT, |e| e["event"] == "read")
        .await;
    assert_eq!(ev["read_seq"], last);

    // Posting from one connection marks the room read: the other one hears.
    let sent = ann_a.send_message(&rid, "mine").await;
    let ev = ann_b
        .wait_event("ann's read after her send", EVENT_TIMEOUT, |e| {
            e["event"] == "read"
        })
        .await;
    assert_eq!(ev["read_seq"], sent["seq"]);
    assert!(
        read_events(&mut ann_a).await.is_empty(),
        "not to the sending connection"
    );
    assert!(read_events(&mut bob_b).await.is_empty());
}

/// Waits until `node`'s `/metrics` shows `huddle_pubsub_user_channels n`.
async fn user_channels_become(node: &Node, n: usize) {
    let want = format!("huddle_pubsub_user_channels {n}\n");
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, metrics) = node.http_get("/metrics").await;
        if metrics.contains(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {want:?}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ann reads on `reader`; her connections `others` (in no room) hear it,
/// `bystander` (another user) does not. `seq` is a message of `rid`.
async fn told_outside_the_room(
    reader: &mut Client,
    others: &mut [&mut Client],
    bystander: &mut Client,
    rid: &str,
    seq: u64,
) {
    let data = reader
        .ok(json!({"type": "room.read", "room": rid, "seq": seq}))
        .await;
    assert_eq!(data["read_seq"], seq);
    for other in others.iter_mut() {
        let ev = other
            .wait_event("ann's read", EVENT_TIMEOUT, |e| e["event"] == "read")
            .await;
        assert_eq!(
            ev,
            json!({"type": "event", "room": rid, "event": "read", "read_seq": seq})
        );
    }
    assert!(read_events(reader).await.is_empty(), "not the reading tab");
    assert!(read_events(bystander).await.is_empty(), "not another user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_event_reaches_the_users_connections_in_no_room_on_every_node() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let mut ann = user(&a, "ann", "Ann").await;
    let room = ann.create_room("lobby", json!({})).await;
    let rid = s(&room, "id").to_string();
    // Ann's room-list tabs, one on each node, joined to nothing; Bob on B.
    let mut list_a = user(&a, "ann", "Ann").await;
    let mut list_b = user(&b, "ann", "Ann").await;
    let mut bob = user(&b, "bob", "Bob").await;
    bob.join(&rid).await;
    user_channels_become(&a, 1).await;
    user_channels_become(&b, 2).await;
    let mut seq = 0;
    for i in 0..2 {
        seq = bob.send_message(&rid, &format!("hi {i}")).await["seq"]
            .as_u64()
            .expect("seq");
    }
    ann.drain_events(QUIET).await;
    told_outside_the_room(
        &mut ann,
        &mut [&mut list_a, &mut list_b],
        &mut bob,
        &rid,
        seq,
    )
    .await;

    // Her own send marks the room read: both list tabs hear, on both nodes.
    let sent = ann.send_message(&rid, "mine").await;
    for list in [&mut list_a, &mut list_b] {
        let ev = list
            .wait_event("ann's read after her send", EVENT_TIMEOUT, |e| {
                e["event"] == "read"
            })
            .await;
        assert_eq!(ev["read_seq"], sent["seq"]);
        assert_eq!(ev["room"], rid.as_str());
    }
    assert!(
        read_events(&mut ann).await.is_empty(),
        "not the sending tab"
    );
    assert!(read_events(&mut bob).await.is_empty());

    // A node keeps a user's channel while it holds a connection of the user:
    // B drops Ann's when her last connection there closes, and still tells
    // A's tab.
    drop(list_b);
    user_channels_become(&b, 1).await;
    let seq = bob.send_message(&rid, "more").await["seq"]
        .as_u64()
        .expect("seq");
    told_outside_the_room(&mut ann, &mut [&mut list_a], &mut bob, &rid, seq).await;
    drop(list_a);
    drop(ann);
    user_channels_become(&a, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_channels_are_subscribed_again_after_the_pubsub_connection_drops() {
    let mut args = FAST.to_vec();
    args.extend(["--jwt-secret", JWT_SECRET]);
    let (redis, a, b) = two_nodes_on_one_redis(&args).await;
    let mut ann = user(&a, "ann", "Ann").await;
    let room = ann.create_room("flaky", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut list_b = user(&b, "ann", "Ann").await;
    let mut bob = user(&b, "bob", "Bob").await;
    bob.join(&rid).await;
    user_channels_become(&b, 2).await;

    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(killed, redis::Value::Int(n) if n >= 2),
        "each node holds a pub/sub connection, CLIENT KILL said {killed:?}"
    );
    // What is published while B reconnects is lost (best effort); once B
    // is back, Ann's channel is subscribed again with the rooms'.
    let mut told = None;
    for attempt in 0..40 {
        let seq = bob.send_message(&rid, &format!("m{attempt}")).await["seq"]
            .as_u64()
            .expect("seq");
        ann.ok(json!({"type": "room.read", "room": rid, "seq": seq}))
            .await;
        let heard = list_b
            .drain_events(Duration::from_millis(250))
            .await
            .into_iter()
            .any(|e| e["event"] == "read" && e["read_seq"] == seq);
        if heard {
            told = Some(attempt);
            break;
        }
    }
    assert!(
        told.is_some(),
        "node B never heard Ann's reads again after its pub/sub reconnected"
    );
    user_channels_become(&b, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_event_reaches_the_users_connections_in_no_room_on_the_memory_engine() {
    let node = solo(&["--jwt-secret", JWT_SECRET]).await;
    let mut ann = user(&node, "ann", "Ann").await;
    let room = ann.create_room("lobby", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut list = user(&node, "ann", "Ann").await;
    let mut bob = user(&node, "bob", "Bob").await;
    bob.join(&rid).await;
    let seq = bob.send_message(&rid, "hi").await["seq"]
        .as_u64()
        .expect("seq");
    ann.drain_events(QUIET).await;
    told_outside_the_room(&mut ann, &mut [&mut list], &mut bob, &rid, seq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_mine_counts_others_messages_not_own_deleted_or_system_ones() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let mut ann = user(&a, "ann", "Ann").await;
    let first = ann.create_room("first", json!({})).await;
    let r1 = s(&first, "id").to_string();
    let second = ann.create_room("second", json!({"private": true})).await;
    let r2 = s(&second, "id").to_string();
    let mut bob = user(&b, "bob", "Bob").await;
    bob.join(&r1).await;
    bob.join_code(s(&second, "code")).await;

    let mine = mine_of(&mut bob, &r1).await;
    assert_eq!(
        (&mine["unread"], &mine["read_seq"], &mine["role"]),
        (&json!(0), &json!(0), &json!("member")),
        "system messages do not count: {mine}"
    );
    assert_eq!(mine["name"], "first", "the room object, inline: {mine}");
    assert_eq!(mine["participant_count"], 2);

    let m1 = ann.send_message(&r1, "one").await;
    let m2 = ann.send_message(&r1, "two").await;
    let mine = mine_of(&mut bob, &r1).await;
    assert_eq!(mine["unread"], 2, "{mine}");
    assert_eq!(mine["last_seq"], m2["seq"]);
    let own = mine_of(&mut ann, &r1).await;
    assert_eq!(own["unread"], 0, "one's own messages do not count: {own}");
    assert_eq!(own["read_seq"], m2["seq"], "a send marks the room read");
    assert_eq!(own["role"], "owner");

    // A deleted message stops counting.
    ann.ok(json!({"type": "message.delete", "room": r1, "message": m1["id"]}))
        .await;
    assert_eq!(mine_of(&mut bob, &r1).await["unread"], 1);
    // Bob answers: his own message does not count for him, and counts for Ann.
    bob.send_message(&r1, "three").await;
    assert_eq!(mine_of(&mut bob, &r1).await["unread"], 0);
    assert_eq!(mine_of(&mut ann, &r1).await["unread"], 1);

    // Most recently active first, bounded by `limit`.
    ann.send_message(&r2, "later").await;
    let data = bob.ok(json!({"type": "room.mine", "limit": 1})).await;
    let rooms = data["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "{data}");
    assert_eq!(rooms[0]["id"], r2, "{data}");
    assert_eq!(rooms[0]["unread"], 1);
    let all = bob.ok(json!({"type": "room.mine"})).await;
    let order: Vec<&str> = all["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(order, [r2.as_str(), r1.as_str()], "{all}");

    // Leaving takes the room out of room.mine.
    bob.ok(json!({"type": "room.leave", "room": r2})).await;
    let all = bob.ok(json!({"type": "room.mine"})).await;
    assert_eq!(all["rooms"].as_array().expect("rooms").len(), 1, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_refusals_change_nothing() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let mut ann = user(&a, "ann", "Ann").await;
    let room = ann
        .create_room("receipts", json!({"max_participants": 200}))
        .await;
    let rid = s(&room, "id").to_string();
    let mut bob = user(&b, "bob", "Bob").await;
    bob.join(&rid).await;
    let m = ann.send_message(&rid, "hello").await;
    let seq = m["seq"].as_u64().expect("seq");
    bob.ok(json!({"type": "room.read", "room": rid, "seq": seq - 1}))
        .await;
    let before = receipts(&mut bob, &rid).await;
    assert_eq!(
        before,
        [("ann".to_string(), seq), ("bob".to_string(), seq - 1)]
    );

    // Not a participant: forbidden, as room.members answers.
    let mut cat = user(&b, "cat", "Cat").await;
    let err = cat
        .expect_err(
            json!({"type": "room.read", "room": rid, "seq": seq}),
            "forbidden",
        )
        .await;
    assert!(!err["message"].as_str().unwrap_or("").is_empty());
    cat.expect_err(json!({"type": "room.receipts", "room": rid}), "forbidden")
        .await;
    // No such room.
    for req in [
        json!({"type": "room.read", "room": "no-such-room", "seq": 1}),
        json!({"type": "room.receipts", "room": "no-such-room"}),
    ] {
        bob.expect_err(req, "not_found").await;
    }
    // Bad fields.
    for req in [
        json!({"type": "room.read", "room": rid, "seq": -1}),
        json!({"type": "room.read", "room": rid, "seq": "x"}),
        json!({"type": "room.read", "room": rid, "seq": 1.5}),
        json!({"type": "room.read", "room": rid, "seq": "1"}),
        json!({"type": "room.read", "room": rid}),
        json!({"type": "room.mine", "limit": 0}),
        json!({"type": "room.mine", "limit": 201}),
        json!({"type": "room.mine", "limit": 2.5}),
        json!({"type": "room.mine", "limit": "5"}),
        json!({"type": "room.read", "room": "a}b", "seq": 1}),
    ] {
        bob.expect_err(req, "bad_request").await;
    }
    assert_eq!(receipts(&mut ann, &rid).await, before, "nothing changed");
    assert!(
        read_events(&mut ann).await.is_empty(),
        "refusals tell no one"
    );

    // Above 100 participants: conflict, with a clear message.
    let mut crowd = Vec::new();
    // Ann, Bob and 98 more: 100, still answered.
    for i in 0..98 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut c = user(node, &format!("f{i:03}"), &format!("Filler {i:03}")).await;
        c.join(&rid).await;
        crowd.push(c);
    }
    assert_eq!(receipts(&mut ann, &rid).await.len(), 100);
    let mut late = user(&a, "late", "Late").await;
    late.join(&rid).await;
    let err = ann
        .expect_err(json!({"type": "room.receipts", "room": rid}), "conflict")
        .await;
    let message = err["message"].as_str().unwrap_or("");
    assert!(
        message.contains("100") && message.contains("101"),
        "says the bound and the count: {message}"
    );
}

/// Whether `rid` is in `c`'s `room.mine`.
async fn lists(c: &mut Client, rid: &str) -> bool {
    let data = c.ok(json!({"type": "room.mine"})).await;
    data["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .any(|r| r["id"] == rid)
}

/// `room.mine`'s `role` follows `member.role`, and a kicked or banned user's
/// `room.mine` no longer lists the room (the removal drops it from their
/// index, as a final leave does). `owner` created the room; `mona` and
/// `tim` are connected elsewhere.
async fn roles_and_removals(mut owner: Client, mut mona: Client, mut tim: Client) {
    let room = owner.create_room("mine-roles", json!({})).await;
    let rid = s(&room, "id").to_string();
    mona.join(&rid).await;
    tim.join(&rid).await;
    let (mona_id, tim_id) = (mona.user_id(), tim.user_id());
    owner
        .ok(json!({"type": "member.role", "room": rid, "user": mona_id, "role": "moderator"}))
        .await;
    assert_eq!(mine_of(&mut owner, &rid).await["role"], "owner");
    assert_eq!(mine_of(&mut mona, &rid).await["role"], "moderator");
    assert_eq!(mine_of(&mut tim, &rid).await["role"], "member");
    mona.ok(json!({"type": "member.kick", "room": rid, "user": tim_id}))
        .await;
    assert!(!lists(&mut tim, &rid).await, "a kicked user's room.mine");
    // Back in (a kick is no ban), then banned: gone again.
    tim.join(&rid).await;
    assert!(lists(&mut tim, &rid).await);
    mona.ok(json!({"type": "member.ban", "room": rid, "user": tim_id}))
        .await;
    assert!(!lists(&mut tim, &rid).await, "a banned user's room.mine");
    assert!(lists(&mut mona, &rid).await, "the others keep it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_mine_follows_roles_and_removals_across_nodes() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let owner = user(&a, "own", "Owen").await;
    let mona = user(&a, "mona", "Mona").await;
    let tim = user(&b, "tim", "Tim").await;
    roles_and_removals(owner, mona, tim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_mine_follows_roles_and_removals_on_the_memory_engine() {
    let node = solo(&[]).await;
    let owner = guest(&node, "Owen").await;
    let mona = guest(&node, "Mona").await;
    let tim = guest(&node, "Tim").await;
    roles_and_removals(owner, mona, tim).await;
}
