//! The `huddle` command line: the subcommands and the arguments of every
//! subcommand but `serve`, whose settings are the library's `Config` (its
//! flags are defined on its fields, beside their defaults).
//!
//! The flag names are an interface: container health checks, scripts and
//! programs outside this repository run these commands.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use huddle::Config;
use huddle::config::parse_duration;

/// Huddle: a horizontally scaled chat server.
#[derive(Debug, Parser)]
#[command(name = "huddle", version, about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node.
    Serve(Box<Config>),
    /// Print a signed HS256 token for development.
    Token(TokenArgs),
    /// Check a node's health endpoint: exit 0 on HTTP 200, 1 otherwise (for
    /// container health checks; no curl needed).
    Health(HealthArgs),
    /// Generate load against running nodes and report what they carried.
    Bench(Box<BenchArgs>),
}

/// What `huddle bench` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchMode {
    /// Senders at a fixed aggregate rate; everyone measures latency.
    Fanout,
    /// Each sender keeps `--window` messages in flight.
    Saturate,
    /// Open `--connections` idle connections and hold them.
    Connections,
    /// Repeat the abuse probe (room-creation flood, then code guessing)
    /// against nodes on this machine and report what got through.
    Abuse,
    /// Kill -9 one node (`--victim-pid`) under `--connections` clients
    /// (default 20,000) and measure how they reconnect and resume on the
    /// others: time, lost messages, spurious join/leave announcements.
    Storm,
}

/// Arguments of `huddle bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// The load to generate.
    #[arg(value_enum)]
    pub(crate) mode: BenchMode,
    /// WebSocket URL of a node (`ws://HOST:PORT/ws`); repeat for several.
    #[arg(long, required = true)]
    pub(crate) url: Vec<String>,
    /// Rooms (default 10; `storm`: 100).
    #[arg(long)]
    pub(crate) rooms: Option<usize>,
    /// Clients per room (senders included), spread over the URLs.
    #[arg(long, default_value_t = 20)]
    pub(crate) clients: usize,
    /// Senders per room.
    #[arg(long, default_value_t = 2)]
    pub(crate) senders: usize,
    /// Messages per second, all senders together (`fanout`).
    #[arg(long, default_value_t = 1000)]
    pub(crate) rate: u64,
    /// Messages in flight per sender (`saturate`).
    #[arg(long, default_value_t = 16)]
    pub(crate) window: usize,
    /// Connections to open (`connections`: default 1000), attacking
    /// guests per phase (`abuse`: default 10, at most 200), or clients in
    /// all (`storm`: default 20,000, spread over `--rooms`).
    #[arg(long)]
    pub(crate) connections: Option<usize>,
    /// `connections`, `storm`: open connections at this rate (per second),
    /// as a crowd arriving; the report's latency is then each connection's
    /// connect + hello + join time. Default: as fast as 200 at a time go.
    #[arg(long)]
    pub(crate) join_rate: Option<f64>,
    /// Length of the measured run (or of holding connections).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Sending before latency is recorded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// PIDs of the server processes (nodes, Redis) whose CPU and memory to
    /// report; repeat for several.
    #[arg(long)]
    pub(crate) server_pid: Vec<u32>,
    /// `abuse`: the nodes' Redis (loopback only), to report its
    /// `used_memory` and `DBSIZE` before and after each phase.
    #[arg(long)]
    pub(crate) redis_url: Option<String>,
    /// `abuse`: real private rooms to create before guessing codes, so
    /// that hits can happen and be counted.
    #[arg(long, default_value_t = 20)]
    pub(crate) plant: usize,
    /// `abuse`: the live room count for the "mean time to a first hit"
    /// estimate (default: the 3,800 rooms of the issue-15 probe).
    #[arg(long, default_value_t = 3800)]
    pub(crate) live_rooms: u64,
    /// `abuse`: wait out every `retry_after_ms` instead of reconnecting as
    /// a new guest when a per-user limit refuses.
    #[arg(long)]
    pub(crate) patient: bool,
    /// `storm`: the HS256 secret the nodes were started with; the clients
    /// sign their own tokens so that a reconnecting client is the same user.
    #[arg(long, env = "HUDDLE_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// `storm`: the URL of the node to kill (default: the first `--url`).
    #[arg(long)]
    pub(crate) victim_url: Option<String>,
    /// `storm`: the PID of that node, killed with SIGKILL.
    #[arg(long)]
    pub(crate) victim_pid: Option<u32>,
    /// `storm`: the share of the clients that start on the victim.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) victim_share: f64,
    /// `storm`: client processes (each holds its share of the sockets, as
    /// one process may not open 20,000 files). Default: one per 8,000
    /// clients.
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// `storm`: messages per second per room, sent by one sender per room
    /// on a surviving node for the whole run.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) send_rate: f64,
    /// `storm`: a dropped client's first reconnection is spread uniformly
    /// over this (as the web client does); later ones back off.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) reconnect_spread: Duration,
    /// `storm`: the pause between "everyone joined" and the kill.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) quiet: Duration,
    /// `storm`: how long to watch after the kill, for late resumes and for
    /// leave announcements when the dead node's sessions expire (keep it
    /// above the nodes' `--node-timeout` plus `--janitor-interval`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) observe: Duration,
    /// Internal: run as one of `storm`'s client processes, reading its plan
    /// from stdin.
    #[arg(long, hide = true)]
    pub(crate) worker: bool,
}

