//! A node's configuration: the `huddle serve` settings as plain data.
//!
//! `Config` is what `App::build` takes. Its fields are also the `serve`
//! flags: the clap attributes on each field name the flag, its `HUDDLE_*`
//! environment variable and its default, so a setting is defined in one
//! place and `Config::defaults()` cannot drift from `--help`
//! (`scripts/validate-deploy.sh` also reads the variable names from this
//! file). The flag names and variables are an interface (programs outside
//! this repository start nodes with them); the other subcommands' arguments
//! live in the binary. `Config::validate` checks what clap cannot; the binary
//! prints the first problem on one line and exits with 64.
//!
//! Durations are read by [`parse_duration`] (humantime syntax, a bare number
//! is seconds) and, for `--redis-timeout-ms`, [`parse_millis`] (a bare
//! number is milliseconds), so every value accepted before keeps its unit.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

mod parse;

use self::parse::check_web_server;
pub use self::parse::{parse_duration, parse_millis, parse_net, upstash_to_redis};

/// Which Redis a node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisBackend {
    /// One Redis server (`--redis`).
    Single(String),
    /// The seed nodes of a Redis Cluster (`--redis-cluster`).
    Cluster(Vec<String>),
}

/// How store calls reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisConnMode {
    /// A pooled connection per call.
    Pool,
    /// One shared multiplexed connection.
    Shared,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A node's configuration.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "HUDDLE_BIND", default_value = "0.0.0.0:8080")]
    pub bind: SocketAddr,

    /// Redis URL (`redis://` or `rediss://`). Without it the node uses the
    /// in-memory engine and must run alone.
    #[arg(long, env = "HUDDLE_REDIS", conflicts_with = "redis_cluster")]
    pub redis: Option<String>,

    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` URLs, comma
    /// separated). The topology is discovered from them and followed (slot
    /// moves, failovers); room events use sharded pub/sub (Redis 7).
    /// Mutually exclusive with `--redis`.
    #[arg(
        long,
        env = "HUDDLE_REDIS_CLUSTER",
        value_delimiter = ',',
        num_args = 1..,
        value_name = "URL"
    )]
    pub redis_cluster: Vec<String>,

    /// Acknowledge a durable write (a message, an edit, a join) to the client
    /// only after this many replicas have it (Redis `WAIT`). 0: as soon as
    /// the master has it.
    #[arg(long, env = "HUDDLE_REDIS_REPLICA_ACKS", default_value_t = 0)]
    pub redis_replica_acks: u32,

    /// Accepted from the server Huddle replaces: a Redis URL (or an Upstash
    /// REST URL, `https://NAME.upstash.io`), used when `--redis` is not given.
    #[arg(long, env = "UPSTASH_REDIS_URL", hide = true)]
    pub upstash_redis_url: Option<String>,

    /// Accepted from the server Huddle replaces: the password (token) for
    /// `UPSTASH_REDIS_URL`.
    #[arg(long, env = "UPSTASH_REDIS_TOKEN", hide = true, hide_env_values = true)]
    pub upstash_redis_token: Option<String>,

    /// Node id, shown to clients and kept in `nodes`. Default: the host name.
    #[arg(long, env = "HUDDLE_NODE_ID")]
    pub node_id: Option<String>,

    /// HS256 secret. With it, `hello` needs a token; without it, guest mode.
    #[arg(long, env = "HUDDLE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Redis connections in the command pool.
    #[arg(long, env = "HUDDLE_REDIS_POOL_SIZE", default_value_t = 16)]
    pub redis_pool_size: u32,

    /// How store calls reach Redis: `shared` pipelines every call over one
    /// multiplexed connection (measured faster, docs/performance.md); `pool`
    /// checks a connection out of the bb8 pool per call.
    #[arg(
        long,
        env = "HUDDLE_REDIS_CONN_MODE",
        value_enum,
        default_value = "shared"
    )]
    pub redis_conn_mode: RedisConnMode,

    /// Timeout of every Redis call. The flag keeps its historical name and
    /// unit: a bare number is milliseconds (`500`); a duration (`2s`) works
    /// too.
    #[arg(
        long = "redis-timeout-ms",
        value_name = "REDIS_TIMEOUT_MS",
        env = "HUDDLE_REDIS_TIMEOUT_MS",
        default_value = "1000",
        value_parser = parse_millis
    )]
    pub redis_timeout: Duration,

    /// Prefix of every Redis key and channel.
    #[arg(long, env = "HUDDLE_KEY_PREFIX", default_value = "huddle:")]
    pub key_prefix: String,

    /// How long messages are kept.
    #[arg(long, env = "HUDDLE_MESSAGE_TTL", default_value = "30d", value_parser = parse_duration)]
    pub message_ttl: Duration,

    /// How long a session record lives without a heartbeat.
    #[arg(long, env = "HUDDLE_SESSION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// How long after sending an author may edit a message.
    #[arg(long, env = "HUDDLE_EDIT_WINDOW", default_value = "15m", value_parser = parse_duration)]
    pub edit_window: Duration,

    /// Durable events retained per room for `room.join` with `since`.
    #[arg(long, env = "HUDDLE_EVENT_LOG_LEN", default_value_t = 1000)]
    pub event_log_len: u32,

    /// Largest WebSocket frame or message accepted; larger closes with 1009.
    #[arg(long, env = "HUDDLE_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,

    /// Sustained requests per second per connection.
    #[arg(long, env = "HUDDLE_RATE_LIMIT", default_value_t = 20)]
    pub rate_limit: u32,

    /// Burst of requests per connection above the sustained rate.
    #[arg(long, env = "HUDDLE_RATE_BURST", default_value_t = 40)]
    pub rate_burst: u32,

    /// Frames queued for one connection; a reader this far behind is closed
    /// with 1013.
    #[arg(long, env = "HUDDLE_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Requests the node runs at once, over all connections; the rest wait
    /// their turn in order. A reconnection storm then queues at the node
    /// instead of in the Redis pipeline, where it would run into the store
    /// timeout and open the circuit breaker.
    #[arg(long, env = "HUDDLE_MAX_INFLIGHT_REQUESTS", default_value_t = 256)]
    pub max_inflight_requests: usize,

    /// On shutdown, clients are closed (1012) at random moments over this
    /// window, so they do not all reconnect at once.
    #[arg(long, env = "HUDDLE_DRAIN_WINDOW", default_value = "5s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// How long shutdown may take before the node exits anyway.
    #[arg(long, env = "HUDDLE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Interval between server pings to a client.
    #[arg(long, env = "HUDDLE_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A client silent this long is closed with 1001.
    #[arg(long, env = "HUDDLE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// `room.create` per user per minute, across every node; 0 for no limit.
    #[arg(long, env = "HUDDLE_ROOM_CREATE_PER_MIN", default_value_t = 30)]
    pub room_create_per_min: u32,

    /// Bytes of history replies (joins, resumes, `message.history`,
    /// `message.search`) one connection may be sent per second, and four
    /// times that at once; past it those requests are `rate_limited`. 0 for
    /// no budget.
    #[arg(long, env = "HUDDLE_READ_BYTES_PER_SEC", default_value_t = 2 * 1024 * 1024)]
    pub read_bytes_per_sec: u64,

    /// Events a `room.join` with `since` returns at most; beyond them the
    /// reply says `complete: false`.
    #[arg(long, env = "HUDDLE_RESUME_MAX_EVENTS", default_value_t = 200)]
    pub resume_max_events: usize,

    /// Bytes of event frames a `room.join` with `since` returns at most.
    #[arg(long, env = "HUDDLE_RESUME_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub resume_max_bytes: usize,

    /// While a user's typing indicator stays on, the room is told at most
    /// this often (0: every repeat).
    #[arg(long, env = "HUDDLE_TYPING_REPEAT", default_value = "2s", value_parser = parse_duration)]
    pub typing_repeat: Duration,

    /// Unknown join codes per user per minute; once past it every join by
    /// code is `rate_limited` until the minute has passed. 0 for no limit.
    #[arg(long, env = "HUDDLE_CODE_MISS_PER_MIN", default_value_t = 10)]
    pub code_miss_per_min: u32,

    /// Balancers and proxies (IPs or CIDR blocks, comma-separated) whose
    /// `X-Forwarded-For` is believed: the client's address is the first
    /// hop, from the right, that is not one of them. Setting it turns the
    /// per-address limits on.
    #[arg(long, env = "HUDDLE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Apply the per-user limits, times 6, per client address too (on
    /// without this flag when `--trusted-proxies` is set; behind a balancer
    /// that is not trusted every client shares one address).
    #[arg(long, env = "HUDDLE_ADDRESS_LIMITS")]
    pub address_limits: bool,

    /// A connection that has not completed `hello` this long after it
    /// opened is closed with 4001, whatever else it sends.
    #[arg(long, env = "HUDDLE_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub hello_timeout: Duration,

    /// Open WebSocket connections per node; past it upgrades get HTTP 503.
    #[arg(long, env = "HUDDLE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Connections the kernel may queue before the node accepts them (the
    /// `listen` backlog): room for a reconnection storm, when a dead node's
    /// clients all come back at once. The kernel caps it at
    /// `net.core.somaxconn` (docs/deploy.md).
    #[arg(long, env = "HUDDLE_ACCEPT_BACKLOG", default_value_t = 8192)]
    pub accept_backlog: u32,

    /// Rooms with no activity and nobody connected for this long are closed.
    #[arg(long, env = "HUDDLE_ROOM_IDLE_TTL", default_value = "7d", value_parser = parse_duration)]
    pub room_idle_ttl: Duration,

    /// Browser origins allowed to open WebSockets, comma-separated, or `*`
    /// for any. Same-origin pages and clients without `Origin` are always
    /// allowed.
    #[arg(long, env = "HUDDLE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Host names browsers may reach this node under, comma-separated
    /// (`chat.example.com`, `localhost`, `127.0.0.1`, `::1`; no ports). When set, a WebSocket upgrade from
    /// a browser (one with `Origin`) that names another `Host` is refused
    /// (403): a page on a domain pointed at this node (DNS rebinding) cannot
    /// open a socket. Clients without `Origin` are not affected.
    #[arg(long, env = "HUDDLE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// WebSocket servers, besides the node's own `/ws`, that the web page
    /// may connect to when its URL says `?server=`: comma-separated `ws://`
    /// or `wss://` URLs with a path. The page refuses any other `?server=`
    /// (it would hand that server the user's token), and these are the only
    /// other servers its Content-Security-Policy lets it reach.
    #[arg(
        long,
        env = "HUDDLE_WEB_SERVERS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub web_servers: Vec<String>,

    /// How often the node records its heartbeat in `nodes`.
    #[arg(long, env = "HUDDLE_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A node whose heartbeat is older than this is dead: its sessions and
    /// presence are removed and its users announced as left.
    #[arg(long, env = "HUDDLE_NODE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub node_timeout: Duration,

    /// How often the janitor runs (on one node at a time, under a lock).
    #[arg(long, env = "HUDDLE_JANITOR_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub janitor_interval: Duration,

    /// Log format.
    #[arg(long, env = "HUDDLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `Config` alone as a command line, so the defaults come from the same
