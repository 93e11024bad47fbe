//! `huddle bench abuse` against real nodes started here: the report's
//! counts add up, refusals by the nodes' limits are seen and timed, Redis
//! growth is read, per-user limits are evaded with new guests (against a
//! stand-in node, until the real limits land) and non-local or unbounded
//! runs are refused.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{FAST, Node, RedisServer, count, huddle_bin, run_bench};

/// Runs `huddle bench abuse ARGS`.
async fn bench_abuse(args: &[&str]) -> (bool, Option<Value>, String) {
    run_bench("abuse", args, Duration::from_secs(90)).await
}

/// Error answers of a phase, by code.
fn errors(phase: &Value, code: &str) -> u64 {
    phase["errors"][code].as_u64().unwrap_or(0)
}

/// Every attempt is accounted for exactly once.
fn assert_accounted(phase: &Value, successes: u64) {
    let answered: u64 = phase["errors"]
        .as_object()
        .expect("errors")
        .values()
        .map(count)
        .sum();
    let closed: u64 = phase["closes"]
        .as_object()
        .expect("closes")
        .values()
        .map(count)
        .sum();
    assert_eq!(
        count(&phase["attempts"]),
        successes + answered + closed + count(&phase["failures"]),
        "{phase}"
    );
}

/// Node flags that take every limit out of the way: the raised
/// per-connection rate, and the per-minute abuse limits (0 = off) when this
/// build has them (PROTOCOL.md, version 1.1, "Abuse limits").
fn unlimited_flags() -> Vec<&'static str> {
    let help = std::process::Command::new(huddle_bin())
        .args(["serve", "--help"])
        .output()
        .expect("huddle serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let mut flags = FAST.to_vec();
    for limit in ["--room-create-per-min", "--code-miss-per-min"] {
        if help.contains(limit) {
            flags.extend([limit, "0"]);
        }
    }
    flags
}

#[tokio::test]
async fn without_limits_in_the_way_everything_is_counted() {
    let node = Node::start(None, "abuse-mem", &unlimited_flags()).await;
    let url = node.ws_url();
    let (ok, report, stderr) = bench_abuse(&[
        "--url",
        &url,
        "--connections",
        "3",
        "--duration",
        "1s",
        "--plant",
        "5",
    ])
    .await;
    assert!(ok, "{stderr}");
    let r = report.expect("a JSON line");
    assert_eq!(r["mode"], "abuse");

    let flood = &r["create_flood"];
    let created = count(&flood["rooms_created"]);
    assert!(created > 0, "{flood}");
    assert_eq!(count(&flood["accepted"]), created);
    assert_eq!(flood["errors"], serde_json::json!({}), "nothing refused");
    assert!(flood["first_refusal_ms"].is_null());
    assert_eq!(count(&flood["rooms_checked"]), created.min(1000));
    // Whether a left private room lives on is the server's policy (the
    // probe found it does); the count is bounded by what was asked.
    assert!(count(&flood["rooms_still_exist"]) <= count(&flood["rooms_checked"]));
    assert_accounted(flood, created);
    assert!(flood["redis"].is_null());

    let guess = &r["code_guess"];
    assert_eq!(count(&guess["planted"]), 5);
    let hits = count(&guess["hits"]);
    assert!(count(&guess["accepted"]) > 0, "{guess}");
    assert_eq!(
        count(&guess["accepted"]),
        hits + errors(guess, "not_found") + errors(guess, "forbidden") + errors(guess, "conflict"),
        "{guess}"
    );
    assert_eq!(errors(guess, "bad_request"), 0, "guesses are valid codes");
    assert!(guess["first_refusal_ms"].is_null(), "{guess}");
    assert_accounted(guess, hits);
    assert!(
        guess["mean_seconds_to_first_hit"]
            .as_f64()
            .expect("estimate")
            > 0.0
    );
    assert!(stderr.contains("== huddle bench abuse"), "{stderr}");
}

#[tokio::test]
async fn refusals_and_redis_growth_are_reported() {
    let redis = RedisServer::start().await;
    // The default per-connection rate (20/s, burst 40) refuses a flood.
    let node = Node::start(Some(&redis.url()), "abuse-redis", &[]).await;
    let url = node.ws_url();
    let (ok, report, stderr) = bench_abuse(&[
        "--url",
        &url,
        "--connections",
        "2",
        "--duration",
        "3s",
        "--plant",
        "3",
        "--redis-url",
        &redis.url(),
    ])
    .await;
    assert!(ok, "{stderr}");
    let r = report.expect("a JSON line");
    for phase in ["create_flood", "code_guess"] {
        let p = &r[phase];
        assert!(errors(p, "rate_limited") > 0, "{p}");
        let first = count(&p["first_refusal_ms"]);
        assert!(first < 3000, "{p}");
        let before = &p["redis"]["before"];
        let after = &p["redis"]["after"];
        assert!(
            count(&before["used_memory"]) > 0 && count(&before["keys"]) > 0,
            "{p}"
        );
        assert!(count(&after["keys"]) > 0, "{p}");
    }
    let flood = &r["create_flood"];
    let created = count(&flood["rooms_created"]);
    assert!(created > 0, "{flood}");
    assert_accounted(flood, created);
    // The flood's guests at least leave their session records.
    assert!(
        count(&flood["redis"]["after"]["keys"]) > count(&flood["redis"]["before"]["keys"]),
        "{flood}"
    );
    assert_accounted(&r["code_guess"], count(&r["code_guess"]["hits"]));
    // The figure agrees with Redis itself.
    let keys = match redis.command(&["DBSIZE"]).await {
        redis::Value::Int(k) => k as u64,
        other => panic!("DBSIZE answered {other:?}"),
    };
    assert!(keys >= count(&flood["redis"]["after"]["keys"]), "{keys}");
}