impl BenchArgs {
    /// `--rooms`, or the mode's default.
    pub(crate) fn rooms_or(&self, default: usize) -> usize {
        self.rooms.unwrap_or(default)
    }
}

/// Arguments of `huddle health`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HealthArgs {
    /// The `http://` URL to GET.
    #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
    pub(crate) url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

/// Arguments of `huddle token`.
#[derive(Debug, Clone, Args)]
pub(crate) struct TokenArgs {
    /// The HS256 secret the nodes use.
    #[arg(long, env = "HUDDLE_JWT_SECRET", hide_env_values = true)]
    pub(crate) secret: String,
    /// The user id.
    #[arg(long)]
    pub(crate) sub: String,
    /// Display name claim.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Avatar URL claim.
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub(crate) ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_reads_the_library_config() {
        let cli = Cli::try_parse_from([
            "huddle",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--node-id",
            "n1",
            "--redis-timeout-ms",
            "300",
        ])
        .expect("parses");
        let Command::Serve(c) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(c.node_id.as_deref(), Some("n1"));
        assert_eq!(c.redis_timeout, Duration::from_millis(300));
        assert!(Cli::try_parse_from(["huddle", "serve", "--message-ttl", "x"]).is_err());
    }

    #[test]
    fn storm_flags_parse_with_their_defaults() {
        let cli = Cli::try_parse_from([
            "huddle",
            "bench",
            "storm",
            "--url",
            "ws://a/ws",
            "--url",
            "ws://b/ws",
            "--victim-pid",
            "42",
            "--jwt-secret",
            "s",
        ])
        .expect("parses");
        let Command::Bench(b) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(b.mode, BenchMode::Storm);
        assert_eq!(
            (b.victim_pid, b.jwt_secret.as_deref()),
            (Some(42), Some("s"))
        );
        assert_eq!(
            (b.rooms_or(100), b.connections, b.workers),
            (100, None, None)
        );
        assert_eq!((b.victim_share, b.send_rate, b.worker), (0.5, 1.0, false));
        assert_eq!(
            (b.reconnect_spread, b.quiet, b.observe),
            (
                Duration::from_secs(2),
                Duration::from_secs(3),
                Duration::from_secs(30)
            )
        );
    }

    #[test]
    fn other_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "huddle",
            "bench",
            "fanout",
            "--url",
            "ws://a/ws",
            "--url",
            "ws://b/ws",
            "--duration",
            "3",
            "--warmup",
            "500ms",
        ])
        .expect("parses");
        let Command::Bench(b) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(b.mode, BenchMode::Fanout);
        assert_eq!(b.url.len(), 2);
        assert_eq!(
            b.duration,
            Duration::from_secs(3),
            "a bare number is seconds"
        );
        assert_eq!(b.warmup, Duration::from_millis(500));
        assert_eq!(
            (b.rooms_or(10), b.clients, b.senders, b.rate),
            (10, 20, 2, 1000)
        );
        assert!(
            Cli::try_parse_from(["huddle", "bench", "fanout"]).is_err(),
            "--url"
        );

        let cli = Cli::try_parse_from([
            "huddle",
            "bench",
            "abuse",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--redis-url",
            "redis://127.0.0.1:2",
            "--duration",
            "2s",
        ])
        .expect("parses");
        let Command::Bench(b) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(b.mode, BenchMode::Abuse);
        assert_eq!(b.connections, None, "each mode has its own default");
        assert_eq!(b.redis_url.as_deref(), Some("redis://127.0.0.1:2"));
        assert_eq!((b.plant, b.live_rooms, b.patient), (20, 3800, false));

        let cli = Cli::try_parse_from(["huddle", "health", "--timeout", "1m 5s"]).expect("parses");
        let Command::Health(h) = cli.command else {
            panic!("not health")
        };
        assert_eq!(h.url, "http://127.0.0.1:8080/readyz");
        assert_eq!(h.timeout, Duration::from_secs(65));

        let cli = Cli::try_parse_from(["huddle", "token", "--secret", "s", "--sub", "u"])
            .expect("parses");
        let Command::Token(t) = cli.command else {
            panic!("not token")
        };
        assert_eq!((t.sub.as_str(), t.ttl), ("u", Duration::from_secs(3600)));
    }
}
