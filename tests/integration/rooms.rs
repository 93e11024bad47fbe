//! Rooms on a two-node cluster: capacity (also under concurrent joins),
//! private rooms and join codes, the public room list, and the system
//! messages that mark a room's creation and first joins.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{FAST, guest, ids, s, two_jwt_nodes, two_nodes, user};

mod big;

/// The `kind` of each message, for assertion messages.
fn kinds(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or("<no kind>").to_string())
        .collect()
}

/// How many of `messages` are system messages.
fn system_count(messages: &[Value]) -> usize {
    messages.iter().filter(|m| m["kind"] == "system").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_room_answers_conflict_to_a_new_user() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1 = user(&a, "u1", "Una").await;
    let room = u1.create_room("pair", json!({"max_participants": 2})).await;
    let rid = s(&room, "id").to_string();
    assert_eq!(room["max_participants"], 2, "{room}");

    let mut u2 = user(&b, "u2", "Udo").await;
    u2.join(&rid).await;
    let mut u3 = user(&b, "u3", "Ute").await;
    u3.expect_err(json!({"type": "room.join", "room": rid}), "conflict")
        .await;
    u3.expect_err(
        json!({"type": "room.join", "code": room["code"]}),
        "conflict",
    )
    .await;
    u3.ping().await;

    // A member's second connection is not a new participant.
    let mut u2_again = user(&a, "u2", "Udo").await;
    let data = u2_again.join(&rid).await;
    assert_eq!(data["room"]["participant_count"], 2, "{data}");

    let got = u1.room_get(&rid).await;
    assert_eq!(
        got["participant_count"], 2,
        "a refused join adds nobody: {got}"
    );
    // The refused user may not send either.
    u3.expect_err(
        json!({"type": "message.send", "room": rid, "content": "let me in"}),
        "forbidden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_room_is_forbidden_by_id_and_joinable_by_code() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut owner = guest(&a, "owner").await;
    let room = owner.create_room("hideout", json!({"private": true})).await;
    let rid = s(&room, "id").to_string();
    assert_eq!(room["private"], true, "{room}");
    let code = s(&room, "code").to_string();
    assert!(
        (6..=8).contains(&code.chars().count()),
        "join code is 6-8 characters: {code:?}"
    );
    assert!(
        !code.contains(['0', 'O', '1', 'I', 'l']),
        "join codes use an unambiguous alphabet: {code:?}"
    );

    let mut guest_b = guest(&b, "visitor").await;
    guest_b
        .expect_err(json!({"type": "room.join", "room": rid}), "forbidden")
        .await;
    assert_eq!(
        owner.room_get(&rid).await["participant_count"],
        1,
        "refused join adds nobody"
    );
    let data = guest_b.join_code(&code).await;
    assert_eq!(data["room"]["id"], rid, "{data}");
    assert_eq!(data["room"]["participant_count"], 2, "{data}");

    // Events flow to the code-joined member on the other node.
    let m = owner.send_message(&rid, "psst").await;
    let ev = guest_b.next_message_event(&rid).await;
    let ev = if ev["message"]["id"] == m["id"] {
        ev
    } else {
        guest_b.next_message_event(&rid).await
    };
    assert_eq!(ev["message"]["id"], m["id"], "{ev}");

    // An unknown code is not_found.
    guest_b
        .expect_err(json!({"type": "room.join", "code": "ZZZZZZZ"}), "not_found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_list_shows_public_rooms_most_recently_active_first() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut owner = guest(&a, "owner").await;
    let pause = Duration::from_millis(25);
    let mut rooms = Vec::new();
    for name in ["r1", "r2", "r3"] {
        rooms.push(s(&owner.create_room(name, json!({})).await, "id").to_string());
        tokio::time::sleep(pause).await;
    }
    let hidden = owner.create_room("hidden", json!({"private": true})).await;
    tokio::time::sleep(pause).await;
    // Activity order: r2, then r3, then r1 (most recent).
    for i in [1, 2, 0] {
        owner.send_message(&rooms[i], "activity").await;
        tokio::time::sleep(pause).await;
    }

    let mut viewer = guest(&b, "viewer").await;
    let data = viewer.ok(json!({"type": "room.list"})).await;
    let listed = ids(&data["rooms"]);
    assert!(
        !listed.contains(&s(&hidden, "id").to_string()),
        "private room listed: {data}"
    );
    let expected = vec![rooms[0].clone(), rooms[2].clone(), rooms[1].clone()];
    assert_eq!(
        listed, expected,
        "public rooms, most recently active first: {data}"
    );
    for room in data["rooms"].as_array().expect("rooms") {
        for key in [
            "id",
            "code",
            "name",
            "created_by",
            "created_at",
            "max_participants",
            "private",
            "participant_count",
            "last_seq",
        ] {
            assert!(room.get(key).is_some(), "room object lacks `{key}`: {room}");
        }
        assert_eq!(room["private"], false, "{room}");
    }
    let data = viewer.ok(json!({"type": "room.list", "limit": 2})).await;
    assert_eq!(
        ids(&data["rooms"]),
        expected[..2].to_vec(),
        "limit 2: {data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_messages_mark_room_creation_and_first_join() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1 = user(&a, "u1", "Una").await;
    let room = u1.create_room("announced", json!({})).await;
    let rid = s(&room, "id").to_string();
    let initial = u1.all_messages(&rid).await;
    assert!(
        !initial.is_empty(),
        "room creation writes a system message: {initial:?}"
    );
    assert!(
        initial.iter().all(|m| m["kind"] == "system"),
        "a new room holds system messages only: {:?}",
        kinds(&initial)
    );
    let k0 = system_count(&initial);

    let mut u2 = user(&b, "u2", "Udo").await;
    u2.join(&rid).await;
    let after_join = u2.all_messages(&rid).await;
    assert_eq!(
        system_count(&after_join),
        k0 + 1,
        "a first join adds one system message: {after_join:?}"
    );
    assert_eq!(
        after_join.last().map(|m| &m["kind"]),
        Some(&json!("system"))
    );

    // The same user joining again (another connection, other node) is not a first join.
    let mut u2_again = user(&a, "u2", "Udo").await;
    u2_again.join(&rid).await;
    let again = u1.all_messages(&rid).await;
    assert_eq!(
        system_count(&again),
        k0 + 1,
        "a second join adds nothing: {again:?}"
    );
    // A system message is a message with a seq like any other.
    assert!(again.iter().all(|m| m["seq"].is_u64()), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_never_overfill_a_room() {
    const CAPACITY: usize = 5;
    const JOINERS: usize = 12;
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut owner = guest(&a, "owner").await;
    let room = owner
        .create_room("tight", json!({"max_participants": CAPACITY}))
        .await;
    let rid = s(&room, "id").to_string();
    let mut clients = Vec::new();
    for i in 0..JOINERS {
        let node = if i % 2 == 0 { &a } else { &b };
        clients.push(guest(node, &format!("j{i}")).await);
    }
    let mut tasks = Vec::new();
    for mut c in clients {
        let rid = rid.clone();
        tasks.push(tokio::spawn(async move {
            let reply = c.request(json!({"type": "room.join", "room": rid})).await;
            (c, reply)
        }));
    }
    let mut admitted = 0;
    let mut clients = Vec::new();
    for task in tasks {
        let (c, reply) = task.await.expect("join task");
        if reply["ok"] == true {
            admitted += 1;
        } else {
            assert_eq!(reply["error"]["code"], "conflict", "{}: {reply}", c.label);
        }
        clients.push(c);
    }
    assert_eq!(
        admitted,
        CAPACITY - 1,
        "exactly max_participants - 1 of {JOINERS} concurrent joiners fit beside the owner"
    );
    let got = owner.room_get(&rid).await;
    assert_eq!(got["participant_count"], CAPACITY, "{got}");
}