#[tokio::test]
async fn only_bounded_local_runs() {
    let (ok, report, stderr) = bench_abuse(&["--url", "ws://192.0.2.1:8080/ws"]).await;
    assert!(!ok && report.is_none());
    assert!(stderr.contains("not loopback"), "{stderr}");
    let (ok, _, stderr) = bench_abuse(&[
        "--url",
        "ws://127.0.0.1:9/ws",
        "--redis-url",
        "redis://10.1.2.3:6379",
    ])
    .await;
    assert!(!ok && stderr.contains("not loopback"), "{stderr}");
    let (ok, _, stderr) =
        bench_abuse(&["--url", "ws://127.0.0.1:9/ws", "--connections", "5000"]).await;
    assert!(!ok && stderr.contains("--connections"), "{stderr}");
    let (ok, _, stderr) = bench_abuse(&["--url", "ws://127.0.0.1:9/ws", "--duration", "1h"]).await;
    assert!(!ok && stderr.contains("--duration"), "{stderr}");
}

/// A stand-in node that speaks just enough of the protocol and applies the
/// version 1.1 per-user limits with tiny budgets: each guest (connection)
/// may create `CREATES` rooms and miss `MISSES` codes, then is
/// `rate_limited` for a minute. Returns its `ws://` URL.
async fn per_user_limited_node() -> String {
    const CREATES: u32 = 3;
    const MISSES: u32 = 2;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let (mut created, mut missed) = (0u32, 0u32);
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let Ok(req) = serde_json::from_str::<Value>(&text) else {
                        return;
                    };
                    let limited = json!({"code": "rate_limited", "message": "slow down",
                        "retry_after_ms": 60_000});
                    let answer = match req["type"].as_str() {
                        Some("hello") | Some("room.leave") => Ok(json!({})),
                        Some("room.create") if created < CREATES => {
                            created += 1;
                            Ok(json!({"room": {"id": format!("r{created}"), "code": "ABC234"}}))
                        }
                        Some("room.create") => Err(limited),
                        Some("room.join") if missed < MISSES => {
                            missed += 1;
                            Err(json!({"code": "not_found", "message": "no such code"}))
                        }
                        Some("room.join") => Err(limited),
                        Some("room.get") => Err(json!({"code": "forbidden", "message": "private"})),
                        _ => Err(json!({"code": "bad_request", "message": "?"})),
                    };
                    let reply = match answer {
                        Ok(data) => {
                            json!({"type": "reply", "id": req["id"], "ok": true, "data": data})
                        }
                        Err(error) => {
                            json!({"type": "reply", "id": req["id"], "ok": false, "error": error})
                        }
                    };
                    if ws
                        .send(Message::Text(reply.to_string().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn per_user_limits_are_met_with_new_guests_unless_patient() {
    let url = per_user_limited_node().await;
    let args = [
        "--url",
        &url,
        "--connections",
        "2",
        "--duration",
        "1s",
        "--plant",
        "0",
    ];
    let (ok, report, stderr) = bench_abuse(&args).await;
    assert!(ok, "{stderr}");
    let r = report.expect("a JSON line");
    let flood = &r["create_flood"];
    let fresh = count(&flood["fresh_guests"]);
    assert!(fresh > 0, "{flood}");
    assert_eq!(count(&flood["max_retry_after_ms"]), 60_000);
    // Each guest, first or new, got its 3 rooms; only the last one of each
    // connection may have been cut short by the deadline.
    let guests = 2 + fresh;
    let created = count(&flood["rooms_created"]);
    assert!(
        created <= 3 * guests && created >= 3 * (guests - 2),
        "{flood}"
    );
    assert_eq!(
        count(&flood["rooms_still_exist"]),
        count(&flood["rooms_checked"])
    );
    assert_accounted(flood, created);
    let guess = &r["code_guess"];
    assert!(count(&guess["fresh_guests"]) > 0, "{guess}");
    assert!(errors(guess, "not_found") >= 2 * (2 + count(&guess["fresh_guests"]) - 2));
    assert_accounted(guess, count(&guess["hits"]));

    let (ok, report, stderr) = bench_abuse(&[&args[..], &["--patient"]].concat()).await;
    assert!(ok, "{stderr}");
    let r = report.expect("a JSON line");
    for (phase, done) in [("create_flood", 3), ("code_guess", 2)] {
        let p = &r[phase];
        assert_eq!(count(&p["fresh_guests"]), 0, "{p}");
        assert_eq!(count(&p["accepted"]), 2 * done, "{p}");
        assert_eq!(
            count(&p["attempts"]),
            2 * (done + 1),
            "one refusal, then a wait: {p}"
        );
    }
}
