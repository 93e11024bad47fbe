//! What one client can cost a deployment, and the inputs that pretend to be
//! someone else: the hello deadline, coalesced typing, resumes from beyond
//! a room's last seq, reserved and hidden names, `client_msg_id` shapes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn no_hello_in_time_closes_4001_even_while_pinging() {
    let node = solo(&["--hello-timeout", "1s"]).await;
    let started = Instant::now();
    let mut silent = Client::connect(&node).await;
    let mut pinging = Client::connect(&node).await;
    let mut polite = Client::connect(&node).await;
    polite.hello("polite").await;
    // Pings (refused before hello) keep the idle timer away, not the
    // deadline.
    for _ in 0..3 {
        pinging
            .expect_err(json!({"type": "ping"}), "unauthorized")
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(pinging.wait_close(Duration::from_secs(5)).await, Some(4001));
    assert_eq!(silent.wait_close(Duration::from_secs(5)).await, Some(4001));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the deadline: {:?}",
        started.elapsed()
    );
    // A client that said hello stays.
    polite.ping().await;
    assert_eq!(
        polite.closed_with(),
        None,
        "the polite client is still open"
    );
}

#[tokio::test]
async fn a_failed_hello_does_not_stop_the_clock() {
    let node = solo(&["--hello-timeout", "1s"]).await;
    let mut c = Client::connect(&node).await;
    c.expect_err(json!({"type": "hello", "name": "   "}), "bad_request")
        .await;
    assert_eq!(c.wait_close(Duration::from_secs(5)).await, Some(4001));
}

#[tokio::test]
async fn repeated_typing_reaches_other_nodes_once_per_two_seconds() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut typist = guest(&a, "typist").await;
    let mut reader = guest(&b, "reader").await;
    let room = typist.create_room("typing", json!({})).await;
    let rid = s(&room, "id").to_string();
    reader.join(&rid).await;
    reader.drain_events(QUIET).await;
    // Twenty repeats a second: the room is told once per 2 s of it (once,
    // unless this machine is slow enough to stretch the loop past 2 s).
    let started = Instant::now();
    for _ in 0..20 {
        typist
            .ok(json!({"type": "typing", "room": rid, "active": true}))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let allowed = 1 + started.elapsed().as_secs() as usize / 2;
    let seen = reader.drain_events(Duration::from_millis(500)).await;
    let typing: Vec<_> = seen.iter().filter(|e| e["event"] == "typing").collect();
    assert!(
        !typing.is_empty() && typing.len() <= allowed,
        "1 to {allowed} typing events for 20 repeats, got {seen:?}"
    );
    assert!(typing.iter().all(|e| e["active"] == true), "{seen:?}");
    // Turning it off is told at once.
    typist
        .ok(json!({"type": "typing", "room": rid, "active": false}))
        .await;
    reader
        .wait_event("typing off", EVENT_TIMEOUT, |e| {
            e["event"] == "typing" && e["active"] == false
        })
        .await;
}

#[tokio::test]
async fn a_resume_from_beyond_the_last_seq_still_gets_later_events() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut owner = guest(&a, "owner").await;
    let mut back = guest(&b, "back").await;
    let room = owner.create_room("resume", json!({})).await;
    let rid = s(&room, "id").to_string();
    let last = room["last_seq"].as_u64().expect("last_seq");
    // A client whose memory of the room is ahead of the store (the store
    // lost data, say) resumes from far beyond the last seq.
    let joined = back.join_since(&rid, last + 100).await;
    assert_eq!(joined["complete"], true, "{}", brief(&joined));
    assert_eq!(joined["events"], json!([]), "{}", brief(&joined));
    let sent = owner.send_message(&rid, "after the resume").await;
    let got = back.next_message_event(&rid).await;
    assert_eq!(got["message"]["id"], sent["id"], "{}", brief(&got));
}

