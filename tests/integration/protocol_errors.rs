//! Every bad frame of `PROTOCOL.md` gets its error code, and the same
//! connection keeps working afterwards (a successful `ping` after each one),
//! except where the protocol says the connection closes (a bad token; the
//! WebSocket-level closes are in `websocket`). Rejected writes must leave
//! the store unchanged.
//!
//! These tests run single nodes on the memory engine: the error paths are
//! the same on every engine and need no Redis.

use std::time::Duration;

use crate::common::{
    Client, EVENT_TIMEOUT, Node, QUIET, assert_error_shape, guest, ids, mint_token, s, seq, solo,
};
use serde_json::{Value, json};

/// Sends a raw text frame that has no readable `id` and expects an
/// id-less `{"type":"error"}` frame with `code`, then a working `ping`.
async fn raw_expect_error_frame(c: &mut Client, raw: &str, code: &str) {
    c.send_text(raw).await;
    let frame = c.next_response(EVENT_TIMEOUT).await;
    assert_eq!(
        frame["type"], "error",
        "frame {raw:?} has no readable id: its failure must be an error frame, got {frame}"
    );
    assert!(
        frame.get("id").is_none_or(Value::is_null),
        "error frame with id: {frame}"
    );
    assert_error_shape(&frame["error"], &frame);
    assert_eq!(
        frame["error"]["code"], code,
        "wrong code for raw frame {raw:?}: {frame}"
    );
    c.ping().await;
}

/// Sends a raw text frame carrying `"id": id` and expects a failed reply
/// with that id and `code`, then a working `ping`.
async fn raw_expect_reply_error(c: &mut Client, raw: &str, id: u64, code: &str) {
    c.send_text(raw).await;
    let reply = c.wait_reply(id, &json!(raw)).await;
    assert_eq!(reply["ok"], false, "raw frame {raw:?} must fail: {reply}");
    assert_error_shape(&reply["error"], &reply);
    assert_eq!(
        reply["error"]["code"], code,
        "wrong code for raw frame {raw:?}: {reply}"
    );
    c.ping().await;
}

/// `req` fails with `code`, then the connection still answers `ping`.
async fn expect_err_alive(c: &mut Client, req: Value, code: &str) {
    c.expect_err(req, code).await;
    c.ping().await;
}

