//! Closes the server starts reach the client with their code, and a
//! draining node stays honest: a client still sending when it is closed
//! (a flood past the rate limit, a frame over the size limit followed by
//! more) reads its close code instead of a reset (1006); during a drain
//! `/readyz` says 503 at once while `/healthz`, `/readyz` and `/metrics`
//! answer until the process exits and only new sockets are refused; a
//! client that reads nothing does not keep the node past
//! `--shutdown-grace`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{
    Client, EVENT_TIMEOUT, Node, OP_CLOSE, OP_TEXT, RawClient, client_frame, guest, heavy, solo,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_reads_4008_not_a_reset() {
    let _heavy = heavy(module_path!()).await;
    let node = Node::start(None, "flood", &["--rate-limit", "2", "--rate-burst", "2"]).await;
    let mut c = Client::connect(&node).await;
    c.hello("flooder").await;
    // As fast as the socket takes them, never waiting for an answer: the
    // server stops reading this client at the close and must not reset it.
    let ping = json!({"type": "ping"}).to_string();
    let started = Instant::now();
    let mut sent = 0u64;
    let code = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still open after 20 s of flooding ({sent} frames)"
        );
        if c.try_send_text(ping.clone()).await.is_err() {
            break c.wait_close(EVENT_TIMEOUT).await;
        }
        sent += 1;
        if sent.is_multiple_of(64) {
            while c.take_queued(|v| v["type"] == "error").is_some() {}
            if let Some(code) = c.closed_with() {
                break code;
            }
            // Let the reader task keep up with the refusals.
            tokio::task::yield_now().await;
        }
    };
    assert_eq!(
        code,
        Some(4008),
        "a client flooding past the rate limit reads 4008 after {:?} and {sent} frames \
         (None: the connection was reset, a 1006 in a browser)",
        started.elapsed()
    );
}

/// What a raw client read in `for_at_most`: `Ok(Some(code))` at a close
/// frame, `Ok(None)` when nothing more came, `Err` when the connection
/// ended without a close frame (a reset, 1006 in a browser).
async fn read_for(raw: &mut RawClient, for_at_most: Duration) -> Result<Option<u16>, String> {
    let deadline = tokio::time::Instant::now() + for_at_most;
    loop {
        match raw.next_frame(deadline).await? {
            None => return Ok(None),
            Some((OP_CLOSE, payload)) => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                return Ok(code);
            }
            Some(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_that_reads_now_and_then_reads_4008_not_a_reset() {
    let _heavy = heavy(module_path!()).await;
    let node = Node::start(None, "flood", &["--rate-limit", "2", "--rate-burst", "2"]).await;
    // A small receive buffer: the refusals fill it between two reads, so
    // the close frame may wait in the server's send buffer when it closes.
    let mut raw = RawClient::connect(&node, Some(4096)).await;
    let hello = raw
        .call(json!({"type": "hello", "name": "flooder"}), 1)
        .await;
    assert_eq!(hello["ok"], true, "{hello}");
    let ping = client_frame(OP_TEXT, json!({"type": "ping"}).to_string().as_bytes());
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let started = Instant::now();
    let outcome = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still open after 20 s of flooding"
        );
        // 100 frames every ~100 ms: 50 times the rate limit.
        if let Err(why) = raw.try_send_raw(&burst, Duration::from_secs(2)).await {
            // The server is gone or stopped reading: what did it say?
            break read_for(&mut raw, Duration::from_secs(5))
                .await
                .map_err(|e| format!("{e} (after a send that failed: {why})"));
        }
        // A slow reader: a glance every 100 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        match read_for(&mut raw, Duration::from_millis(5)).await {
            Ok(None) => {}
            done => break done,
        }
    };
    assert_eq!(
        outcome,
        Ok(Some(4008)),
        "a flooding client reads 4008 after {:?}, not a reset",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_sent_mid_stream_reads_1009_not_a_reset() {
    let node = solo(&["--max-frame-bytes", "4096"]).await;
    let mut bystander = guest(&node, "bystander").await;
    let mut raw = RawClient::connect(&node, None).await;
    let hello = raw.call(json!({"type": "hello", "name": "big"}), 1).await;
    assert_eq!(hello["ok"], true, "{hello}");
    // One write: a few requests, 1 MB in one frame, more requests behind
    // it. The server stops at the big frame's header; the rest is in
    // flight when it closes.
    let ping = json!({"type": "ping"}).to_string();
    let mut burst = Vec::new();
    for _ in 0..3 {
        burst.extend_from_slice(&client_frame(OP_TEXT, ping.as_bytes()));
    }
    let pad = "p".repeat(1 << 20);
    let big = json!({"type": "ping", "id": 2, "pad": pad}).to_string();
    burst.extend_from_slice(&client_frame(OP_TEXT, big.as_bytes()));
    for _ in 0..100 {
        burst.extend_from_slice(&client_frame(OP_TEXT, ping.as_bytes()));
    }
    let sent = raw.try_send_raw(&burst, Duration::from_secs(5)).await;
    let (_, code, ended) = raw.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(
        code,
        Some(1009),
        "an oversized frame mid-stream reads its close code \
         (the send: {sent:?}; the connection ended by {ended:?})"
    );
    bystander.ping().await;
}