/// attributes as the flags.
#[derive(Parser)]
struct ServeFlags {
    /// The settings.
    #[command(flatten)]
    config: Config,
}

impl Config {
    /// Whether the per-address limits are on: `--address-limits`, or a
    /// `--trusted-proxies` list (then the client address is known).
    pub fn per_address_limits(&self) -> bool {
        self.address_limits || !self.trusted_proxies.is_empty()
    }

    /// A configuration with every default, for tests and embedding.
    pub fn defaults() -> Config {
        ServeFlags::parse_from(["huddle"]).config
    }

    /// Checks what clap cannot. The error is one line for the operator.
    pub fn validate(&self) -> Result<(), String> {
        fn positive(name: &str, ok: bool) -> Result<(), String> {
            if ok {
                Ok(())
            } else {
                Err(format!("--{name} must be greater than zero"))
            }
        }
        positive("redis-pool-size", self.redis_pool_size > 0)?;
        positive("redis-timeout-ms", !self.redis_timeout.is_zero())?;
        positive("event-log-len", self.event_log_len > 0)?;
        positive("rate-limit", self.rate_limit > 0)?;
        positive("outbound-queue", self.outbound_queue > 0)?;
        positive("max-inflight-requests", self.max_inflight_requests > 0)?;
        positive("max-connections", self.max_connections > 0)?;
        positive("accept-backlog", self.accept_backlog > 0)?;
        positive("message-ttl", !self.message_ttl.is_zero())?;
        positive("session-ttl", !self.session_ttl.is_zero())?;
        positive("ping-interval", !self.ping_interval.is_zero())?;
        positive("idle-timeout", !self.idle_timeout.is_zero())?;
        positive("hello-timeout", !self.hello_timeout.is_zero())?;
        positive("resume-max-events", self.resume_max_events > 0)?;
        positive("resume-max-bytes", self.resume_max_bytes > 0)?;
        positive("room-idle-ttl", !self.room_idle_ttl.is_zero())?;
        positive("heartbeat-interval", !self.heartbeat_interval.is_zero())?;
        positive("janitor-interval", !self.janitor_interval.is_zero())?;
        if self.node_timeout < self.heartbeat_interval * 2 {
            return Err("--node-timeout must be at least twice --heartbeat-interval".into());
        }
        for host in &self.allowed_hosts {
            let ipv6 = host.parse::<std::net::Ipv6Addr>().is_ok();
            if host.is_empty() || host.contains(['/', ' ', '@']) || (host.contains(':') && !ipv6) {
                return Err(format!(
                    "--allowed-hosts: {host:?} is not a host name like chat.example.com"
                ));
            }
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "--allowed-origins: {origin:?} is not an origin like https://chat.example.com or *"
                ));
            }
        }
        for server in &self.web_servers {
            check_web_server(server).map_err(|why| {
                format!("--web-servers: {server:?} {why} (like wss://chat.example.com/ws)")
            })?;
        }
        if self.drain_window >= self.shutdown_grace {
            return Err("--drain-window must be shorter than --shutdown-grace".into());
        }
        if self.rate_burst < self.rate_limit {
            return Err("--rate-burst must be at least --rate-limit".into());
        }
        if self.max_frame_bytes < 1024 {
            return Err("--max-frame-bytes must be at least 1024".into());
        }
        if self.redis.is_none()
            && self.upstash_redis_token.is_some()
            && self.upstash_redis_url.is_none()
        {
            return Err("UPSTASH_REDIS_TOKEN is set without UPSTASH_REDIS_URL".into());
        }
        if let Some(url) = &self.redis_url() {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "--redis must be a redis:// or rediss:// URL, got {url:?}"
                ));
            }
            redis::Client::open(url.as_str()).map_err(|e| format!("--redis: {e}"))?;
        }
        if !self.redis_cluster.is_empty() {
            if self.redis_url().is_some() {
                return Err(
                    "--redis-cluster and --redis (or UPSTASH_REDIS_URL) are mutually exclusive: \
                     give one Redis server or the seeds of one cluster"
                        .into(),
                );
            }
            for url in &self.redis_cluster {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(format!(
                        "--redis-cluster takes redis:// or rediss:// URLs, got {url:?}"
                    ));
                }
                redis::Client::open(url.as_str())
                    .map_err(|e| format!("--redis-cluster {url:?}: {e}"))?;
            }
            let tls = |u: &String| u.starts_with("rediss://");
            if self.redis_cluster.iter().any(tls) != self.redis_cluster.iter().all(tls) {
                return Err("--redis-cluster: mix of redis:// and rediss:// seeds".into());
            }
        }
        if self.redis_replica_acks > 0 && self.redis_backend().is_none() {
            return Err("--redis-replica-acks needs --redis or --redis-cluster".into());
        }
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_whitespace))
        {
            return Err("--node-id must be 1–128 characters without spaces".into());
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 16
        {
            return Err("--jwt-secret must be at least 16 bytes".into());
        }
        if self.key_prefix.contains(['{', '}']) || self.key_prefix.chars().any(char::is_whitespace)
        {
            return Err("--key-prefix may not contain braces or spaces".into());
        }
        Ok(())
    }

    /// The Redis URL to use: `--redis`, else one built from
    /// `UPSTASH_REDIS_URL` and `UPSTASH_REDIS_TOKEN`, else none (memory).
    pub fn redis_url(&self) -> Option<String> {
        if let Some(url) = &self.redis {
            return Some(url.clone());
        }
        let url = self.upstash_redis_url.as_deref()?.trim();
        let token = self.upstash_redis_token.as_deref().map(str::trim);
        Some(upstash_to_redis(url, token))
    }

    /// The Redis deployment to use, if any: one server or a cluster.
    pub fn redis_backend(&self) -> Option<RedisBackend> {
        if !self.redis_cluster.is_empty() {
            return Some(RedisBackend::Cluster(self.redis_cluster.clone()));
        }
        self.redis_url().map(RedisBackend::Single)
    }

    /// The node id: the flag, else the host name, else a random id.
    pub fn resolved_node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `serve` flags (without the subcommand) as the binary parses them.
    fn flags(args: &[&str]) -> Result<Config, clap::Error> {
        ServeFlags::try_parse_from(std::iter::once("huddle").chain(args.iter().copied()))
            .map(|f| f.config)
    }

    #[test]
    fn cluster_seeds_and_replica_acks() {
        let c = flags(&[
            "--redis-cluster",
            "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
            "--redis-replica-acks",
            "1",
        ])
        .expect("parses");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.redis_backend(),
            Some(RedisBackend::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ]))
        );
        assert_eq!(c.redis_replica_acks, 1);
        let one = flags(&["--redis", "redis://h:6379"]).expect("parses");
        assert_eq!(
            one.redis_backend(),
            Some(RedisBackend::Single("redis://h:6379".into()))
        );
        assert_eq!(one.redis_replica_acks, 0, "acks are off by default");
        assert_eq!(flags(&[]).expect("parses").redis_backend(), None);
    }

    #[test]
    fn cluster_flags_refuse_what_cannot_work() {
        let both = flags(&["--redis", "redis://a", "--redis-cluster", "redis://b"]);
        assert!(both.is_err(), "--redis and --redis-cluster conflict");
        for (args, why) in [
            (
                &["--redis-cluster", "http://a:7000"][..],
                "redis:// or rediss://",
            ),
            (
                &["--redis-cluster", "redis://a:7000,rediss://b:7000"][..],
                "mix of redis:// and rediss://",
            ),
            (&["--redis-replica-acks", "1"][..], "needs --redis"),
        ] {
            let err = flags(args)
                .expect("parses")
                .validate()
                .expect_err("refused");
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }

    #[test]
    fn durations_in_the_forms_accepted_before() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)), "bare = s");
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration(" 5s "), Ok(Duration::from_secs(5)));
        assert_eq!(
            parse_duration("18446744073709551615ms"),
            Ok(Duration::from_millis(u64::MAX)),
            "past what humantime takes in milliseconds"
        );
        assert_eq!(
            parse_duration("213503982334d"),
            Ok(Duration::from_secs(213_503_982_334 * 86400))
        );
    }

    #[test]
    fn durations_in_humantime_forms() {
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1day"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1s 500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(
            parse_duration("2 weeks"),
            Ok(Duration::from_secs(14 * 86400))
        );
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "",
            " ",
            "5 parsecs",
            "-5s",
            "5S",
            "s",
            "x",
            "99999999999999999999d",
            "99999999999999999999",
            "18446744073709551615",
            "18446744073709551616ms",
            "213503982335d",
            "1us",
            "1500us",
            "1.0005s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn millisecond_flags_keep_bare_milliseconds() {
        assert_eq!(parse_millis("500"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_millis("+500"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_millis("1000"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_millis("0"), Ok(Duration::ZERO));
        assert_eq!(parse_millis("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_millis("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_millis("18446744073709551615"),
            Ok(Duration::from_millis(u64::MAX))
        );
        assert!(parse_millis("18446744073709551616").is_err());
        assert!(parse_millis("-1").is_err());
        assert!(parse_millis("1.5").is_err());
    }

    proptest! {
        /// Every `N[unit]` of the grammar before humantime (a u64 `N`, then
        /// `ms`, `s`, `m`, `h`, `d` or nothing for seconds) means what it
        /// meant, and what overflowed a u64 of milliseconds is still refused.
        #[test]
        fn old_duration_grammar_keeps_its_meaning(
            n in prop_oneof![0u64..10_000_000_000, any::<u64>()],
            unit in prop::sample::select(vec![
                ("", 1000u64),
                ("ms", 1),
                ("s", 1000),
                ("m", 60_000),
                ("h", 3_600_000),
                ("d", 86_400_000),
            ]),
        ) {
            let (suffix, unit_ms) = unit;
            let text = format!("{n}{suffix}");
            let expected = n.checked_mul(unit_ms).map(Duration::from_millis);
            match expected {
                Some(d) => prop_assert_eq!(parse_duration(&text), Ok(d)),
                None => prop_assert!(parse_duration(&text).is_err()),
            }
            prop_assert_eq!(parse_millis(&n.to_string()), Ok(Duration::from_millis(n)));
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::defaults();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.message_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.session_ttl, Duration::from_secs(86400));
        assert_eq!(c.edit_window, Duration::from_secs(900));
        assert_eq!(c.redis_timeout, Duration::from_secs(1));
        assert_eq!(c.event_log_len, 1000);
        assert_eq!(c.max_frame_bytes, 65536);
        assert_eq!((c.rate_limit, c.rate_burst), (20, 40));
        assert_eq!(c.key_prefix, "huddle:");
    }

    #[test]
    fn flags_parse() {
        let c = flags(&[
            "--bind",
            "127.0.0.1:0",
            "--redis",
            "redis://127.0.0.1:6379",
            "--node-id",
            "n1",
            "--message-ttl",
            "2s",
            "--session-ttl",
            "90",
            "--redis-timeout-ms",
            "500",
            "--log-format",
            "json",
        ])
        .expect("parses");
        assert_eq!(c.node_id.as_deref(), Some("n1"));
        assert_eq!(c.message_ttl, Duration::from_secs(2));
        assert_eq!(c.session_ttl, Duration::from_secs(90));
        assert_eq!(c.redis_timeout, Duration::from_millis(500));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.validate(), Ok(()));
        let c = flags(&["--redis-timeout-ms", "2s", "--edit-window", "1h 30m"]).expect("parses");
        assert_eq!(c.redis_timeout, Duration::from_secs(2));
        assert_eq!(c.edit_window, Duration::from_secs(5400));
    }

    #[test]
    fn upstash_settings_become_a_redis_url() {
        assert_eq!(
            upstash_to_redis("https://eu1-cat.upstash.io", Some("AbC/1+")),
            "rediss://default:AbC%2F1%2B@eu1-cat.upstash.io:6379"
        );
        assert_eq!(
            upstash_to_redis("https://h", Some("a-b.c_d~e=f@g:h é")),
            "rediss://default:a-b.c_d~e%3Df%40g%3Ah%20%C3%A9@h:6379",
            "unreserved characters stay; the rest, UTF-8 included, is escaped"
        );
        assert_eq!(
            upstash_to_redis("rediss://eu1-cat.upstash.io:6380", Some("t")),
            "rediss://default:t@eu1-cat.upstash.io:6380"
        );
        assert_eq!(
            upstash_to_redis("rediss://default:pw@host:6379", Some("t")),
            "rediss://default:pw@host:6379"
        );
        assert_eq!(upstash_to_redis("redis://host:1", None), "redis://host:1");
        let mut c = Config::defaults();
        c.upstash_redis_url = Some("https://x.upstash.io".into());
        c.upstash_redis_token = Some("tok".into());
        assert_eq!(
            c.redis_url().as_deref(),
            Some("rediss://default:tok@x.upstash.io:6379")
        );
        assert_eq!(c.validate(), Ok(()));
        c.redis = Some("redis://127.0.0.1:6379".into());
        assert_eq!(
            c.redis_url().as_deref(),
            Some("redis://127.0.0.1:6379"),
            "--redis wins"
        );
        let mut c = Config::defaults();
        c.upstash_redis_token = Some("tok".into());
        assert!(c.validate().is_err(), "a token without a URL");
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = Config::defaults();
        c.redis = Some("http://x".into());
        assert!(c.validate().unwrap_err().contains("redis://"));
        let mut c = Config::defaults();
        c.rate_burst = 1;
        assert!(c.validate().is_err());
        let mut c = Config::defaults();
        c.key_prefix = "a{b}".into();
        assert!(c.validate().is_err());
        let c = flags(&["--redis-timeout-ms", "0"]).expect("parses");
        assert_eq!(
            c.validate(),
            Err("--redis-timeout-ms must be greater than zero".into())
        );
        assert!(flags(&["--message-ttl", "x"]).is_err());
        let c =
            flags(&["--web-servers", "wss://a.example/ws,https://b.example/ws"]).expect("parses");
        assert_eq!(
            c.validate(),
            Err(
                "--web-servers: \"https://b.example/ws\" is not a ws:// or wss:// URL \
                 (like wss://chat.example.com/ws)"
                    .into()
            )
        );
        assert!(flags(&["--redis-timeout-ms", "soon"]).is_err());
    }

    #[test]
    fn allowed_hosts_are_host_names() {
        let c = flags(&[
            "--allowed-hosts",
            "chat.example.com,localhost,127.0.0.1,::1",
        ])
        .expect("parses");
        assert_eq!(c.allowed_hosts.len(), 4);
        assert_eq!(c.validate(), Ok(()));
        for bad in [
            "chat.example.com:8080",
            "https://chat.example.com",
            "a b",
            "u@h",
            "[::1]",
        ] {
            let c = flags(&["--allowed-hosts", bad]).expect("parses");
            let err = c.validate().expect_err(bad);
            assert!(err.starts_with("--allowed-hosts:"), "{err}");
        }
    }

    #[test]
    fn web_servers_are_plain_websocket_urls() {
        let c = flags(&[
            "--web-servers",
            "ws://127.0.0.1:9000/ws,wss://chat.example.com/ws,wss://[::1]:443/a/b,ws://h/",
        ])
        .expect("parses");
        assert_eq!(c.web_servers.len(), 4);
        assert_eq!(c.validate(), Ok(()));
        assert!(Config::defaults().web_servers.is_empty(), "none by default");
        for bad in [
            "",
            "http://a.example/ws",
            "WS://a.example/ws",
            "ws://a.example",
            "ws:///ws",
            "ws://user@a.example/ws",
            "ws://a.example:0/ws",
            "ws://a.example:99999/ws",
            "ws://a.example:x/ws",
            "ws://a..example/ws",
            "ws://[nothex]/ws",
            "ws://a.example/ws?x=1",
            "ws://a.example/ws#x",
            "ws://a.example/ws;script-src",
            "ws://a.example/ws'",
            "ws://a.example/w s",
            "ws://a.example/ws,",
        ] {
            assert!(check_web_server(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
