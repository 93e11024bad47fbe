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
    Client, EVENT_TIMEOUT, Node, OP_CLOSE, OP_TEXT, RawClient, client_frame, guest, heavy, s, solo,
    try_http_get_at,
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

/// How a request to a draining node went.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The node answered with this status.
    Status(u16),
    /// The connection was refused, reset or left unanswered.
    Failed(String),
}

async fn probe(node: &Node, path: &str, headers: &str) -> Probe {
    match try_http_get_at(&node.addr.to_string(), path, headers).await {
        Ok((status, _)) => Probe::Status(status),
        Err(why) => Probe::Failed(why),
    }
}

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_answers_http_until_it_exits_and_a_non_reader_cannot_hold_it() {
    let _heavy = heavy(module_path!()).await;
    const GRACE: Duration = Duration::from_secs(3);
    let mut node = solo(&[
        "--drain-window",
        "100ms",
        "--shutdown-grace",
        "3s",
        "--ping-interval",
        "60s",
        "--idle-timeout",
        "60s",
        "--outbound-queue",
        "100000",
    ])
    .await;
    // A client that stops reading while ~8 MB of events, far more than the
    // socket buffers hold, are sent to it: its close can never be written.
    let mut owner = guest(&node, "owner").await;
    let room = owner.create_room("firehose", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut stuck = RawClient::connect(&node, Some(4096)).await;
    let hello = stuck
        .call(json!({"type": "hello", "name": "stuck"}), 1)
        .await;
    assert_eq!(hello["ok"], true, "{hello}");
    let join = stuck
        .call(json!({"type": "room.join", "room": rid}), 2)
        .await;
    assert_eq!(join["ok"], true, "{join}");
    let content = "x".repeat(4000);
    let frame = json!({"type": "message.send", "room": rid, "content": content}).to_string();
    for _ in 0..100 {
        for _ in 0..20 {
            owner.send_text(frame.clone()).await;
        }
        owner.ping().await;
    }
    assert_eq!(probe(&node, "/readyz", "").await, Probe::Status(200));

    let terminated = Instant::now();
    node.terminate();
    // Not ready at once (the signal itself takes a moment to land).
    loop {
        match probe(&node, "/readyz", "").await {
            Probe::Status(503) => break,
            Probe::Status(200) if terminated.elapsed() < Duration::from_secs(2) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("/readyz after SIGTERM: {other:?}"),
        }
    }
    // Until the process exits every probe is answered: not ready, alive,
    // metrics, and a new socket refused with 503.
    let expected = [
        ("/readyz", "", 503),
        ("/healthz", "", 200),
        ("/metrics", "", 200),
        ("/ws", UPGRADE, 503),
    ];
    let mut rounds = 0;
    let exit = 'probing: loop {
        for (path, headers, want) in expected {
            match probe(&node, path, headers).await {
                Probe::Status(got) => {
                    assert_eq!(got, want, "{path} while draining, round {rounds}");
                }
                Probe::Failed(why) => {
                    // Refused only because the process is on its way out.
                    let status = node.wait_exit(Duration::from_secs(2)).await;
                    assert!(
                        status.is_some(),
                        "{path} failed ({why}) {:?} after SIGTERM while the node still runs",
                        terminated.elapsed()
                    );
                    break 'probing status;
                }
            }
        }
        rounds += 1;
        if let Some(status) = node.wait_exit(Duration::ZERO).await {
            break 'probing Some(status);
        }
        assert!(
            terminated.elapsed() < GRACE + Duration::from_secs(3),
            "the node still runs {:?} after SIGTERM with a grace of {GRACE:?}",
            terminated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = terminated.elapsed();
    assert!(exit.is_some(), "the node exits");
    assert!(
        rounds >= 3,
        "the drain lasted while the stuck client held on: {rounds} rounds of probes in {took:?}"
    );
    assert!(
        took < GRACE + Duration::from_secs(2),
        "a client that reads nothing does not hold the node past the grace: {took:?}"
    );
    // The client that read along got its 1012.
    assert_eq!(owner.wait_close(EVENT_TIMEOUT).await, Some(1012));
}
