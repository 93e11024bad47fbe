//! The WebSocket transport around the protocol, on single memory-engine
//! nodes: frame size limits (1009), pings answered and closes echoed,
//! transport errors (1002), idle clients (1001), clients that stop reading
//! (1013), abusive senders (4008), and a first frame sent together with the
//! upgrade request. Each close spares the node's other clients.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    Client, EVENT_TIMEOUT, Node, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, QUIET, RawClient, guest,
    heavy, s, seq, solo,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_max_frame_bytes_closes_1009_and_spares_others() {
    let node = solo(&["--max-frame-bytes", "4096"]).await;
    let mut big = guest(&node, "big").await;
    let mut other = guest(&node, "other").await;
    let room = other.create_room("survivors", json!({})).await;
    let rid = s(&room, "id").to_string();
    big.join(&rid).await;

    // Under the limit: processed normally (extra fields aside).
    let pad = "p".repeat(3000);
    big.send_text(json!({"type": "ping", "id": 500, "pad": pad}).to_string())
        .await;
    let reply = big.wait_reply(500, &json!("3 KB ping")).await;
    assert_eq!(reply["id"], 500, "{reply}");

    let pad = "p".repeat(5000);
    // The server may close before the whole frame is written.
    let _ = big
        .try_send_text(json!({"type": "ping", "id": 501, "pad": pad}).to_string())
        .await;
    let code = big.wait_close(EVENT_TIMEOUT).await;
    assert_eq!(
        code,
        Some(1009),
        "a frame over --max-frame-bytes closes with 1009"
    );

    other.ping().await;
    let m = other.send_message(&rid, "still fine").await;
    let ev = other
        .wait_event("own message", EVENT_TIMEOUT, |e| {
            e["message"]["id"] == m["id"]
        })
        .await;
    assert_eq!(ev["event"], "message.created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_max_frame_bytes_is_65536() {
    let node = solo(&[]).await;
    let mut c = guest(&node, "default-limit").await;
    let mut other = guest(&node, "bystander").await;
    let pad = "p".repeat(60_000);
    c.send_text(json!({"type": "ping", "id": 600, "pad": pad}).to_string())
        .await;
    c.wait_reply(600, &json!("60 KB ping")).await;
    c.ping().await;
    let pad = "p".repeat(70_000);
    let _ = c
        .try_send_text(json!({"type": "ping", "id": 601, "pad": pad}).to_string())
        .await;
    assert_eq!(c.wait_close(EVENT_TIMEOUT).await, Some(1009), "70 KB frame");
    other.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_1001_and_ponging_clients_stay() {
    let node = solo(&["--ping-interval", "300ms", "--idle-timeout", "1200ms"]).await;
    // This client's reader answers the server's pings with pongs.
    let mut alive = guest(&node, "alive").await;
    // This one says hello, then reads nothing (so it sends no pong).
    let mut silent = RawClient::connect(&node, Some(4096)).await;
    let hello = silent
        .call(json!({"type": "hello", "name": "silent"}), 1)
        .await;
    assert_eq!(hello["ok"], true, "{hello}");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    alive.ping().await;
    let (_, code, ended) = silent.read_to_end(Duration::from_secs(5)).await;
    assert!(
        ended.is_some(),
        "a client silent past the idle timeout is closed"
    );
    assert_eq!(
        code,
        Some(1001),
        "idle close code (connection ended by {ended:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pings_are_answered_and_a_client_close_is_echoed() {
    let node = solo(&[]).await;
    let mut raw = RawClient::connect(&node, None).await;
    let hello = raw
        .call(json!({"type": "hello", "name": "pinger"}), 1)
        .await;
    assert_eq!(hello["ok"], true, "{hello}");

    raw.send_frame(OP_PING, b"are you there").await;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let pong = raw.next_frame(deadline).await;
    assert_eq!(
        pong,
        Ok(Some((OP_PONG, b"are you there".to_vec()))),
        "a ping is answered by a pong with its payload"
    );
    // The connection goes on serving requests after the control frames.
    let ping = raw.call(json!({"type": "ping"}), 2).await;
    assert_eq!(ping["ok"], true, "{ping}");

    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    raw.send_frame(OP_CLOSE, &close).await;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let echoed = raw.next_frame(deadline).await;
    let Ok(Some((OP_CLOSE, payload))) = echoed else {
        panic!("the server answers a close with a close, got {echoed:?}")
    };
    assert_eq!(&payload[..2], &1000u16.to_be_bytes(), "echoed close code");
    let after = raw.next_frame(deadline).await;
    assert!(
        matches!(after, Err(ref why) if why.contains("ended")),
        "the server hangs up after the close handshake, got {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_errors_close_1002_and_others_are_unaffected() {
    let node = solo(&[]).await;
    let mut bystander = guest(&node, "bystander").await;
    let mut raw = RawClient::connect(&node, None).await;
    let hello = raw
        .call(json!({"type": "hello", "name": "broken"}), 1)
        .await;
    assert_eq!(hello["ok"], true, "{hello}");
    // A final frame with the reserved opcode 0x3, masked, empty.
    raw.send_raw(&[0x83, 0x80, 1, 2, 3, 4]).await;
    let (_, code, ended) = raw.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(
        code,
        Some(1002),
        "a reserved opcode closes with 1002 (ended by {ended:?})"
    );
    bystander.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_closed_and_leaves_its_rooms() {
    // A client that stops reading in a quiet room: no stream of events
    // fills its queue, so only the write stall can end it.
    let node = solo(&["--ping-interval", "300ms", "--idle-timeout", "1500ms"]).await;
    let mut owner = guest(&node, "owner").await;
    let room = owner.create_room("big-history", json!({})).await;
    let rid = s(&room, "id").to_string();
    let content = "y".repeat(4000);
    for _ in 0..40 {
        owner.send_message(&rid, &content).await;
    }
    let mut stuck = RawClient::connect(&node, Some(4096)).await;
    let hello = stuck
        .call(json!({"type": "hello", "name": "stuck"}), 1)
        .await;
    assert_eq!(hello["ok"], true, "{hello}");
    let hello_user = hello["data"]["user"]["id"].clone();
    // Its join reply (40 messages of 4 KB) is far larger than the socket
    // buffers, and it never reads it.
    stuck
        .send_text(&json!({"type": "room.join", "id": 2, "room": rid}).to_string())
        .await;
    owner
        .wait_event("stuck joined", EVENT_TIMEOUT, |e| {
            e["event"] == "participant.joined" && e["user"]["id"] == hello_user
        })
        .await;
    owner
        .wait_event("stuck left", Duration::from_secs(15), |e| {
            e["event"] == "participant.left" && e["user"]["id"] == hello_user
        })
        .await;
    // 1001 when the kernel took the whole reply (it sends no pongs either),
    // 1013 when the write stalled for the idle timeout.
    let (_, code, ended) = stuck.read_to_end(Duration::from_secs(10)).await;
    assert!(
        matches!(code, Some(1001 | 1013)),
        "closed as idle or slow once it read again, got {code:?} (ended by {ended:?})"
    );
    owner.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_with_the_upgrade_request_is_answered() {
    // A client that does not wait for the 101 before its first frame: the
    // bytes after the request arrive in the server's HTTP read buffer.
    let node = solo(&[]).await;
    let hello = json!({"type": "hello", "id": 7, "name": "eager"}).to_string();
    let mut raw = RawClient::connect_with(&node, None, Some(&hello)).await;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let reply = raw.next_frame(deadline).await;
    let Ok(Some((OP_TEXT, payload))) = reply else {
        panic!("expected the hello reply, got {reply:?}")
    };
    let reply: Value = serde_json::from_slice(&payload).expect("JSON reply");
    assert_eq!(reply["id"], 7, "{reply}");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["data"]["user"]["name"], "eager", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_closed_and_others_are_unaffected() {
    let _heavy = heavy(module_path!()).await;
    const FLOOD: usize = 2000;
    let node = solo(&["--outbound-queue", "64"]).await;
    let mut sender = guest(&node, "flood").await;
    let room = sender.create_room("firehose", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut bystander = guest(&node, "bystander").await;
    bystander.join(&rid).await;
    let mut stalled = RawClient::connect(&node, Some(4096)).await;
    let hello = stalled
        .call(json!({"type": "hello", "name": "sleepy"}), 1)
        .await;
    assert_eq!(hello["ok"], true, "{hello}");
    let join = stalled
        .call(json!({"type": "room.join", "room": rid}), 2)
        .await;
    assert_eq!(join["ok"], true, "{join}");
    sender.drain_events(QUIET).await;
    bystander.drain_events(QUIET).await;

    // ~8 MB of events: far more than socket buffers plus a 64-frame queue.
    let content = "x".repeat(4000);
    let frame = json!({"type": "message.send", "room": rid, "content": content}).to_string();
    for batch in 0..FLOOD / 20 {
        for _ in 0..20 {
            sender.send_text(frame.clone()).await;
        }
        // Pace the flood so the readers keep up; a failure would show here.
        sender.ping().await;
        if batch % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // The bystander, who reads, gets every event in order.
    let mut last = None;
    for _ in 0..FLOOD {
        let ev = bystander.next_message_event(&rid).await;
        if let Some(prev) = last {
            assert_eq!(seq(&ev), prev + 1, "bystander's events stay in order");
        }
        last = Some(seq(&ev));
    }
    sender.ping().await;

    let (read, code, ended) = stalled.read_to_end(Duration::from_secs(10)).await;
    assert!(
        ended.is_some(),
        "the reader that stopped reading was never closed ({read} of {FLOOD} events read)"
    );
    assert!(
        read < FLOOD,
        "the server buffered all {FLOOD} events for a reader that did not read"
    );
    assert_eq!(
        code,
        Some(1013),
        "a full outbound queue closes with 1013 (connection ended by {ended:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_sender_is_closed_4008_after_10_s() {
    let node = Node::start(None, "solo", &["--rate-limit", "2", "--rate-burst", "2"]).await;
    let mut c = Client::connect(&node).await;
    c.hello("abuser").await;
    // 40 frames/s against a limit of 2/s: far above 5x the rate.
    let started = std::time::Instant::now();
    let ping = json!({"type": "ping"}).to_string();
    let code = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still open after 15 s of sending at 20x the rate"
        );
        if c.try_send_text(ping.clone()).await.is_err() {
            break c.wait_close(EVENT_TIMEOUT).await;
        }
        let closed = c.closed_with();
        // The refusals arrive as error frames (no id): rate_limited.
        while let Some(frame) = c.take_queued(|v| v["type"] == "error") {
            assert_eq!(frame["error"]["code"], "rate_limited", "{frame}");
        }
        if let Some(code) = closed {
            break code;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let elapsed = started.elapsed();
    assert_eq!(code, Some(4008), "abuse close code after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(9),
        "closed after only {elapsed:?}; the protocol allows 10 s of abuse"
    );
}
