//! Messages on a two-node cluster: idempotent sends (`client_msg_id`, also
//! retried concurrently from both nodes), history paging over WebSocket and
//! HTTP, message expiry, and edits and deletes as events, replays, history
//! and search.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    EVENT_TIMEOUT, FAST, QUIET, assert_consecutive, guest, ids, s, seq, seqs, two_jwt_nodes,
    two_nodes, unique, user,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_msg_id_makes_send_idempotent() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut sender = guest(&a, "sender").await;
    let mut watcher = guest(&b, "watcher").await;
    let room = sender.create_room("dedupe", json!({})).await;
    let rid = s(&room, "id").to_string();
    watcher.join(&rid).await;
    sender.drain_events(QUIET).await;
    watcher.drain_events(QUIET).await;

    let cmid = unique("retry");
    let send =
        json!({"type": "message.send", "room": rid, "content": "once", "client_msg_id": cmid});
    let first = sender.ok(send.clone()).await["message"].clone();
    let ev = watcher.next_message_event(&rid).await;
    assert_eq!(
        ev["message"]["id"], first["id"],
        "watcher sees the first send: {ev}"
    );
    let own = sender.next_message_event(&rid).await;
    assert_eq!(
        own["message"]["id"], first["id"],
        "sender sees its own event: {own}"
    );

    let second = sender.ok(send.clone()).await["message"].clone();
    assert_eq!(
        second["id"], first["id"],
        "a retry returns the original message id"
    );
    assert_eq!(
        seq(&second),
        seq(&first),
        "a retry returns the original seq"
    );
    watcher.expect_no_event(Duration::from_millis(600)).await;
    sender.expect_no_event(Duration::from_millis(100)).await;

    // Also idempotent through the other node.
    let third = sender.ok(send).await["message"].clone();
    assert_eq!(third["id"], first["id"]);
    watcher.expect_no_event(QUIET).await;

    // The same client_msg_id from another user is another message.
    let other = watcher
        .ok(json!({"type": "message.send", "room": rid, "content": "once", "client_msg_id": cmid}))
        .await["message"]
        .clone();
    assert_ne!(other["id"], first["id"], "idempotency is per user");
    assert_eq!(seq(&other), seq(&first) + 1);

    let history = sender.all_messages(&rid).await;
    let count = history.iter().filter(|m| m["id"] == first["id"]).count();
    assert_eq!(
        count, 1,
        "history holds the deduplicated message once: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_client_msg_id_make_one_message() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut owner = user(&a, "u1", "Una").await;
    let room = owner.create_room("retry storm", json!({})).await;
    let rid = s(&room, "id").to_string();
    // The same user on both nodes retries the same send at once.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut c = user(node, "u1", "Una").await;
        c.join(&rid).await;
        let rid = rid.clone();
        tasks.push(tokio::spawn(async move {
            let send = json!({"type": "message.send", "room": rid, "content": "once only",
                              "client_msg_id": "storm-1"});
            let message = c.ok(send).await["message"].clone();
            (c, message)
        }));
    }
    let mut messages = Vec::new();
    let mut clients = Vec::new();
    for task in tasks {
        let (c, m) = task.await.expect("send task");
        messages.push(m);
        clients.push(c);
    }
    for m in &messages[1..] {
        assert_eq!(
            m["id"], messages[0]["id"],
            "every retry returns one message"
        );
        assert_eq!(m["seq"], messages[0]["seq"]);
    }
    let history = owner.all_messages(&rid).await;
    let count = history
        .iter()
        .filter(|m| m["content"] == "once only")
        .count();
    assert_eq!(count, 1, "one message stored: {history:?}");
    // Exactly one message.created for it.
    let ev = owner
        .wait_event("the one message", EVENT_TIMEOUT, |e| {
            e["message"]["id"] == messages[0]["id"]
        })
        .await;
    assert_eq!(ev["event"], "message.created");
    owner.expect_no_message_event(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_with_before_and_limit() {
    const SENT: usize = 60;
    const PAGE: usize = 25;
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut writer = guest(&a, "writer").await;
    let room = writer.create_room("long", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut reader = guest(&b, "reader").await;
    reader.join(&rid).await;
    let mut sent = Vec::new();
    for k in 0..SENT {
        sent.push(writer.send_message(&rid, &format!("line {k}")).await);
    }
    let last = reader.room_get(&rid).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    assert_eq!(last, seq(sent.last().expect("sent")));

    // Default limit is 50: the newest 50, ascending.
    let data = reader.history(&rid, None, None).await;
    let default_page = data["messages"].as_array().expect("messages").clone();
    assert_eq!(
        default_page.len(),
        50,
        "default limit 50: {} messages",
        default_page.len()
    );
    assert_eq!(data["has_more"], true);
    assert_eq!(seq(default_page.last().expect("page")), last, "newest last");

    // Walk back with before + limit.
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before = None;
    loop {
        assert!(pages.len() < 20, "paging does not terminate");
        let data = reader.history(&rid, before, Some(PAGE as u64)).await;
        let page = data["messages"].as_array().expect("messages").clone();
        let page_seqs = seqs(&page);
        assert!(page.len() <= PAGE, "limit respected: {page_seqs:?}");
        assert!(
            page_seqs.windows(2).all(|w| w[0] < w[1]),
            "ascending: {page_seqs:?}"
        );
        if let Some(b) = before {
            assert!(
                page_seqs.iter().all(|q| *q < b),
                "before={b} is exclusive: {page_seqs:?}"
            );
        }
        if let (Some(prev), Some(newest)) = (pages.last(), page_seqs.last()) {
            assert_eq!(*newest + 1, seq(&prev[0]), "pages are contiguous");
        }
        let has_more = data["has_more"] == json!(true);
        if has_more {
            assert_eq!(page.len(), PAGE, "a page with has_more is full");
        }
        pages.push(page);
        if !has_more {
            break;
        }
        before = Some(seq(&pages.last().expect("page")[0]));
    }
    assert_eq!(
        seq(&pages[0][pages[0].len() - 1]),
        last,
        "first page ends at the newest"
    );
    let all: Vec<Value> = pages.into_iter().rev().flatten().collect();
    // The whole room in one call (it holds fewer than 100 messages).
    let data = reader.history(&rid, None, Some(100)).await;
    assert_eq!(
        data["has_more"], false,
        "limit 100 returns everything: {data}"
    );
    let everything = data["messages"].as_array().expect("messages").clone();
    let all_seqs = seqs(&all);
    assert_eq!(
        all_seqs,
        seqs(&everything),
        "the pages together are exactly the whole history"
    );
    assert_consecutive(&all_seqs, "history without edits has no seq gap");
    assert_eq!(all_seqs.last(), Some(&last));
    let user_ids: Vec<&str> = all
        .iter()
        .filter(|m| m["kind"] != "system")
        .map(|m| s(m, "id"))
        .collect();
    let sent_ids: Vec<&str> = sent.iter().map(|m| s(m, "id")).collect();
    assert_eq!(user_ids, sent_ids, "all sent messages, in order");

    // Nothing before the first message.
    let data = reader.history(&rid, Some(all_seqs[0]), Some(10)).await;
    assert_eq!(data["messages"], json!([]), "{data}");
    assert_eq!(data["has_more"], false, "{data}");

    // A plain join returns the last 50 messages, ascending.
    let mut late = guest(&a, "late").await;
    let data = late.join(&rid).await;
    let snapshot = data["messages"].as_array().expect("messages").clone();
    assert_eq!(snapshot.len(), 50, "room.join returns the last 50 messages");
    assert_consecutive(&seqs(&snapshot), "join snapshot");
    assert!(
        seq(snapshot.last().expect("snapshot")) >= last,
        "the join snapshot ends at the newest message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_history_endpoint_matches_message_history() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut writer = guest(&a, "writer").await;
    let room = writer.create_room("over http", json!({})).await;
    let rid = s(&room, "id").to_string();
    for k in 0..12 {
        writer.send_message(&rid, &format!("http {k}")).await;
    }
    let ws = writer.history(&rid, None, Some(5)).await;
    let before = seq(&ws["messages"][0]);

    // Guest mode: the endpoint is open. Read on the other node.
    let (status, body) = b
        .http_get(&format!("/api/rooms/{rid}/messages?limit=5"))
        .await;
    assert_eq!(status, 200, "GET messages: {body}");
    let http: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET messages answers JSON ({e}): {body}"));
    assert_eq!(
        http["messages"], ws["messages"],
        "HTTP page = WebSocket page"
    );
    assert_eq!(http["has_more"], ws["has_more"]);

    let (status, body) = b
        .http_get(&format!(
            "/api/rooms/{rid}/messages?before={before}&limit=5"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let older: Value = serde_json::from_str(&body).expect("JSON");
    let ws_older = writer.history(&rid, Some(before), Some(5)).await;
    assert_eq!(
        older["messages"], ws_older["messages"],
        "`before` over HTTP"
    );

    let (status, body) = b
        .http_get(&format!("/api/rooms/{}/messages", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, 404, "unknown room over HTTP: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_gone_from_history_and_search() {
    let mut args = FAST.to_vec();
    args.extend(["--message-ttl", "1s"]);
    let (_redis, a, b) = two_nodes(&args).await;
    let mut ca = guest(&a, "ephemeral").await;
    let room = ca.create_room("mayfly", json!({})).await;
    let rid = s(&room, "id").to_string();
    let old = ca.send_message(&rid, "short lived words").await;
    let found = ca
        .ok(json!({"type": "message.search", "room": rid, "query": "lived"}))
        .await;
    assert_eq!(ids(&found["messages"]), vec![s(&old, "id").to_string()]);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let fresh = ca.send_message(&rid, "fresh words").await;
    let mut cb = guest(&b, "reader").await;
    cb.join(&rid).await;
    let history = cb.all_messages(&rid).await;
    assert!(
        history.iter().all(|m| m["id"] != old["id"]),
        "an expired message is gone from history: {history:?}"
    );
    assert!(
        history.iter().any(|m| m["id"] == fresh["id"]),
        "a fresh message is in history: {history:?}"
    );
    let found = cb
        .ok(json!({"type": "message.search", "room": rid, "query": "words"}))
        .await;
    assert_eq!(
        ids(&found["messages"]),
        vec![s(&fresh, "id").to_string()],
        "an expired message is gone from search: {found}"
    );
    // The room itself lives on, and seq keeps counting.
    assert!(seq(&fresh) > seq(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_are_replayed_and_update_search() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1 = user(&a, "u1", "Una").await;
    let room = u1.create_room("changes", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut u2 = user(&b, "u2", "Udo").await;
    u2.join(&rid).await;
    let mut u3 = user(&a, "u3", "Ute").await;
    u3.join(&rid).await;
    let since = u3.room_get(&rid).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    drop(u3);
    u2.drain_events(QUIET).await;

    let m1 = u1.send_message(&rid, "apple pie").await;
    let m2 = u2.send_message(&rid, "cherry cake").await;
    let edited = u1
        .ok(json!({"type": "message.edit", "room": rid, "message": m1["id"], "content": "banana split"}))
        .await["message"]
        .clone();
    assert_eq!(edited["content"], "banana split", "{edited}");
    assert!(edited["edited_at"].is_u64(), "{edited}");
    let gone = u2
        .ok(json!({"type": "message.delete", "room": rid, "message": m2["id"]}))
        .await["message"]
        .clone();
    assert_eq!(gone["deleted"], true, "{gone}");

    // Live, on the other node: created, created, updated, deleted.
    let want = [
        ("message.created", &m1["id"]),
        ("message.created", &m2["id"]),
        ("message.updated", &m1["id"]),
        ("message.deleted", &m2["id"]),
    ];
    let mut live = Vec::new();
    while live.len() < want.len() {
        let ev = u2.next_message_event(&rid).await;
        if ev["message"]["kind"] != "system" {
            live.push(ev);
        }
    }
    for (ev, (name, id)) in live.iter().zip(want) {
        assert_eq!(ev["event"], name, "live event order: {ev}");
        assert_eq!(&ev["message"]["id"], id, "live event order: {ev}");
    }
    assert_consecutive(&seqs(&live), "created, created, updated, deleted");
    assert_eq!(live[2]["message"]["content"], "banana split");
    assert_eq!(
        live[3]["message"]["content"], "",
        "a deleted event carries a tombstone"
    );
    assert!(live[3]["message"]["attachment"].is_null());

    // Replayed the same way to a user resuming with `since` on node B.
    let mut u3 = user(&b, "u3", "Ute").await;
    let data = u3.join_since(&rid, since).await;
    assert_eq!(data["complete"], true, "{data}");
    let events = data["events"].as_array().expect("events").clone();
    assert_consecutive(&seqs(&events), "replayed events");
    let replayed: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"]["kind"] != "system")
        .collect();
    assert_eq!(replayed.len(), 4, "{data}");
    for (ev, (name, id)) in replayed.iter().zip(want) {
        assert_eq!(ev["event"], name, "replayed event order: {ev}");
        assert_eq!(&ev["message"]["id"], id, "replayed event order: {ev}");
    }
    assert_eq!(replayed[3]["message"]["content"], "", "replayed tombstone");

    // History and search see the current state.
    let history = u3.all_messages(&rid).await;
    let h1 = history
        .iter()
        .find(|m| m["id"] == m1["id"])
        .expect("edited message in history");
    assert_eq!(h1["content"], "banana split", "{h1}");
    assert!(h1["edited_at"].is_u64(), "{h1}");
    assert_eq!(h1["seq"], m1["seq"], "an edit keeps the message's seq");
    for m in history.iter().filter(|m| m["id"] == m2["id"]) {
        assert_eq!(
            m["deleted"], true,
            "a deleted message in history is a tombstone: {m}"
        );
        assert_eq!(m["content"], "", "a tombstone has no content: {m}");
    }
    for (query, expected) in [
        ("apple", vec![]),
        ("banana", vec![s(&m1, "id").to_string()]),
        ("cherry", vec![]),
    ] {
        let found = u3
            .ok(json!({"type": "message.search", "room": rid, "query": query}))
            .await;
        assert_eq!(
            ids(&found["messages"]),
            expected,
            "search {query:?} after edit and delete: {found}"
        );
    }
}