fn unknown_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn message_ids(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| s(m, "id").to_string()).collect()
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_bad_request_and_the_connection_survives() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "fuzzy").await;

    // Not JSON, or JSON that is not an object: no id can be read.
    for raw in [
        "{not json",
        "",
        "[1,2,3]",
        "42",
        "\"just a string\"",
        "null",
        "true",
    ] {
        raw_expect_error_frame(&mut c, raw, "bad_request").await;
    }
    // Objects without a usable type: the id is echoed.
    raw_expect_reply_error(&mut c, r#"{"id":9001}"#, 9001, "bad_request").await;
    raw_expect_reply_error(&mut c, r#"{"id":9002,"type":5}"#, 9002, "bad_request").await;
    raw_expect_reply_error(
        &mut c,
        r#"{"id":9003,"type":"room.explode"}"#,
        9003,
        "bad_request",
    )
    .await;
    // Without id: an error frame.
    raw_expect_error_frame(&mut c, r#"{"name":"no type"}"#, "bad_request").await;
    raw_expect_error_frame(&mut c, r#"{"type":"room.explode"}"#, "bad_request").await;
    // Truncated JSON whose id could not be parsed reliably: an error frame
    // (or, if the server salvages the id, a reply) — either way bad_request.
    c.send_text(r#"{"type":"ping","id":9004"#).await;
    let frame = c.next_response(EVENT_TIMEOUT).await;
    let error = if frame["type"] == "reply" {
        assert_eq!(frame["id"], 9004, "{frame}");
        &frame["error"]
    } else {
        &frame["error"]
    };
    assert_eq!(error["code"], "bad_request", "truncated JSON: {frame}");
    c.ping().await;

    // Still fully usable.
    let room = c.create_room("after the noise", json!({})).await;
    c.send_message(s(&room, "id"), "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frame_gets_an_error_event_and_the_connection_survives() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "binary").await;
    c.send_binary(br#"{"type":"ping","id":77}"#.to_vec()).await;
    let frame = c.next_response(EVENT_TIMEOUT).await;
    assert_eq!(
        frame["type"], "error",
        "binary frames are refused with an error event: {frame}"
    );
    assert_error_shape(&frame["error"], &frame);
    assert_eq!(frame["error"]["code"], "bad_request", "{frame}");
    c.ping().await;
    c.send_binary(vec![0, 159, 146, 150]).await;
    let frame = c.next_response(EVENT_TIMEOUT).await;
    assert_eq!(frame["error"]["code"], "bad_request", "{frame}");
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_before_hello_are_unauthorized() {
    let node = solo(&[]).await;
    let mut owner = guest(&node, "owner").await;
    let room = owner.create_room("lobby", json!({})).await;
    let rid = s(&room, "id").to_string();

    let mut c = Client::connect(&node).await;
    for req in [
        json!({"type": "ping"}),
        json!({"type": "room.create", "name": "sneaky"}),
        json!({"type": "room.list"}),
        json!({"type": "room.join", "room": rid}),
        json!({"type": "message.send", "room": rid, "content": "hi"}),
        json!({"type": "message.history", "room": rid}),
    ] {
        c.expect_err(req, "unauthorized").await;
    }
    // Without id: an error frame.
    c.send_json(&json!({"type": "room.list"})).await;
    let frame = c.next_error_frame(EVENT_TIMEOUT).await;
    assert_eq!(frame["error"]["code"], "unauthorized", "{frame}");

    // Nothing happened, and hello still works on the same connection.
    c.hello("late").await;
    c.ping().await;
    let list = c.ok(json!({"type": "room.list"})).await;
    assert_eq!(
        ids(&list["rooms"]),
        vec![rid.clone()],
        "no room was created before hello"
    );
    let history = owner.all_messages(&rid).await;
    assert!(
        history.iter().all(|m| m["kind"] == "system"),
        "no message was sent before hello: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_hello_validates_the_name() {
    let node = solo(&[]).await;
    let mut c = Client::connect(&node).await;
    c.expect_err(json!({"type": "hello"}), "bad_request").await;
    c.expect_err(json!({"type": "hello", "name": ""}), "bad_request")
        .await;
    c.expect_err(json!({"type": "hello", "name": 5}), "bad_request")
        .await;
    c.expect_err(
        json!({"type": "hello", "name": "n".repeat(65)}),
        "too_large",
    )
    .await;
    // Still not authenticated, still connected.
    c.expect_err(json!({"type": "ping"}), "unauthorized").await;
    let name = "é".repeat(64);
    let user = c.hello(&name).await;
    assert_eq!(
        user["name"],
        name.as_str(),
        "64 characters is a valid name: {user}"
    );
    c.ping().await;

    // The guest's image is kept.
    let mut pictured = Client::connect(&node).await;
    let data = pictured
        .ok(json!({"type": "hello", "name": "Ann", "image": "https://example.com/ann.png"}))
        .await;
    assert_eq!(
        data["user"]["image"], "https://example.com/ann.png",
        "{data}"
    );
    assert_eq!(data["node"], "solo", "hello names the node: {data}");

    // Guests get a fresh id on every hello.
    let mut other = Client::connect(&node).await;
    let user2 = other.hello(&name).await;
    assert_ne!(user["id"], user2["id"], "each guest gets a fresh id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_mistyped_and_out_of_range_fields_are_bad_request() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "picky").await;
    let room = c.create_room("valid", json!({})).await;
    let rid = s(&room, "id").to_string();
    let m = c.send_message(&rid, "keep me").await;
    let mid = s(&m, "id").to_string();

    let bad = [
        // room.create
        json!({"type": "room.create"}),
        json!({"type": "room.create", "name": 5}),
        json!({"type": "room.create", "name": ""}),
        json!({"type": "room.create", "name": "x", "max_participants": 1}),
        json!({"type": "room.create", "name": "x", "max_participants": 10001}),
        json!({"type": "room.create", "name": "x", "max_participants": 0}),
        json!({"type": "room.create", "name": "x", "max_participants": -3}),
        json!({"type": "room.create", "name": "x", "max_participants": "ten"}),
        json!({"type": "room.create", "name": "x", "max_participants": 2.5}),
        json!({"type": "room.create", "name": "x", "private": "yes"}),
        // room.join / get / leave
        json!({"type": "room.join"}),
        json!({"type": "room.join", "room": 5}),
        json!({"type": "room.join", "room": rid, "since": "yesterday"}),
        json!({"type": "room.join", "room": rid, "since": -1}),
        json!({"type": "room.get"}),
        json!({"type": "room.leave"}),
        json!({"type": "room.list", "limit": "many"}),
        // message.send
        json!({"type": "message.send", "content": "no room"}),
        json!({"type": "message.send", "room": rid}),
        json!({"type": "message.send", "room": rid, "content": ""}),
        json!({"type": "message.send", "room": rid, "content": 5}),
        json!({"type": "message.send", "room": rid, "content": "x", "kind": "video"}),
        json!({"type": "message.send", "room": rid, "content": "x", "kind": 1}),
        json!({"type": "message.send", "room": rid, "content": "x", "client_msg_id": 5}),
        // message.history
        json!({"type": "message.history"}),
        json!({"type": "message.history", "room": rid, "limit": 0}),
        json!({"type": "message.history", "room": rid, "limit": 101}),
        json!({"type": "message.history", "room": rid, "limit": "ten"}),
        json!({"type": "message.history", "room": rid, "before": "now"}),
    ];
    for req in bad {
        expect_err_alive(&mut c, req, "bad_request").await;
    }

    // Nothing was written by the rejected requests.
    let list = c.ok(json!({"type": "room.list"})).await;
    assert_eq!(
        ids(&list["rooms"]),
        vec![rid.clone()],
        "rejected creates made no room: {list}"
    );
    let history = c.all_messages(&rid).await;
    let kept = history
        .iter()
        .find(|h| h["id"] == mid)
        .expect("message kept");
    assert_eq!(kept["content"], "keep me", "{kept}");
    assert_eq!(
        history.iter().filter(|h| h["kind"] != "system").count(),
        1,
        "rejected sends stored nothing: {history:?}"
    );

    // The boundaries themselves are valid.
    let two = c
        .create_room("two", json!({"max_participants": 2, "private": true}))
        .await;
    assert_eq!(two["max_participants"], 2);
    let big = c
        .create_room("big", json!({"max_participants": 10000}))
        .await;
    assert_eq!(big["max_participants"], 10000);
    let default = c.create_room("default", json!({})).await;
    assert_eq!(default["max_participants"], 50, "default max_participants");
    assert_eq!(default["private"], false, "default private");
    c.history(&rid, None, Some(1)).await;
    c.history(&rid, None, Some(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_fields_are_too_large() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "verbose").await;

    expect_err_alive(
        &mut c,
        json!({"type": "room.create", "name": "r".repeat(101)}),
        "too_large",
    )
    .await;
    let list = c.ok(json!({"type": "room.list"})).await;
    assert_eq!(
        list["rooms"],
        json!([]),
        "the too-long room was not created: {list}"
    );
    let room = c.create_room(&"r".repeat(100), json!({})).await;
    let rid = s(&room, "id").to_string();
    let before = message_ids(&c.all_messages(&rid).await);

    for req in [
        json!({"type": "message.send", "room": rid, "content": "m".repeat(4001)}),
        json!({"type": "message.send", "room": rid, "content": "x", "client_msg_id": "c".repeat(65)}),
    ] {
        expect_err_alive(&mut c, req, "too_large").await;
    }
    assert_eq!(
        message_ids(&c.all_messages(&rid).await),
        before,
        "rejected sends leave history unchanged"
    );

    // At the limits: accepted. Lengths are in characters, not bytes.
    c.send_message(&rid, &"m".repeat(4000)).await;
    let multibyte = c.send_message(&rid, &"é".repeat(4000)).await;
    assert_eq!(
        multibyte["content"].as_str().map(|t| t.chars().count()),
        Some(4000)
    );
    c.ok(json!({"type": "message.send", "room": rid, "content": "x", "client_msg_id": "c".repeat(64)}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_send_kind_and_attachment_rules() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "sender").await;
    let room = c.create_room("media", json!({})).await;
    let rid = s(&room, "id").to_string();
    let before = message_ids(&c.all_messages(&rid).await);
    let attachment =
        |url: &str| json!({"url": url, "name": "a.png", "size": 1234, "mime": "image/png"});

    expect_err_alive(
        &mut c,
        json!({"type": "message.send", "room": rid, "kind": "system", "content": "I am the server"}),
        "forbidden",
    )
    .await;
    for req in [
        json!({"type": "message.send", "room": rid, "kind": "image", "content": "pic"}),
        json!({"type": "message.send", "room": rid, "kind": "file", "content": "doc"}),
        json!({"type": "message.send", "room": rid, "kind": "image", "content": "pic",
               "attachment": attachment("ftp://example.com/a.png")}),
        json!({"type": "message.send", "room": rid, "kind": "file", "content": "doc",
               "attachment": attachment("javascript:alert(1)")}),
        json!({"type": "message.send", "room": rid, "kind": "image", "content": "pic",
               "attachment": "https://example.com/a.png"}),
    ] {
        expect_err_alive(&mut c, req, "bad_request").await;
    }
    assert_eq!(
        message_ids(&c.all_messages(&rid).await),
        before,
        "rejected sends leave history unchanged"
    );

    // The valid forms go through.
    let image = c
        .ok(
            json!({"type": "message.send", "room": rid, "kind": "image", "content": "pic",
                   "attachment": attachment("https://example.com/a.png")}),
        )
        .await["message"]
        .clone();
    assert_eq!(image["kind"], "image", "{image}");
    assert_eq!(
        image["attachment"]["url"], "https://example.com/a.png",
        "{image}"
    );
    assert_eq!(image["attachment"]["size"], 1234, "{image}");
    let file = c
        .ok(
            json!({"type": "message.send", "room": rid, "kind": "file", "content": "doc",
                   "attachment": attachment("http://example.com/a.pdf")}),
        )
        .await["message"]
        .clone();
    assert_eq!(file["kind"], "file", "{file}");
    let text = c.send_message(&rid, "plain").await;
    assert!(
        text["attachment"].is_null(),
        "text messages have attachment null: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_are_forbidden_and_unknown_rooms_not_found() {
    let node = solo(&[]).await;
    let mut owner = guest(&node, "owner").await;
    let room = owner.create_room("members only", json!({})).await;
    let rid = s(&room, "id").to_string();
    owner.send_message(&rid, "for members").await;
    let before = message_ids(&owner.all_messages(&rid).await);

    let mut stranger = guest(&node, "stranger").await;
    for req in [
        json!({"type": "message.send", "room": rid, "content": "let me in"}),
        json!({"type": "message.history", "room": rid}),
    ] {
        expect_err_alive(&mut stranger, req, "forbidden").await;
    }
    assert_eq!(
        message_ids(&owner.all_messages(&rid).await),
        before,
        "forbidden requests changed nothing"
    );

    // After leaving, the room is closed to that user again.
    stranger.join(&rid).await;
    stranger
        .ok(json!({"type": "room.leave", "room": rid}))
        .await;
    expect_err_alive(
        &mut stranger,
        json!({"type": "message.send", "room": rid, "content": "gone"}),
        "forbidden",
    )
    .await;
    expect_err_alive(
        &mut stranger,
        json!({"type": "message.history", "room": rid}),
        "forbidden",
    )
    .await;

    // A room that does not exist.
    let ghost = unknown_id();
    for req in [
        json!({"type": "room.join", "room": ghost}),
        json!({"type": "room.get", "room": ghost}),
        json!({"type": "message.send", "room": ghost, "content": "hello?"}),
        json!({"type": "message.history", "room": ghost}),
    ] {
        expect_err_alive(&mut stranger, req, "not_found").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_without_id_arrives_as_error_frame_and_success_is_silent() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "quiet").await;
    let room = c.create_room("silence", json!({})).await;
    let rid = s(&room, "id").to_string();
    c.drain_events(QUIET).await;

    c.send_json(&json!({"type": "room.join", "room": unknown_id()}))
        .await;
    let frame = c.next_error_frame(EVENT_TIMEOUT).await;
    assert_error_shape(&frame["error"], &frame);
    assert_eq!(frame["error"]["code"], "not_found", "{frame}");
    assert!(frame.get("id").is_none_or(Value::is_null), "{frame}");

    c.send_json(&json!({"type": "message.send", "room": rid, "content": ""}))
        .await;
    let frame = c.next_error_frame(EVENT_TIMEOUT).await;
    assert_eq!(frame["error"]["code"], "bad_request", "{frame}");
    c.ping().await;

    // Successes without id send no reply at all...
    c.send_json(&json!({"type": "ping"})).await;
    c.send_json(&json!({"type": "message.send", "room": rid, "content": "no id"}))
        .await;
    let stray = c
        .take_frame("a reply", QUIET, |v| v["type"] != "event")
        .await;
    assert!(
        stray.is_none(),
        "a success without id must be silent, got {stray:?}"
    );
    // ...but the message was sent and its event arrives.
    let ev = c.next_message_event(&rid).await;
    assert_eq!(ev["message"]["content"], "no id", "{ev}");
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_and_delete_permissions_and_edit_window() {
    let node = solo(&["--edit-window", "2s"]).await;
    let mut owner = guest(&node, "owner").await;
    let room = owner.create_room("moderated", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut alice = guest(&node, "alice").await;
    let mut bob = guest(&node, "bob").await;
    alice.join(&rid).await;
    bob.join(&rid).await;
    let system = owner
        .all_messages(&rid)
        .await
        .into_iter()
        .find(|m| m["kind"] == "system")
        .expect("a system message exists");

    let m = alice.send_message(&rid, "original").await;
    let mid = s(&m, "id").to_string();
    let edit = |content: &str| json!({"type": "message.edit", "room": rid, "message": mid, "content": content});
    let delete = json!({"type": "message.delete", "room": rid, "message": mid});

    // Only the author edits; the author or the room's creator deletes.
    expect_err_alive(&mut owner, edit("by owner"), "forbidden").await;
    expect_err_alive(&mut bob, edit("by bob"), "forbidden").await;
    expect_err_alive(&mut bob, delete.clone(), "forbidden").await;
    // System messages are never edited or deleted by users.
    let sys_id = s(&system, "id").to_string();
    expect_err_alive(
        &mut owner,
        json!({"type": "message.edit", "room": rid, "message": sys_id, "content": "x"}),
        "forbidden",
    )
    .await;
    expect_err_alive(
        &mut owner,
        json!({"type": "message.delete", "room": rid, "message": sys_id}),
        "forbidden",
    )
    .await;
    let history = owner.all_messages(&rid).await;
    let kept = history.iter().find(|h| h["id"] == mid).expect("present");
    assert_eq!(kept["content"], "original", "refused edits changed nothing");

    // The author edits: message.updated with the next seq.
    bob.drain_events(QUIET).await;
    let edited = alice.ok(edit("edited")).await["message"].clone();
    assert_eq!(edited["content"], "edited", "{edited}");
    assert!(edited["edited_at"].is_u64(), "edited_at is set: {edited}");
    assert_eq!(
        edited["seq"], m["seq"],
        "an edit keeps the message's seq: {edited}"
    );
    let ev = bob.next_message_event(&rid).await;
    assert_eq!(ev["event"], "message.updated", "{ev}");
    assert!(seq(&ev) > seq(&m), "the update event has a new seq: {ev}");
    assert_eq!(ev["message"]["content"], "edited", "{ev}");

    // The room's creator deletes someone else's message: a tombstone.
    let gone = owner.ok(delete).await["message"].clone();
    assert_eq!(gone["deleted"], true, "{gone}");
    assert_eq!(gone["content"], "", "{gone}");
    assert!(gone["attachment"].is_null(), "{gone}");
    let del = bob.next_message_event(&rid).await;
    assert_eq!(del["event"], "message.deleted", "{del}");
    assert_eq!(seq(&del), seq(&ev) + 1, "{del}");

    // Past the edit window: conflict, nothing changed.
    let late = alice.send_message(&rid, "too late to fix").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    expect_err_alive(
        &mut alice,
        json!({"type": "message.edit", "room": rid, "message": late["id"], "content": "fixed"}),
        "conflict",
    )
    .await;
    let history = owner.all_messages(&rid).await;
    let kept = history
        .iter()
        .find(|h| h["id"] == late["id"])
        .expect("present");
    assert_eq!(kept["content"], "too late to fix");
}

const SECRET: &str = "protocol-test-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bad_token_gets_unauthorized_then_close_4001() {
    let node = solo(&["--jwt-secret", SECRET]).await;
    let forged = mint_token("some-other-secret", "mallory", "Mallory");
    let good = mint_token(SECRET, "alice", "Alice");
    // Same header and signature, payload swapped for another user's.
    let other = mint_token(SECRET, "root", "Root");
    let parts: Vec<&str> = good.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);

    for (what, token) in [
        ("garbage", "not-a-jwt".to_string()),
        ("signed with another secret", forged),
        ("tampered payload", tampered),
    ] {
        let mut c = Client::connect(&node).await;
        let error = c
            .expect_err(
                json!({"type": "hello", "token": token, "name": "x"}),
                "unauthorized",
            )
            .await;
        let code = c.wait_close(EVENT_TIMEOUT).await;
        assert_eq!(
            code,
            Some(4001),
            "bad token ({what}) closes with 4001 after {error}"
        );
    }

    // No token at all where one is required: like a bad token
    // (the project's docs/protocol.md settles this reading).
    let mut c = Client::connect(&node).await;
    c.expect_err(json!({"type": "hello", "name": "guest"}), "unauthorized")
        .await;
    assert_eq!(
        c.wait_close(EVENT_TIMEOUT).await,
        Some(4001),
        "hello without token on a node with a secret closes with 4001"
    );

    // Verbs before hello: unauthorized, connection kept.
    let mut c = Client::connect(&node).await;
    c.expect_err(json!({"type": "ping"}), "unauthorized").await;
    c.hello_token(&good, "Alice").await;
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_valid_token_sets_the_user_from_its_claims() {
    let node = solo(&["--jwt-secret", SECRET]).await;
    let token = mint_token(SECRET, "user-42", "Claimed Name");
    let mut c = Client::connect(&node).await;
    let data = c
        .ok(json!({"type": "hello", "token": token, "name": "Field Name"}))
        .await;
    assert_eq!(
        data["user"]["id"], "user-42",
        "the token's sub is the user id: {data}"
    );
    assert_eq!(
        data["user"]["name"], "Claimed Name",
        "the name claim wins: {data}"
    );
    assert_eq!(data["node"], "solo", "hello names the node: {data}");
    assert!(data["server_time"].is_u64(), "{data}");
    c.user = Some(data["user"].clone());
    c.ping().await;

    let room = c.create_room("authed", json!({})).await;
    assert_eq!(room["created_by"], "user-42", "{room}");
    let m = c.send_message(s(&room, "id"), "signed").await;
    assert_eq!(m["user"]["id"], "user-42", "{m}");
    assert_eq!(m["user"]["name"], "Claimed Name", "{m}");

    // The same user on a second connection is the same user.
    let mut again = Client::connect(&node).await;
    let user = again.hello_token(&token, "whatever").await;
    assert_eq!(user["id"], "user-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_replies_carry_retry_after_and_the_connection_recovers() {
    let node = Node::start(None, "solo", &["--rate-limit", "2", "--rate-burst", "4"]).await;
    let mut c = Client::connect(&node).await;
    c.hello("hasty").await;
    let ids: Vec<u64> = (700..712).collect();
    for id in &ids {
        c.send_json(&json!({"type": "ping", "id": id})).await;
    }
    let mut ok = 0;
    let mut limited = Vec::new();
    for id in &ids {
        let reply = c.wait_reply(*id, &json!({"type": "ping", "id": id})).await;
        if reply["ok"] == true {
            ok += 1;
        } else {
            assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
            limited.push(reply);
        }
    }
    assert!(ok >= 1, "the burst lets some requests through");
    assert!(!limited.is_empty(), "12 pings at once exceed burst 4");
    for reply in &limited {
        let error = &reply["error"];
        let carries = error["retry_after_ms"].is_u64()
            || error["message"]
                .as_str()
                .is_some_and(|m| m.contains("retry_after_ms"));
        assert!(carries, "rate_limited carries retry_after_ms: {reply}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.ping().await;
}

/// The verbs beyond the core set (edit, delete, search, typing, presence):
/// their field errors, membership and existence rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_delete_search_typing_presence_field_errors() {
    let node = solo(&[]).await;
    let mut owner = guest(&node, "owner").await;
    let room = owner.create_room("more verbs", json!({})).await;
    let rid = s(&room, "id").to_string();
    let m = owner.send_message(&rid, "findable words here").await;
    let mid = s(&m, "id").to_string();

    for req in [
        json!({"type": "message.edit", "room": rid, "content": "no message"}),
        json!({"type": "message.edit", "room": rid, "message": mid}),
        json!({"type": "message.edit", "room": rid, "message": mid, "content": ""}),
        json!({"type": "message.delete", "room": rid}),
        json!({"type": "message.search", "room": rid}),
        json!({"type": "message.search", "room": rid, "query": ""}),
        json!({"type": "message.search", "room": rid, "query": "x", "limit": 0}),
        json!({"type": "message.search", "room": rid, "query": "x", "limit": 101}),
        json!({"type": "typing", "room": rid, "active": "yes"}),
        json!({"type": "presence"}),
    ] {
        expect_err_alive(&mut owner, req, "bad_request").await;
    }
    for req in [
        json!({"type": "message.edit", "room": rid, "message": mid, "content": "e".repeat(4001)}),
        json!({"type": "message.search", "room": rid, "query": "q".repeat(201)}),
    ] {
        expect_err_alive(&mut owner, req, "too_large").await;
    }
    // A message that does not exist, in a room the user joined.
    let ghost_msg = unknown_id();
    for req in [
        json!({"type": "message.edit", "room": rid, "message": ghost_msg, "content": "x"}),
        json!({"type": "message.delete", "room": rid, "message": ghost_msg}),
    ] {
        expect_err_alive(&mut owner, req, "not_found").await;
    }
    // Non-members.
    let mut stranger = guest(&node, "stranger").await;
    for req in [
        json!({"type": "message.search", "room": rid, "query": "findable"}),
        json!({"type": "message.delete", "room": rid, "message": mid}),
    ] {
        expect_err_alive(&mut stranger, req, "forbidden").await;
    }
    // Nothing changed, and search still finds the message.
    let history = owner.all_messages(&rid).await;
    let kept = history.iter().find(|h| h["id"] == mid).expect("present");
    assert_eq!(kept["content"], "findable words here", "{kept}");
    assert!(kept["edited_at"].is_null(), "{kept}");
    let found = owner
        .ok(json!({"type": "message.search", "room": rid, "query": "WORDS findable"}))
        .await;
    assert_eq!(
        ids(&found["messages"]),
        vec![mid],
        "case-insensitive, every word: {found}"
    );

    // Newest first, limited.
    let pie = owner.send_message(&rid, "apple pie").await;
    let tart = owner.send_message(&rid, "Apple tart").await;
    owner.send_message(&rid, "banana").await;
    let found = owner
        .ok(json!({"type": "message.search", "room": rid, "query": "apple"}))
        .await;
    assert_eq!(
        ids(&found["messages"]),
        vec![s(&tart, "id").to_string(), s(&pie, "id").to_string()],
        "search results newest first: {found}"
    );
    let found = owner
        .ok(json!({"type": "message.search", "room": rid, "query": "APPLE", "limit": 1}))
        .await;
    assert_eq!(
        ids(&found["messages"]),
        vec![s(&tart, "id").to_string()],
        "{found}"
    );
    let found = owner
        .ok(json!({"type": "message.search", "room": rid, "query": "apple banana"}))
        .await;
    assert_eq!(
        found["messages"],
        json!([]),
        "every word must match: {found}"
    );
}
