//! `huddle bench storm` at a tiny size against three real nodes started
//! here: the victim is killed, its clients come back on the others within
//! the target, nothing is lost or announced; resumes cut short are
//! completed from history; when clients come back too late (after the dead
//! node's sessions expire) the report says so; and runs that cannot work
//! (no secret, victim or survivor; more sockets a worker than files a
//! process may open) are refused.

use std::time::Duration;

use serde_json::Value;

use crate::common::{Backend, FAST, Node, count, heavy, huddle_bin, run_bench};

const SECRET: &str = "bench-storm-secret-0123456789";

/// Runs `huddle bench storm ARGS`.
async fn bench_storm(args: &[&str]) -> (bool, Option<Value>, String) {
    run_bench("storm", args, Duration::from_secs(120)).await
}

/// Three nodes whose dead sessions expire `node_timeout` after a kill,
/// with `extra` flags.
async fn three_nodes(node_timeout: &str, extra: &[&str]) -> (Backend, Vec<Node>) {
    let backend = Backend::start().await;
    let mut args = FAST.to_vec();
    args.extend([
        "--jwt-secret",
        SECRET,
        "--heartbeat-interval",
        "200ms",
        "--node-timeout",
        node_timeout,
        "--janitor-interval",
        "200ms",
    ]);
    args.extend(extra);
    let mut nodes = Vec::new();
    for id in ["victim", "s1", "s2"] {
        nodes.push(backend.node(id, &args).await);
    }
    (backend, nodes)
}

