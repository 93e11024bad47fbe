//! Operating a node: configuration errors, connection cap, origin checks,
//! server pings, the REST history endpoint with JWT, session and activity
//! records, the janitor (dead nodes, idle rooms), and the health, readiness
//! and metrics endpoints (also while Redis is down or not there yet).

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{
    Client, EVENT_TIMEOUT, FAST, FAST_JANITOR, Node, RedisServer, guest, heavy, huddle_bin,
    mint_token, s, two_nodes_on_one_redis,
};

const SECRET: &str = "operations-secret-0123456789";

/// Runs `huddle serve ARGS` expecting it to refuse its configuration.
fn refused(args: &[&str]) -> String {
    let out = Command::new(huddle_bin())
        .arg("serve")
        .args(args)
        .env_remove("HUDDLE_REDIS")
        .output()
        .expect("run huddle");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(64),
        "bad config {args:?} must exit 64; stderr: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one clear line on stderr for {args:?}: {stderr:?}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {args:?}");
    stderr
}

#[test]
fn bad_configuration_is_one_line_and_exit_64() {
    assert!(refused(&["--redis", "http://127.0.0.1:6379"]).contains("redis://"));
    assert!(refused(&["--message-ttl", "5 parsecs"]).contains("message-ttl"));
    assert!(refused(&["--rate-limit", "20", "--rate-burst", "5"]).contains("rate-burst"));
    assert!(refused(&["--bind", "not-an-address"]).contains("bind"));
    assert!(refused(&["--no-such-flag"]).contains("no-such-flag"));
    assert!(refused(&["--jwt-secret", "short"]).contains("jwt-secret"));
    assert!(refused(&["--allowed-origins", "evil.example"]).contains("allowed-origins"));
    assert!(refused(&["--log-format", "xml"]).contains("log-format"));
    // A subcommand is required too.
    let out = Command::new(huddle_bin()).output().expect("run huddle");
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_says_so_in_its_log() {
    let node = Node::start(None, "solo", &[]).await;
    let (status, body) = node.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["engine"], "memory");
    let log = node.log_tail(50);
    assert!(
        log.contains("in-memory engine"),
        "the log says the node runs alone in memory:\n{log}"
    );
}

