//! The listening socket: its accept backlog, sized for reconnection storms.

use crate::common::*;

/// The backlog the kernel reports for the listening socket on `port`
/// (`ss`: Send-Q of a listening socket is its backlog).
fn backlog_of(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss (iproute2): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("ss shows no listener on {port}: {text:?}"));
    // State Recv-Q Send-Q Local Peer
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("unreadable ss line: {line:?}"))
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_backlog_is_what_was_asked_within_the_kernel_cap() {
    let asked = 777;
    let node = solo(&["--accept-backlog", &asked.to_string()]).await;
    assert_eq!(backlog_of(node.addr.port()), asked.min(somaxconn()));
    let default = solo(&[]).await;
    assert_eq!(
        backlog_of(default.addr.port()),
        8192u32.min(somaxconn()),
        "the default asks for 8192"
    );
}

#[tokio::test]
async fn a_zero_backlog_is_refused_with_a_clear_error() {
    let out = std::process::Command::new(huddle_bin())
        .args(["serve", "--bind", "127.0.0.1:0", "--accept-backlog", "0"])
        .output()
        .expect("run huddle");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--accept-backlog must be greater than zero"),
        "{err}"
    );
}