#[tokio::test]
async fn names_that_impersonate_or_hide_are_refused() {
    let node = solo(&[]).await;
    let mut c = Client::connect(&node).await;
    for name in [
        "Huddle",
        "huddle",
        "Ann\u{202E}nnA",
        "\u{3164}",
        "A\u{200B}nn",
    ] {
        let err = c
            .expect_err(json!({"type": "hello", "name": name}), "bad_request")
            .await;
        assert!(
            err["message"].as_str().is_some_and(|m| m.contains("name")),
            "{err}"
        );
    }
    // Nothing was said: the connection still greets a proper name.
    c.hello("Ann").await;
    c.ping().await;
}

#[tokio::test]
async fn client_msg_ids_must_be_visible_text_and_nothing_is_stored_otherwise() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "ann").await;
    let room = c.create_room("ids", json!({})).await;
    let rid = s(&room, "id").to_string();
    let before = c.all_messages(&rid).await.len();
    for id in ["", "   ", "a\u{1}b", "line\nbreak"] {
        c.expect_err(
            json!({"type": "message.send", "room": rid, "content": "x", "client_msg_id": id}),
            "bad_request",
        )
        .await;
    }
    assert_eq!(c.all_messages(&rid).await.len(), before, "nothing stored");
    c.ok(json!({"type": "message.send", "room": rid, "content": "ok", "client_msg_id": "c-1 ü"}))
        .await;
    assert_eq!(c.all_messages(&rid).await.len(), before + 1);
}