/// Sends a raw WebSocket upgrade request; returns the HTTP status.
async fn upgrade_status(node: &Node, extra_headers: &[(&str, &str)]) -> u16 {
    let mut tcp = TcpStream::connect(node.addr).await.expect("connect");
    let mut req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        node.addr
    );
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_answers_503_and_frees_slots() {
    let node = Node::start(None, "capped", &["--max-connections", "2"]).await;
    let mut a = Client::connect(&node).await;
    let mut b = Client::connect(&node).await;
    a.hello("A").await;
    b.hello("B").await;
    assert_eq!(
        upgrade_status(&node, &[]).await,
        503,
        "third socket refused"
    );
    let (status, _) = node.http_get("/healthz").await;
    assert_eq!(status, 200, "plain HTTP still served at the cap");
    drop(a);
    // The slot frees once the server has seen the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = upgrade_status(&node, &[]).await;
        if status == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "slot not freed: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused() {
    let node = Node::start(
        None,
        "origins",
        &["--allowed-origins", "https://chat.example.com"],
    )
    .await;
    let own = format!("http://{}", node.addr);
    assert_eq!(
        upgrade_status(&node, &[("Origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(upgrade_status(&node, &[("Origin", "null")]).await, 403);
    assert_eq!(
        upgrade_status(&node, &[("Origin", &own)]).await,
        101,
        "same origin"
    );
    assert_eq!(
        upgrade_status(&node, &[("Origin", "https://chat.example.com")]).await,
        101,
        "listed origin"
    );
    assert_eq!(
        upgrade_status(&node, &[]).await,
        101,
        "no Origin: not a browser"
    );
    let open = Node::start(None, "any", &["--allowed-origins", "*"]).await;
    assert_eq!(
        upgrade_status(&open, &[("Origin", "https://evil.example")]).await,
        101
    );
    let strict = Node::start(None, "default", &[]).await;
    assert_eq!(
        upgrade_status(&strict, &[("Origin", "https://evil.example")]).await,
        403,
        "by default only the node's own origin"
    );
    let (status, _) = strict.http_get("/ws").await;
    assert_eq!(status, 400, "a GET /ws that is not an upgrade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_idle_clients() {
    let node = Node::start(
        None,
        "pinger",
        &["--ping-interval", "200ms", "--idle-timeout", "5s"],
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .expect("connect");
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while pings < 3 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(other))) => panic!("unexpected frame {other:?}"),
            Ok(other) => panic!("socket ended: {other:?}"),
            Err(_) => {}
        }
    }
    assert!(pings >= 3, "saw {pings} pings in 3 s at a 200 ms interval");
    // Answering pings (tungstenite does) keeps the connection open.
    ws.send(Message::Text(
        r#"{"type":"hello","id":1,"name":"P"}"#.into(),
    ))
    .await
    .expect("send");
}

/// A plain GET with headers: (status, body).
async fn get(node: &Node, path: &str, headers: &[(&str, String)]) -> (u16, String) {
    let mut tcp = TcpStream::connect(node.addr).await.expect("connect");
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        node.addr
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_history_needs_a_token_and_participation_with_jwt() {
    let redis = RedisServer::start().await;
    let node = Node::start(Some(&redis.url()), "rest", &["--jwt-secret", SECRET]).await;
    let mut ann = Client::connect(&node).await;
    ann.hello_token(&mint_token(SECRET, "ann", "Ann"), "Ann")
        .await;
    let room = ann.create_room("rest", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    for i in 0..3 {
        ann.send_message(&rid, &format!("m{i}")).await;
    }
    let path = format!("/api/rooms/{rid}/messages?limit=2");
    let (status, body) = get(&node, &path, &[]).await;
    assert_eq!(status, 401, "no token: {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["error"]["code"],
        "unauthorized"
    );
    let (status, _) = get(
        &node,
        &path,
        &[("Authorization", "Bearer not.a.token".into())],
    )
    .await;
    assert_eq!(status, 401, "bad token");
    let bob = mint_token(SECRET, "bob", "Bob");
    let (status, body) = get(&node, &path, &[("Authorization", format!("Bearer {bob}"))]).await;
    assert_eq!(status, 403, "not a participant: {body}");
    let token = mint_token(SECRET, "ann", "Ann");
    let (status, body) = get(
        &node,
        &path,
        &[("Authorization", format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).expect("JSON");
    let ws = ann.history(&rid, None, Some(2)).await;
    assert_eq!(page["messages"], ws["messages"]);
    assert_eq!(page["has_more"], true);
    let (status, body) = get(
        &node,
        &format!("/api/rooms/{rid}/messages?limit=zero"),
        &[("Authorization", format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(
        &node,
        &format!("/api/rooms/{rid}/messages?limit=101"),
        &[("Authorization", format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 400, "limit out of range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_rest_history_is_open_for_public_rooms_only() {
    let node = Node::start(None, "guest-rest", &[]).await;
    let mut ann = Client::connect(&node).await;
    ann.hello("Ann").await;
    let public = ann.create_room("open", json!({})).await;
    let secret = ann.create_room("closed", json!({"private": true})).await;
    let (status, body) = node
        .http_get(&format!(
            "/api/rooms/{}/messages",
            public["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node
        .http_get(&format!(
            "/api/rooms/{}/messages",
            secret["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(
        status, 403,
        "a private room's history needs its code: {body}"
    );
    let (status, _) = node.http_get("/api/rooms/a%7Db/messages").await;
    assert_eq!(status, 400, "malformed room id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_activity_are_recorded_in_redis() {
    let redis = RedisServer::start().await;
    let node = Node::start(Some(&redis.url()), "rec", &["--session-ttl", "1h"]).await;
    let client = redis::Client::open(redis.url()).expect("client");
    let mut r = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut ann = Client::connect(&node).await;
    let hello = ann.ok(json!({"type": "hello", "name": "Ann"})).await;
    let conn = hello["session"].as_str().expect("session").to_string();
    let uid = hello["user"]["id"].as_str().expect("user").to_string();
    let room = ann.create_room("rec", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    ann.send_message(&rid, "one").await;
    ann.send_message(&rid, "two").await;

    let session: std::collections::HashMap<String, String> = r
        .hgetall(format!("huddle:session:{conn}"))
        .await
        .expect("session");
    assert!(session["user"].contains(&uid), "{session:?}");
    assert_eq!(session["node"], "rec");
    let ttl: i64 = r.pttl(format!("huddle:session:{conn}")).await.expect("ttl");
    assert!(
        ttl > 3_500_000 && ttl <= 3_600_000,
        "session TTL is --session-ttl: {ttl}"
    );
    let mine: Vec<String> = r
        .smembers(format!("huddle:user_sessions:{uid}"))
        .await
        .expect("set");
    assert_eq!(mine, vec![conn.clone()]);
    let rooms: Vec<String> = r
        .smembers(format!("huddle:session_rooms:{conn}"))
        .await
        .expect("set");
    assert_eq!(rooms, vec![rid.clone()]);

    drop(ann);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exists: bool = r
            .exists(format!("huddle:session:{conn}"))
            .await
            .expect("exists");
        if !exists {
            break;
        }
        assert!(Instant::now() < deadline, "session removed on disconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let activity: std::collections::HashMap<String, u64> = r
        .hgetall(format!("huddle:activity:{uid}"))
        .await
        .expect("activity");
    assert_eq!(activity.get("messages"), Some(&2), "{activity:?}");
    assert!(activity.get("last_seen").is_some_and(|t| *t > 0));
    // A guest's record is gone with the session TTL, not kept 30 days.
    let ttl: i64 = r.pttl(format!("huddle:activity:{uid}")).await.expect("ttl");
    assert!(
        ttl > 0 && ttl <= 3_600_000,
        "a guest's activity lives no longer than --session-ttl: {ttl}"
    );
    let presence: Vec<String> = r
        .zrange(format!("huddle:presence:{{{rid}}}"), 0, -1)
        .await
        .expect("zset");
    assert!(presence.is_empty(), "presence cleared: {presence:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_leave_and_its_sessions_are_removed() {
    let redis = RedisServer::start().await;
    let mut args = FAST.to_vec();
    args.extend(FAST_JANITOR);
    let a = Node::start(Some(&redis.url()), "a", &args).await;
    let mut b = Node::start(Some(&redis.url()), "b", &args).await;
    let mut ann = Client::connect(&a).await;
    ann.hello("Ann").await;
    let room = ann.create_room("wake", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    let mut bob = Client::connect(&b).await;
    let hello = bob.ok(json!({"type": "hello", "name": "Bob"})).await;
    let bob_id = hello["user"]["id"].as_str().expect("id").to_string();
    let bob_conn = hello["session"].as_str().expect("session").to_string();
    bob.join(&rid).await;
    ann.wait_event("bob joined", EVENT_TIMEOUT, |e| {
        e["event"] == "participant.joined"
    })
    .await;

    b.kill();
    // Both the durable "left" message and the ephemeral participant.left,
    // in whichever order they arrive.
    let (mut left, mut note) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while left.is_none() || note.is_none() {
        let left_in = deadline.saturating_duration_since(Instant::now());
        let Some(ev) = ann.next_event(left_in).await else {
            panic!("within 10 s of bob's node dying: left {left:?}, note {note:?}");
        };
        if ev["event"] == "participant.left" && ev["user"]["id"] == bob_id.as_str() {
            left = Some(ev);
        } else if ev["event"] == "message.created" && ev["message"]["kind"] == "system" {
            note = Some(ev);
        }
    }
    assert_eq!(left.expect("left")["room"], rid.as_str());
    assert_eq!(note.expect("note")["message"]["content"], "Bob left");
    let got = ann.ok(json!({"type": "room.get", "room": rid})).await;
    assert_eq!(got["room"]["participant_count"], 1);

    let client = redis::Client::open(redis.url()).expect("client");
    let mut r = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let exists: bool = r
        .exists(format!("huddle:session:{bob_conn}"))
        .await
        .expect("exists");
    assert!(!exists, "the dead node's session is gone");
    let nodes: Vec<String> = r.zrange("huddle:nodes", 0, -1).await.expect("nodes");
    assert!(
        nodes.iter().all(|n| !n.starts_with("b/")),
        "dead instance forgotten: {nodes:?}"
    );
    assert!(
        nodes.iter().any(|n| n.starts_with("a/")),
        "live one kept: {nodes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_empty_rooms_are_closed() {
    let redis = RedisServer::start().await;
    let node = Node::start(
        Some(&redis.url()),
        "idle",
        &[
            "--room-idle-ttl",
            "1s",
            "--janitor-interval",
            "200ms",
            "--heartbeat-interval",
            "200ms",
            "--node-timeout",
            "1s",
        ],
    )
    .await;
    let mut ann = Client::connect(&node).await;
    ann.hello("Ann").await;
    let quiet = ann.create_room("quiet", json!({})).await;
    let busy = ann.create_room("busy", json!({})).await;
    ann.ok(json!({"type": "room.leave", "room": quiet["id"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ann.expect_err(
        json!({"type": "room.get", "room": quiet["id"]}),
        "not_found",
    )
    .await;
    ann.expect_err(
        json!({"type": "room.join", "code": quiet["code"]}),
        "not_found",
    )
    .await;
    // Ann is still connected to the other: it stays.
    let kept = ann
        .ok(json!({"type": "room.get", "room": busy["id"]}))
        .await;
    assert_eq!(kept["room"]["name"], "busy");
    let list = ann.ok(json!({"type": "room.list"})).await;
    let names: Vec<&str> = list["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["busy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_are_logged_once_with_the_correlation_id_the_client_sees() {
    let redis = RedisServer::start().await;
    let node = Node::start(Some(&redis.url()), "logs", &["--log-format", "json"]).await;
    let mut ann = Client::connect(&node).await;
    ann.hello("Ann").await;
    let room = ann.create_room("corrupt", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    let m = ann.send_message(&rid, "fine").await;
    let mid = m["id"].as_str().expect("id").to_string();
    let client = redis::Client::open(redis.url()).expect("client");
    let mut r = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let () = r
        .set(
            format!("huddle:message:{{{rid}}}:{mid}"),
            b"\x01garbage".as_slice(),
        )
        .await
        .expect("corrupt a record");
    let err = ann
        .expect_err(json!({"type": "message.history", "room": rid}), "internal")
        .await;
    let message = err["message"].as_str().expect("message");
    let correlation = message
        .split("correlation id ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no correlation id in {message:?}"));
    assert!(
        !message.contains("garbage") && !message.contains("envelope"),
        "no internals shown: {message}"
    );
    ann.ping().await;
    // The log is JSON, one object per line, and names the same id once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = node.log_tail(400);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let hits: Vec<&Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(correlation))
        .collect();
    assert_eq!(hits.len(), 1, "logged once: {hits:?}");
    assert_eq!(hits[0]["level"], "ERROR", "{}", hits[0]);
    assert!(
        hits[0]["span"]["verb"] == "message.history"
            || hits[0].to_string().contains("message.history"),
        "the request span is in the line: {}",
        hits[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_redis_and_becomes_ready_when_it_comes() {
    let _heavy = heavy(module_path!()).await;
    let mut redis = RedisServer::start().await;
    redis.kill();
    // Kubernetes may start the pods before Redis: start, but not ready.
    let node = Node::start(Some(&redis.url()), "early", &[]).await;
    let (status, body) = node.http_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(node.http_get("/healthz").await.0, 200, "alive all the same");
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.http_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "ready once Redis answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = Client::connect(&node).await;
    c.hello("late").await;
    let room = c.create_room("late", json!({})).await;
    c.send_message(room["id"].as_str().expect("id"), "works")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_report_health_readiness_and_metrics() {
    let _heavy = heavy(module_path!()).await;
    let (mut redis, a, b) = two_nodes_on_one_redis(FAST).await;
    for node in [&a, &b] {
        let (status, _) = node.http_get("/healthz").await;
        assert_eq!(status, 200, "/healthz on {}", node.node_id);
        let (status, body) = node.http_get("/readyz").await;
        assert_eq!(
            status, 200,
            "/readyz on {} with Redis up: {body}",
            node.node_id
        );
        assert!(
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v.is_object()),
            "/readyz answers a JSON report: {body:?}"
        );
    }
    // Some traffic, then metrics.
    let mut c = guest(&a, "metered").await;
    let room = c.create_room("metrics", json!({})).await;
    c.send_message(s(&room, "id"), "count me").await;
    let (status, body) = a.http_get("/metrics").await;
    assert_eq!(status, 200, "/metrics");
    assert!(
        body.contains("huddle_"),
        "metrics are prefixed huddle_: {body}"
    );

    // Redis goes away: readiness turns 503, liveness stays 200.
    redis.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = b.http_get("/readyz").await;
        if status == 503 {
            assert!(
                serde_json::from_str::<Value>(&body).is_ok_and(|v| v.is_object()),
                "503 /readyz still carries the JSON report: {body:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still {status} 10 s after Redis died: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = b.http_get("/healthz").await;
    assert_eq!(status, 200, "/healthz stays 200 while the process runs");
}