/// The storm's flags against `nodes` (the first is the victim), each room
/// getting `send_rate` messages a second.
fn storm_args(nodes: &[Node], pid: &str, send_rate: &str) -> Vec<String> {
    let mut args = Vec::new();
    for node in nodes {
        args.extend(["--url".to_owned(), node.ws_url()]);
    }
    args.extend(
        [
            "--victim-pid",
            pid,
            "--jwt-secret",
            SECRET,
            "--connections",
            "60",
            "--rooms",
            "3",
            "--workers",
            "2",
            "--send-rate",
            send_rate,
            "--quiet",
            "1s",
        ]
        .map(str::to_owned),
    );
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_storm_meets_the_target() {
    let _heavy = heavy(module_path!()).await;
    let (_backend, nodes) = three_nodes("5s", &[]).await;
    let pid = nodes[0].pid().expect("running").to_string();
    let mut args = storm_args(&nodes, &pid, "4");
    // Past the node timeout and the janitor: a leave would be seen.
    args.extend(["--reconnect-spread", "1s", "--observe", "7s"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, report, stderr) = bench_storm(&args).await;
    assert!(ok, "{stderr}");
    let r = report.expect("a JSON line");
    assert_eq!(r["mode"], "storm");
    assert_eq!((count(&r["clients"]), count(&r["joined"])), (60, 60), "{r}");
    assert_eq!(count(&r["victim_clients"]), 30, "half of them: {r}");
    assert_eq!(count(&r["resumed"]), 30, "{r}");
    assert_eq!(count(&r["resumed_within_10s"]), 30, "{r}");
    assert!(count(&r["resume_ms"]["max"]) < 10_000, "{r}");
    assert_eq!(count(&r["unexpected_drops"]), 0, "{r}");
    assert!(count(&r["acked"]) > 0, "{r}");
    assert_eq!(count(&r["verified"]), 60, "{r}");
    assert_eq!(count(&r["messages_lost"]), 0, "{r}");
    assert_eq!(count(&r["duplicates"]), 0, "{r}");
    let a = &r["announcements"];
    for kind in [
        "participant_joined",
        "participant_left",
        "participants_changed",
        "system_messages",
    ] {
        assert_eq!(count(&a[kind]), 0, "{kind}: {r}");
    }
    assert_eq!(r["target_met"], true, "{r}");
    assert!(
        nodes[0].pid().is_some_and(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| s.contains(") Z"))
        }),
        "the victim is dead"
    );
    assert!(stderr.contains("== huddle bench storm"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_back_after_their_sessions_expired_are_reported() {
    let _heavy = heavy(module_path!()).await;
    let (_backend, nodes) = three_nodes("1s", &[]).await;
    let pid = nodes[0].pid().expect("running").to_string();
    let mut args = storm_args(&nodes, &pid, "4");
    // The first try comes after the dead node's sessions expired (1 s):
    // their users are announced as leaving, and some are not back in the
    // 4 s watched.
    args.extend(["--reconnect-spread", "8s", "--observe", "4s"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, report, stderr) = bench_storm(&args).await;
    assert!(ok, "{stderr}");
    let r = report.expect("a JSON line");
    assert_eq!(r["target_met"], false, "{r}");
    let a = &r["announcements"];
    assert!(
        count(&a["participant_left"]) + count(&a["system_messages"]) > 0,
        "leaves announced: {r}"
    );
    assert!(a["users"].as_array().is_some_and(|u| !u.is_empty()), "{r}");
    assert!(count(&r["not_resumed"]) > 0, "{r}");
    assert_eq!(
        count(&r["resumed"]) + count(&r["not_resumed"]),
        30,
        "every victim client is counted once: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_cut_short_are_completed_from_history() {
    let _heavy = heavy(module_path!()).await;
    // A resume returns at most 3 events; at 20 messages a second per room
    // every client that is away for more than a fraction of a second
    // misses more, and pages the rest with `message.history`.
    let (_backend, nodes) = three_nodes("5s", &["--resume-max-events", "3"]).await;
    let pid = nodes[0].pid().expect("running").to_string();
    let mut args = storm_args(&nodes, &pid, "20");
    args.extend(["--reconnect-spread", "1500ms", "--observe", "3s"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, report, stderr) = bench_storm(&args).await;
    assert!(ok, "{stderr}");
    let r = report.expect("a JSON line");
    assert_eq!(count(&r["resumed"]), 30, "{r}");
    assert!(count(&r["incomplete_resumes"]) > 0, "{r}");
    assert!(
        count(&r["history_pages"]) >= count(&r["incomplete_resumes"]),
        "{r}"
    );
    assert_eq!(count(&r["verified"]), 60, "{r}");
    assert_eq!(count(&r["messages_lost"]), 0, "{r}");
    assert_eq!(count(&r["duplicates"]), 0, "{r}");
}

#[tokio::test]
async fn a_storm_needs_a_secret_a_victim_and_a_survivor() {
    let (ok, _, stderr) = bench_storm(&["--url", "ws://127.0.0.1:9/ws"]).await;
    assert!(!ok && stderr.contains("--jwt-secret"), "{stderr}");
    let (ok, _, stderr) =
        bench_storm(&["--url", "ws://127.0.0.1:9/ws", "--jwt-secret", SECRET]).await;
    assert!(!ok && stderr.contains("surviving node"), "{stderr}");
    let two = [
        "--url",
        "ws://127.0.0.1:9/ws",
        "--url",
        "ws://127.0.0.1:10/ws",
        "--jwt-secret",
        SECRET,
    ];
    let (ok, _, stderr) = bench_storm(&two).await;
    assert!(!ok && stderr.contains("--victim-pid"), "{stderr}");

    // More clients a worker than a process may open files.
    let me = std::process::id().to_string();
    let out = tokio::process::Command::new("sh")
        .args(["-c", "ulimit -n 300 && exec \"$0\" \"$@\"", huddle_bin()])
        .args(["bench", "storm"])
        .args(two)
        .args([
            "--victim-pid",
            &me,
            "--connections",
            "1000",
            "--workers",
            "1",
        ])
        .env_remove("HUDDLE_JWT_SECRET")
        .output()
        .await
        .expect("run huddle bench storm under ulimit -n 300");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("may open 300 files") && stderr.contains("--workers"),
        "{stderr}"
    );
}