#[tokio::test]
async fn room_creation_is_limited_per_user_across_nodes() {
    let mut args = FAST.to_vec();
    args.extend(["--jwt-secret", JWT_SECRET, "--room-create-per-min", "3"]);
    let (_redis, a, b) = two_nodes(&args).await;
    let mut ann_a = user(&a, "ann", "Ann").await;
    let mut ann_b = user(&b, "ann", "Ann").await;
    ann_a.create_room("one", json!({})).await;
    ann_a.create_room("two", json!({})).await;
    ann_b.create_room("three", json!({})).await;
    let err = ann_b
        .expect_err(
            json!({"type": "room.create", "name": "four"}),
            "rate_limited",
        )
        .await;
    let wait = err["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=60_000).contains(&wait), "{err}");
    // Nothing was created, and others are not held back.
    let list = ann_a.ok(json!({"type": "room.list", "limit": 100})).await;
    let names: Vec<&str> = list["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(!names.contains(&"four"), "{names:?}");
    let mut bob = user(&a, "bob", "Bob").await;
    bob.create_room("bob's", json!({})).await;
    let (_, metrics) = b.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"huddle_abuse_limited_total{limit="room_create_user"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn guessing_codes_is_limited_and_cannot_tell_limited_from_unknown() {
    let node = solo(&["--code-miss-per-min", "2"]).await;
    let mut owner = guest(&node, "owner").await;
    let room = owner.create_room("secret", json!({"private": true})).await;
    let code = s(&room, "code").to_string();
    let mut guesser = guest(&node, "guesser").await;
    for guess in ["ZZZZZZ", "YYYYYY"] {
        guesser
            .expect_err(json!({"type": "room.join", "code": guess}), "not_found")
            .await;
    }
    // Past the misses even the right code is refused, so a hit cannot be
    // told apart.
    let err = guesser
        .expect_err(json!({"type": "room.join", "code": code}), "rate_limited")
        .await;
    assert!(
        err["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{err}"
    );
    let now = owner.room_get(s(&room, "id")).await;
    assert_eq!(now["participant_count"], 1, "the guesser is not in: {now}");
    // Someone else with the code joins.
    let mut friend = guest(&node, "friend").await;
    friend.join_code(&code).await;
}

#[tokio::test]
async fn an_address_may_create_six_times_what_a_user_may() {
    let node = solo(&["--address-limits", "--room-create-per-min", "1"]).await;
    for i in 0..6 {
        let mut g = guest(&node, &format!("g{i}")).await;
        g.create_room(&format!("room {i}"), json!({})).await;
    }
    let mut seventh = guest(&node, "g6").await;
    seventh
        .expect_err(
            json!({"type": "room.create", "name": "one too many"}),
            "rate_limited",
        )
        .await;
    let (_, metrics) = node.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"huddle_abuse_limited_total{limit="room_create_address"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_resume_returns_at_most_200_events_and_1_mib() {
    let node = solo(&[]).await;
    let mut ann = guest(&node, "ann").await;
    let room = ann.create_room("long", json!({})).await;
    let rid = s(&room, "id").to_string();
    // 2 bytes a character: 220 of these are well over 1 MiB of frames.
    let long = "é".repeat(4000);
    for _ in 0..220 {
        ann.send_message(&rid, &long).await;
    }
    ann.drain_events(QUIET).await;
    let mut back = guest(&node, "back").await;
    let started = back
        .ok(json!({"type": "room.join", "room": rid, "since": 0}))
        .await;
    let events = started["events"].as_array().expect("events");
    assert_eq!(started["complete"], false, "cut short");
    assert!(
        events.len() < 200,
        "the byte budget cut first: {}",
        events.len()
    );
    let bytes: usize = events.iter().map(|e| e.to_string().len()).sum();
    assert!(bytes <= 1 << 20, "{bytes} bytes of events");
    assert_consecutive(&seqs(events), "a resume is the oldest events, in order");
    // Short messages: the count cut.
    let mut bob = guest(&node, "bob").await;
    let room = bob.create_room("chatty", json!({})).await;
    let rid = s(&room, "id").to_string();
    for i in 0..210 {
        bob.send_message(&rid, &format!("m{i}")).await;
    }
    let mut back = guest(&node, "back2").await;
    let resumed = back
        .ok(json!({"type": "room.join", "room": rid, "since": 0}))
        .await;
    assert_eq!(resumed["events"].as_array().map(Vec::len), Some(200));
    assert_eq!(resumed["complete"], false);
    // Live events after the room's last seq still arrive.
    let sent = bob.send_message(&rid, "after").await;
    let got = back.next_message_event(&rid).await;
    assert_eq!(got["message"]["id"], sent["id"]);
}

#[tokio::test]
async fn history_reads_are_bounded_by_a_byte_budget_per_connection() {
    // 20 kB a second, 80 kB at once.
    let node = solo(&["--read-bytes-per-sec", "20000"]).await;
    let mut ann = guest(&node, "ann").await;
    let room = ann.create_room("history", json!({})).await;
    let rid = s(&room, "id").to_string();
    let long = "x".repeat(4000);
    for _ in 0..30 {
        ann.send_message(&rid, &long).await;
    }
    let mut reader = guest(&node, "reader").await;
    reader.join(&rid).await; // ~120 kB of recent messages: answered whole
    let history = json!({"type": "message.history", "room": rid, "limit": 100});
    let err = reader.expect_err(history.clone(), "rate_limited").await;
    let wait = err["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=10_000).contains(&wait), "{err}");
    // Other requests are not held back, and the budget comes back.
    reader.ping().await;
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let page = reader.ok(history).await;
    // "created", the 30 messages, "reader joined".
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(32));
    let (_, metrics) = node.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"huddle_abuse_limited_total{limit="read_bytes"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_user_typing_on_two_nodes_is_told_once() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut ann_a = user(&a, "ann", "Ann").await;
    let mut ann_b = user(&b, "ann", "Ann").await;
    let mut reader = user(&a, "rea", "Rea").await;
    let room = ann_a.create_room("typing twice", json!({})).await;
    let rid = s(&room, "id").to_string();
    ann_b.join(&rid).await;
    reader.join(&rid).await;
    reader.drain_events(QUIET).await;
    let started = Instant::now();
    let typing = json!({"type": "typing", "room": rid, "active": true});
    for _ in 0..2 {
        ann_a.ok(typing.clone()).await;
        ann_b.ok(typing.clone()).await;
    }
    let allowed = 1 + started.elapsed().as_secs() as usize / 2;
    let seen = reader.drain_events(Duration::from_millis(500)).await;
    let typing = seen.iter().filter(|e| e["event"] == "typing").count();
    assert!(
        (1..=allowed).contains(&typing),
        "1 to {allowed} typing events, got {seen:?}"
    );
}
