//! Roles and moderation (protocol 1.1) on two nodes sharing one Redis (or
//! the test cluster with `HUDDLE_TEST_REDIS=cluster`): a moderator on one
//! node kicks, bans and mutes users connected to the other; the removed
//! user's connections get `member.removed` and nothing more from the room;
//! bans hold across a node restart; every refusal has its code and changes
//! nothing; `room.update` and `room.close` reach both nodes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Client, EVENT_TIMEOUT, JWT_SECRET, guest, s, solo, two_jwt_nodes, user};

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(600);

/// Waits for `event` of `room` on `client`.
async fn event(client: &mut Client, room: &str, name: &str) -> Value {
    client
        .wait_event(name, EVENT_TIMEOUT, |e| {
            e["room"] == room && e["event"] == name
        })
        .await
}

/// The participant `id` of a `participants`/`members` list.
fn participant<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == id))
        .unwrap_or_else(|| panic!("{id} is not listed: {list}"))
}

/// Owner `u1` and moderator `u2` on node A; member `u3` (the target) and
/// bystander `u4` on node B; everyone joined to one room.
struct Scene {
    owner: Client,
    moderator: Client,
    target: Client,
    bystander: Client,
    room: String,
    code: String,
}

async fn scene(a: &crate::common::Node, b: &crate::common::Node) -> Scene {
    let mut owner = user(a, "u1", "Owen").await;
    let room = owner.create_room("modroom", json!({})).await;
    let (rid, code) = (s(&room, "id").to_string(), s(&room, "code").to_string());
    let mut moderator = user(a, "u2", "Mona").await;
    moderator.join(&rid).await;
    let mut target = user(b, "u3", "Tim").await;
    target.join(&rid).await;
    let mut bystander = user(b, "u4", "Bea").await;
    bystander.join(&rid).await;
    owner
        .ok(json!({"type": "member.role", "room": rid, "user": "u2", "role": "moderator"}))
        .await;
    // Everyone sees the appointment, on both nodes.
    for c in [&mut owner, &mut moderator, &mut target, &mut bystander] {
        let ev = c
            .wait_event("member.updated for u2", EVENT_TIMEOUT, |e| {
                e["event"] == "member.updated" && e["user"]["id"] == "u2"
            })
            .await;
        assert_eq!(ev["user"]["role"], "moderator", "{ev}");
        assert_eq!(ev["user"]["name"], "Mona", "{ev}");
    }
    Scene {
        owner,
        moderator,
        target,
        bystander,
        room: rid,
        code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_across_nodes_removes_the_user_at_once_and_holds_across_a_restart() {
    let (backend, a, b) = two_jwt_nodes().await;
    let Scene {
        mut owner,
        mut moderator,
        mut target,
        mut bystander,
        room,
        code,
    } = scene(&a, &b).await;
    // Roles on participant lists.
    let got = bystander
        .ok(json!({"type": "room.get", "room": room}))
        .await;
    let list = &got["participants"];
    assert_eq!(participant(list, "u1")["role"], "owner", "{got}");
    assert_eq!(participant(list, "u2")["role"], "moderator", "{got}");
    assert_eq!(participant(list, "u3")["role"], "member", "{got}");
    assert!(
        participant(list, "u3").get("muted_until").is_none(),
        "{got}"
    );
    let members = bystander
        .ok(json!({"type": "room.members", "room": room}))
        .await;
    assert_eq!(participant(&members["members"], "u1")["role"], "owner");

    // The moderator on A bans the member on B.
    moderator
        .ok(json!({"type": "member.ban", "room": room, "user": "u3", "reason": "spam"}))
        .await;
    let removed = event(&mut target, &room, "member.removed").await;
    assert_eq!(removed["user"]["id"], "u3", "{removed}");
    assert_eq!(removed["by"]["id"], "u2", "{removed}");
    assert_eq!(removed["reason"], "spam", "{removed}");
    assert_eq!(removed["banned_until"], -1, "{removed}");
    // The room sees the user leave, with a system message.
    let left = event(&mut bystander, &room, "participant.left").await;
    assert_eq!(left["user"]["id"], "u3", "{left}");
    let history = owner.all_messages(&room).await;
    let last = history.last().expect("messages");
    assert_eq!(last["kind"], "system", "{last}");
    assert!(s(last, "content").contains("Tim"), "{last}");
    // Nothing more from the room reaches the banned connection.
    owner.send_message(&room, "after the ban").await;
    bystander
        .wait_event("the message after the ban", EVENT_TIMEOUT, |e| {
            e["message"]["content"] == "after the ban"
        })
        .await;
    target.expect_no_event(QUIET).await;
    // Refusals: send, join by id, join by code.
    target
        .expect_err(
            json!({"type": "message.send", "room": room, "content": "let me"}),
            "forbidden",
        )
        .await;
    let err = target
        .expect_err(json!({"type": "room.join", "room": room}), "forbidden")
        .await;
    assert!(
        s(&err, "message").contains("banned"),
        "the refusal says why: {err}"
    );
    target
        .expect_err(json!({"type": "room.join", "code": code}), "forbidden")
        .await;
    let got = owner.room_get(&room).await;
    assert_eq!(got["participant_count"], 3, "{got}");
    // The ban list, for owner and moderators only.
    let bans = moderator
        .ok(json!({"type": "room.bans", "room": room}))
        .await;
    let list = bans["bans"].as_array().expect("bans");
    assert_eq!(list.len(), 1, "{bans}");
    assert_eq!(list[0]["user"]["id"], "u3");
    assert_eq!(list[0]["until"], -1);
    assert_eq!(list[0]["by"]["id"], "u2");
    assert_eq!(list[0]["reason"], "spam");
    bystander
        .expect_err(json!({"type": "room.bans", "room": room}), "forbidden")
        .await;
    // Audited: counted by action on the node that carried it out.
    let (_, metrics) = a.http_get("/metrics").await;
    assert!(
        metrics.contains("huddle_moderation_actions_total{action=\"ban\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("huddle_moderation_actions_total{action=\"role\"} 1"),
        "{metrics}"
    );
    // The banned connection forgot the room at once: with the bystander
    // gone too, node B holds the room's channel no more (a connection that
    // kept the room would hold it until it closed, and leave it then).
    bystander
        .ok(json!({"type": "room.leave", "room": room}))
        .await;
    owner
        .wait_event("participant.left of u4", EVENT_TIMEOUT, |e| {
            e["room"] == room && e["event"] == "participant.left" && e["user"]["id"] == "u4"
        })
        .await;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, metrics) = b.http_get("/metrics").await;
        if metrics.contains("huddle_pubsub_channels 0") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B still holds the room's channel:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The banned connection closing does not make the user leave twice.
    drop(target);
    let seen = owner.drain_events(QUIET).await;
    assert!(
        seen.iter().all(|e| e["event"] != "participant.left"),
        "{seen:?}"
    );

    // Durable: a node started after the ban refuses the user too.
    let c = backend.node("n3", FAST_JWT).await;
    let mut again = user(&c, "u3", "Tim").await;
    again
        .expect_err(json!({"type": "room.join", "room": room}), "forbidden")
        .await;
    // Unbanned, the user is back (by code, on the new node).
    owner
        .ok(json!({"type": "member.unban", "room": room, "user": "u3"}))
        .await;
    again.join_code(&code).await;
    owner.send_message(&room, "welcome back").await;
    let back = again.next_message_event(&room).await;
    assert_eq!(back["message"]["content"], "welcome back", "{back}");
}

/// The flags of the JWT nodes (`two_jwt_nodes`).
const FAST_JWT: &[&str] = &[
    "--rate-limit",
    "10000",
    "--rate-burst",
    "20000",
    "--jwt-secret",
    JWT_SECRET,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_change_nothing_and_a_kicked_user_may_come_back() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let Scene {
        mut owner,
        mut moderator,
        mut target,
        mut bystander,
        room,
        ..
    } = scene(&a, &b).await;
    let before = owner.room_get(&room).await;
    // A member may not kick; a moderator may not act on the owner or on
    // another moderator; nobody may kick the owner.
    bystander
        .expect_err(
            json!({"type": "member.kick", "room": room, "user": "u3"}),
            "forbidden",
        )
        .await;
    moderator
        .expect_err(
            json!({"type": "member.kick", "room": room, "user": "u1"}),
            "forbidden",
        )
        .await;
    moderator
        .expect_err(
            json!({"type": "member.mute", "room": room, "user": "u1", "duration_ms": 5000}),
            "forbidden",
        )
        .await;
    owner
        .ok(json!({"type": "member.role", "room": room, "user": "u4", "role": "moderator"}))
        .await;
    moderator
        .expect_err(
            json!({"type": "member.ban", "room": room, "user": "u4"}),
            "forbidden",
        )
        .await;
    moderator
        .expect_err(
            json!({"type": "member.role", "room": room, "user": "u3", "role": "moderator"}),
            "forbidden",
        )
        .await;
    moderator
        .expect_err(json!({"type": "room.close", "room": room}), "forbidden")
        .await;
    // Validation.
    owner
        .expect_err(
            json!({"type": "member.kick", "room": room, "user": "u3", "reason": "x".repeat(201)}),
            "too_large",
        )
        .await;
    owner
        .expect_err(
            json!({"type": "member.role", "room": room, "user": "u3", "role": "admin"}),
            "bad_request",
        )
        .await;
    owner
        .expect_err(
            json!({"type": "member.mute", "room": room, "user": "u3", "duration_ms": 999}),
            "bad_request",
        )
        .await;
    owner
        .expect_err(
            json!({"type": "member.mute", "room": room, "user": "u3", "duration_ms": 30_u64 * 86_400_000 + 1}),
            "bad_request",
        )
        .await;
    owner
        .expect_err(
            json!({"type": "member.kick", "room": "no-such-room", "user": "u3"}),
            "not_found",
        )
        .await;
    owner
        .expect_err(
            json!({"type": "room.update", "room": room, "max_participants": 3}),
            "conflict",
        )
        .await;
    // Nothing changed.
    let after = owner.room_get(&room).await;
    assert_eq!(after, before);
    target.send_message(&room, "still here").await;
    // The owner kicks; the user may join again.
    owner
        .ok(json!({"type": "member.kick", "room": room, "user": "u3"}))
        .await;
    let removed = event(&mut target, &room, "member.removed").await;
    assert_eq!(removed["banned_until"], Value::Null, "{removed}");
    assert_eq!(removed["reason"], Value::Null, "{removed}");
    assert_eq!(removed["by"]["id"], "u1", "{removed}");
    event(&mut bystander, &room, "participant.left").await;
    target.join(&room).await;
    event(&mut bystander, &room, "participant.joined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_refuses_send_edit_and_typing_until_unmuted() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let Scene {
        mut owner,
        mut moderator,
        mut target,
        mut bystander,
        room,
        ..
    } = scene(&a, &b).await;
    let said = target.send_message(&room, "before").await;
    moderator
        .ok(json!({"type": "member.mute", "room": room, "user": "u3", "duration_ms": 60_000}))
        .await;
    let ev = bystander
        .wait_event("member.updated for u3", EVENT_TIMEOUT, |e| {
            e["event"] == "member.updated" && e["user"]["id"] == "u3"
        })
        .await;
    let until = ev["user"]["muted_until"].as_u64().expect("muted_until");
    assert!(until > said["created_at"].as_u64().expect("created_at"));
    let got = owner.ok(json!({"type": "room.get", "room": room})).await;
    assert_eq!(
        participant(&got["participants"], "u3")["muted_until"],
        until,
        "{got}"
    );
    let last_seq = owner.room_get(&room).await["last_seq"].clone();
    target
        .expect_err(
            json!({"type": "message.send", "room": room, "content": "muted"}),
            "forbidden",
        )
        .await;
    target
        .expect_err(
            json!({"type": "message.edit", "room": room, "message": said["id"], "content": "x"}),
            "forbidden",
        )
        .await;
    target
        .expect_err(
            json!({"type": "typing", "room": room, "active": true}),
            "forbidden",
        )
        .await;
    assert_eq!(owner.room_get(&room).await["last_seq"], last_seq);
    // A moderator deletes any member's message; a member may not.
    bystander
        .expect_err(
            json!({"type": "message.delete", "room": room, "message": said["id"]}),
            "forbidden",
        )
        .await;
    let gone = moderator
        .ok(json!({"type": "message.delete", "room": room, "message": said["id"]}))
        .await;
    assert_eq!(gone["message"]["deleted"], true, "{gone}");
    // Unmuted: sends again.
    owner
        .ok(json!({"type": "member.unmute", "room": room, "user": "u3"}))
        .await;
    let ev = bystander
        .wait_event("member.updated for u3", EVENT_TIMEOUT, |e| {
            e["event"] == "member.updated" && e["user"]["id"] == "u3"
        })
        .await;
    assert!(ev["user"].get("muted_until").is_none(), "{ev}");
    target.send_message(&room, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_update_and_close_reach_both_nodes() {
    let (_backend, a, b) = two_jwt_nodes().await;
    let Scene {
        mut owner,
        mut moderator,
        mut target,
        mut bystander,
        room,
        code,
    } = scene(&a, &b).await;
    bystander
        .expect_err(
            json!({"type": "room.update", "room": room, "name": "mine"}),
            "forbidden",
        )
        .await;
    let data = moderator
        .ok(json!({"type": "room.update", "room": room, "name": "renamed", "max_participants": 10}))
        .await;
    assert_eq!(data["room"]["name"], "renamed", "{data}");
    for c in [&mut owner, &mut bystander] {
        let ev = c
            .wait_event("room.updated", EVENT_TIMEOUT, |e| {
                e["event"] == "room.updated"
            })
            .await;
        assert_eq!(ev["room"]["name"], "renamed", "{ev}");
        assert_eq!(ev["room"]["max_participants"], 10, "{ev}");
    }
    // The owner hands the room over, then the new owner closes it.
    owner
        .ok(json!({"type": "member.role", "room": room, "user": "u2", "role": "owner"}))
        .await;
    let ev = bystander
        .wait_event("member.updated for u1", EVENT_TIMEOUT, |e| {
            e["event"] == "member.updated" && e["user"]["id"] == "u1"
        })
        .await;
    assert_eq!(ev["user"]["role"], "moderator", "{ev}");
    owner
        .expect_err(json!({"type": "room.close", "room": room}), "forbidden")
        .await;
    // Typing in a room that exists but was not joined is `forbidden`.
    let mut outsider = user(&b, "u9", "Otto").await;
    outsider
        .expect_err(
            json!({"type": "typing", "room": room, "active": true}),
            "forbidden",
        )
        .await;
    moderator
        .ok(json!({"type": "room.close", "room": room}))
        .await;
    for c in [&mut owner, &mut target, &mut bystander] {
        let ev = event(c, &room, "room.closed").await;
        assert_eq!(ev["by"]["id"], "u2", "{ev}");
    }
    for c in [&mut owner, &mut target, &mut bystander, &mut outsider] {
        c.expect_err(json!({"type": "room.get", "room": room}), "not_found")
            .await;
        c.expect_err(
            json!({"type": "message.send", "room": room, "content": "hello?"}),
            "not_found",
        )
        .await;
        // Typing too: the room is gone, not merely not joined.
        c.expect_err(
            json!({"type": "typing", "room": room, "active": true}),
            "not_found",
        )
        .await;
        c.expect_no_event(Duration::from_millis(200)).await;
    }
    target
        .expect_err(json!({"type": "room.join", "code": code}), "not_found")
        .await;
    moderator
        .expect_err(
            json!({"type": "message.history", "room": room}),
            "not_found",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_engine_removes_and_bans_the_same_way() {
    let node = solo(&[]).await;
    let mut owner = guest(&node, "Owen").await;
    let room = owner.create_room("solo", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut target = guest(&node, "Tim").await;
    target.join(&rid).await;
    let tid = target.user_id();
    owner
        .ok(json!({"type": "member.ban", "room": rid, "user": tid, "duration_ms": 60_000}))
        .await;
    let removed = event(&mut target, &rid, "member.removed").await;
    let until = removed["banned_until"].as_i64().expect("a timed ban");
    assert!(until > 0, "{removed}");
    event(&mut owner, &rid, "participant.left").await;
    owner.send_message(&rid, "after").await;
    target.expect_no_event(QUIET).await;
    let err = target
        .expect_err(json!({"type": "room.join", "room": rid}), "forbidden")
        .await;
    assert!(s(&err, "message").contains(&until.to_string()), "{err}");
    owner.ok(json!({"type": "room.close", "room": rid})).await;
    event(&mut owner, &rid, "room.closed").await;
    owner
        .expect_err(json!({"type": "room.get", "room": rid}), "not_found")
        .await;
}

/// Mute durations are bounded exactly at 1 s and 30 days, and only actions
/// that changed something are counted: a kick of someone who is not in the
/// room and an unban of someone who is not banned succeed uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_bounds_and_what_the_metric_counts() {
    let node = solo(&[]).await;
    let mut owner = guest(&node, "Owen").await;
    let room = owner.create_room("bounds", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut target = guest(&node, "Tim").await;
    target.join(&rid).await;
    let tid = target.user_id();
    const DAY: i64 = 86_400_000;
    for refused in [999, 30 * DAY + 1] {
        owner
            .expect_err(
                json!({"type": "member.mute", "room": rid, "user": tid, "duration_ms": refused}),
                "bad_request",
            )
            .await;
    }
    let got = owner.ok(json!({"type": "room.get", "room": rid})).await;
    assert!(
        participant(&got["participants"], &tid)
            .get("muted_until")
            .is_none(),
        "a refused mute changes nothing: {got}"
    );
    for (n, ok) in [1_000, 30 * DAY].into_iter().enumerate() {
        let before = huddle::model::now_ms() as i64;
        owner
            .ok(json!({"type": "member.mute", "room": rid, "user": tid, "duration_ms": ok}))
            .await;
        let ev = owner
            .wait_event("member.updated", EVENT_TIMEOUT, |e| {
                e["event"] == "member.updated" && e["user"]["id"] == tid.as_str()
            })
            .await;
        let until = ev["user"]["muted_until"].as_i64().expect("muted");
        assert!(
            until >= before + ok && until <= before + ok + 5_000,
            "{n}: {ev}"
        );
    }
    // Nothing to do: not counted.
    owner
        .ok(json!({"type": "member.kick", "room": rid, "user": "nobody"}))
        .await;
    owner
        .ok(json!({"type": "member.unban", "room": rid, "user": "nobody"}))
        .await;
    let (_, metrics) = node.http_get("/metrics").await;
    assert!(
        metrics.contains("huddle_moderation_actions_total{action=\"mute\"} 2"),
        "{metrics}"
    );
    for action in ["kick", "unban"] {
        let line = format!("huddle_moderation_actions_total{{action=\"{action}\"}}");
        assert!(!metrics.contains(&line), "{action} counted:\n{metrics}");
    }
    // A ban of someone absent is recorded, and lifting it counts.
    owner
        .ok(json!({"type": "member.ban", "room": rid, "user": "nobody"}))
        .await;
    owner
        .ok(json!({"type": "member.unban", "room": rid, "user": "nobody"}))
        .await;
    let (_, metrics) = node.http_get("/metrics").await;
    for action in ["ban", "unban"] {
        let line = format!("huddle_moderation_actions_total{{action=\"{action}\"}} 1");
        assert!(metrics.contains(&line), "{action} not counted:\n{metrics}");
    }
}
