//! One conformance suite, run against both store engines: the in-memory one
//! and the Redis one on a private `redis-server`. Both must behave the same
//! for every repository operation, including the atomic append-and-publish
//! of durable events in seq order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use huddle::codec;
use huddle::events::EventSink;
use huddle::layout::Keys;
use huddle::metrics::Metrics;
use huddle::model::{Event, Message, MessageKind, Room, SeqEvent, User, now_ms};
use huddle::store::redis::{ConnMode, RedisOptions};
use huddle::store::{
    AppendOutcome, Backlog, CreateOutcome, Entry, JoinOutcome, LeaveOutcome, MemoryStore,
    RedisStore, ReplaceOutcome, ScanCap, SessionRecord, Store, StoreSettings,
};

use crate::common::{RedisCluster, RedisServer};

/// Records what the memory engine publishes.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Vec<u8>)>>,
}

impl EventSink for Recorder {
    fn deliver(&self, room: &str, envelope: &[u8]) {
        self.seen
            .lock()
            .expect("recorder lock")
            .push((room.to_owned(), envelope.to_vec()));
    }
}

fn settings(log_len: u32, ttl: Duration) -> StoreSettings {
    StoreSettings {
        message_ttl: ttl,
        event_log_len: log_len,
        dedupe_ttl: Duration::from_secs(86_400),
        session_ttl: Duration::from_secs(3600),
    }
}

fn memory(log_len: u32, ttl: Duration) -> (Arc<dyn Store>, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let store = MemoryStore::new(settings(log_len, ttl), rec.clone());
    (Arc::new(store), rec)
}

fn redis_store(redis: &RedisServer, prefix: &str, log_len: u32, ttl: Duration) -> Arc<dyn Store> {
    let store = RedisStore::connect(
        &redis.url(),
        4,
        Duration::from_secs(2),
        Keys::new(prefix),
        settings(log_len, ttl),
        Arc::new(Metrics::new()),
    )
    .expect("redis store");
    Arc::new(store)
}

/// An envelope as the store's replay hands it out.
fn decoded(envelope: &[u8]) -> SeqEvent {
    let env = codec::decode(envelope).expect("decodes");
    SeqEvent {
        seq: env.seq,
        event: env.event,
    }
}

fn user(name: &str) -> User {
    User {
        id: format!("u-{name}"),
        name: name.to_owned(),
        image: None,
    }
}

fn room(id: &str, code: &str, max: u32, private: bool) -> Room {
    Room {
        id: id.to_owned(),
        code: code.to_owned(),
        name: format!("room {id}"),
        created_by: user("ann").id,
        created_at: now_ms(),
        max_participants: max,
        private,
        participant_count: 0,
        last_seq: 0,
    }
}

fn msg(room: &str, author: &User, kind: MessageKind, text: &str) -> Message {
    Message {
        id: uuid::Uuid::now_v7().to_string(),
        room: room.to_owned(),
        seq: 0,
        user: author.clone(),
        kind,
        content: text.to_owned(),
        attachment: None,
        created_at: now_ms(),
        edited_at: None,
        deleted: false,
    }
}

fn note(room: &str, text: &str) -> Message {
    msg(
        room,
        &huddle::model::system_user(),
        MessageKind::System,
        text,
    )
}

async fn create(store: &dyn Store, r: &Room, creator: &User, conn: &str) -> Room {
    match store
        .create_room(r, creator, conn, &note(&r.id, "created"))
        .await
        .expect("create")
    {
        CreateOutcome::Created(room) => room,
        other => panic!("create {}: {other:?}", r.id),
    }
}

async fn send(
    store: &dyn Store,
    room: &str,
    author: &User,
    text: &str,
    cmid: Option<&str>,
) -> AppendOutcome {
    store
        .append(&msg(room, author, MessageKind::Text, text), cmid)
        .await
        .expect("append")
}

/// A store on one Redis (with a replica started by the caller) that waits
/// for one replica's acknowledgement, with a short timeout: the tests that
/// kill the replica and expect `Unconfirmed`.
fn acks_store(redis: &RedisServer) -> RedisStore {
    RedisStore::connect_single(
        &redis.url(),
        4,
        ConnMode::Shared,
        RedisOptions {
            timeout: Duration::from_millis(600),
            keys: Keys::new("t:"),
            settings: settings(1000, Duration::from_secs(3600)),
            metrics: Arc::new(Metrics::new()),
            replica_acks: 1,
        },
    )
    .expect("redis store")
}

/// Checks that a durable write answered `Unconfirmed` (`what` names it):
/// the tests of `acks_store` with its replica gone.
fn unconfirmed(what: &str, e: Option<huddle::store::StoreError>) {
    match e {
        Some(huddle::store::StoreError::Unconfirmed(_)) => {}
        other => panic!("{what}: expected Unconfirmed, got {other:?}"),
    }
}

fn appended(o: AppendOutcome) -> Message {
    match o {
        AppendOutcome::Appended(m) => m,
        other => panic!("expected Appended, got {other:?}"),
    }
}

mod big_rooms;
mod cases;
mod moderation;
mod moderation_edges;
mod reads;
mod snapshot;

use self::big_rooms::*;
use self::cases::*;
use self::moderation::*;
use self::moderation_edges::*;
use self::reads::*;
use self::snapshot::*;

// ---------------------------------------------------------------------------
// Engines: every case runs on its own store, once per engine, as its own test
// ---------------------------------------------------------------------------

/// A store under test and the clock its TTLs run on.
struct Engine {
    /// The store.
    store: Arc<dyn Store>,
    /// The memory engine's clock (Unix ms), which the test moves; `None` for
    /// Redis, whose TTLs run on real time.
    manual: Option<Arc<AtomicU64>>,
    /// Keeps the Redis engine's server alive for the test.
    _redis: Option<RedisServer>,
    /// Keeps its replica alive (with acknowledgements).
    _replica: Option<RedisServer>,
}

/// A key prefix no other test in this process uses, for tests that share
/// the process-wide cluster.
fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "c{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

impl Engine {
    /// The memory engine on a clock the test moves.
    fn memory(log_len: u32, ttl: Duration) -> Engine {
        let manual = Arc::new(AtomicU64::new(now_ms()));
        let clock = manual.clone();
        let store = MemoryStore::with_clock(
            settings(log_len, ttl),
            Arc::new(Recorder::default()),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        Engine {
            store: Arc::new(store),
            manual: Some(manual),
            _redis: None,
            _replica: None,
        }
    }

    /// The Redis engine on a private `redis-server`.
    async fn redis(mode: ConnMode, log_len: u32, ttl: Duration) -> Engine {
        let redis = RedisServer::start().await;
        let store = RedisStore::connect_with(
            &redis.url(),
            4,
            Duration::from_secs(2),
            Keys::new("t:"),
            settings(log_len, ttl),
            Arc::new(Metrics::new()),
            mode,
        )
        .expect("redis store");
        Engine {
            store: Arc::new(store),
            manual: None,
            _redis: Some(redis),
            _replica: None,
        }
    }

    /// The Redis engine on a private `redis-server` with one replica, every
    /// durable write confirmed by it (`WAIT` on the shared connection).
    async fn redis_acks(log_len: u32, ttl: Duration) -> Engine {
        let redis = RedisServer::start().await;
        let replica = redis.start_replica().await;
        let store = RedisStore::connect_single(
            &redis.url(),
            4,
            ConnMode::Shared,
            RedisOptions {
                timeout: Duration::from_secs(2),
                keys: Keys::new("t:"),
                settings: settings(log_len, ttl),
                metrics: Arc::new(Metrics::new()),
                replica_acks: 1,
            },
        )
        .expect("redis store");
        Engine {
            store: Arc::new(store),
            manual: None,
            _redis: Some(redis),
            _replica: Some(replica),
        }
    }

    /// The Redis engine on the shared test cluster (3 masters + 3 replicas)
    /// under a key prefix of its own, with `replica_acks` acknowledgements.
    async fn cluster(replica_acks: u32, log_len: u32, ttl: Duration) -> Engine {
        Self::cluster_at(unique_prefix(), replica_acks, log_len, ttl).await
    }

    /// `Engine::cluster` under `prefix`.
    async fn cluster_at(prefix: String, replica_acks: u32, log_len: u32, ttl: Duration) -> Engine {
        let cluster = RedisCluster::shared().await;
        let seeds: Vec<String> = cluster.seeds().split(',').map(str::to_owned).collect();
        let store = RedisStore::connect_cluster(
            &seeds,
            RedisOptions {
                timeout: Duration::from_secs(2),
                keys: Keys::clustered(prefix),
                settings: settings(log_len, ttl),
                metrics: Arc::new(Metrics::new()),
                replica_acks,
            },
        )
        .expect("cluster store");
        Engine {
            store: Arc::new(store),
            manual: None,
            _redis: None,
            _replica: None,
        }
    }

    /// Now, Unix ms, by the store's clock.
    fn now(&self) -> u64 {
        match &self.manual {
            Some(clock) => clock.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }

    /// Lets `d` pass: moves the memory engine's clock, sleeps for Redis.
    async fn pass(&self, d: Duration) {
        match &self.manual {
            Some(clock) => {
                clock.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
            }
            None => tokio::time::sleep(d).await,
        }
    }
}

/// Stamps each case as a test per engine: `memory_engine::case`,
/// `redis_pooled::case`, `redis_shared::case` (one shared connection),
/// `redis_shared_acks::case` (with a replica confirming every durable write),
/// `redis_cluster::case` (a Redis Cluster) and `redis_cluster_acks::case`
/// (the cluster, every durable write confirmed by one replica).
macro_rules! conformance {
    ($($case:ident($log_len:expr, $ttl:expr);)*) => {
        mod memory_engine {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&Engine::memory($log_len, $ttl)).await;
                }
            )*
        }
        mod redis_pooled {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&Engine::redis(ConnMode::Pool, $log_len, $ttl).await).await;
                }
            )*
        }
        mod redis_shared {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&Engine::redis(ConnMode::Shared, $log_len, $ttl).await).await;
                }
            )*
        }
        mod redis_shared_acks {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&Engine::redis_acks($log_len, $ttl).await).await;
                }
            )*
        }
        mod redis_cluster {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&Engine::cluster(0, $log_len, $ttl).await).await;
                }
            )*
        }
        mod redis_cluster_acks {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&Engine::cluster(1, $log_len, $ttl).await).await;
                }
            )*
        }
    };
}

const HOUR: Duration = Duration::from_secs(3600);

conformance! {
    rooms_and_codes(1000, HOUR);
    membership(1000, HOUR);
    messages_and_idempotency(1000, HOUR);
    history_pages(1000, HOUR);
    listing(1000, HOUR);
    sessions_and_cache(1000, HOUR);
    edits_and_search(1000, HOUR);
    presence_nodes_and_locks(1000, HOUR);
    idle_rooms_close(1000, HOUR);
    event_log(5, HOUR);
    message_expiry(1000, Duration::from_secs(1));
    private_rooms_by_id(1000, HOUR);
    limit_counters(1000, HOUR);
    private_rooms_do_not_starve_the_listing(1000, HOUR);
    big_room_threshold(1000, HOUR);
    bounded_roster(1000, HOUR);
    member_pages(1000, HOUR);
    participants_changed_gate(1000, HOUR);
    roles_and_handover(1000, HOUR);
    kicks_and_bans(1000, HOUR);
    mutes_in_the_send_path(1000, HOUR);
    room_updates(1000, HOUR);
    owner_close_deletes_everything(1000, HOUR);
    idle_close_forgets_moderation(1000, HOUR);
    handover_to_the_absent_and_the_muted(1000, HOUR);
    unmute_and_unban_refusals(1000, HOUR);
    big_room_kick_and_ban(1000, HOUR);
    ban_listing_is_bounded(1000, HOUR);
    presence_for_a_resync(1000, HOUR);
    replace_after_close(1000, HOUR);
    retry_after_mute(1000, HOUR);
    read_positions(1000, HOUR);
    unread_counts(1000, HOUR);
    unread_after_expiry(1000, Duration::from_secs(1));
    my_rooms_order_limit_and_stale(1000, HOUR);
    read_receipts(1000, HOUR);
    room_index_bound(1000, HOUR);
    my_rooms_roles_follow_moderation(1000, HOUR);
    owner_close_forgets_read_state(1000, HOUR);
    join_snapshot(1000, HOUR);
}

/// Durable events are published in seq order with the same envelope the log
/// keeps: memory engine to its sink, Redis engine on `events:{R}`.
#[tokio::test]
async fn memory_engine_publishes_in_seq_order() {
    let (store, rec) = memory(1000, Duration::from_secs(3600));
    let ann = user("ann");
    create(
        store.as_ref(),
        &room("r-p", "PPP222", 50, false),
        &ann,
        "a1",
    )
    .await;
    for i in 0..20 {
        appended(send(store.as_ref(), "r-p", &ann, &format!("m{i}"), None).await);
    }
    let seen = rec.seen.lock().expect("lock").clone();
    let seqs: Vec<u64> = seen
        .iter()
        .map(|(_, e)| codec::peek_seq(e).expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<u64>>());
    assert!(seen.iter().all(|(r, _)| r == "r-p"));
    let log = store.events_since("r-p", 0).await.expect("log");
    assert_eq!(
        log.events,
        seen.iter().map(|(_, e)| decoded(e)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_publishes_in_seq_order() {
    let redis = RedisServer::start().await;
    let store = redis_store(&redis, "pub:", 1000, Duration::from_secs(3600));
    let client = redis::Client::open(redis.url()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    let channel = Keys::new("pub:").channel("r-p");
    pubsub.subscribe(&channel).await.expect("subscribe");
    let ann = user("ann");
    create(
        store.as_ref(),
        &room("r-p", "PPP222", 50, false),
        &ann,
        "a1",
    )
    .await;
    // Concurrent senders: the script serializes them; publish order = seq order.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        let ann = ann.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                appended(send(store.as_ref(), "r-p", &ann, &format!("t{t}m{i}"), None).await);
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let mut stream = pubsub.on_message();
    let mut seen = Vec::new();
    while seen.len() < 41 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("published in time")
            .expect("stream open");
        seen.push(msg.get_payload_bytes().to_vec());
    }
    let seqs: Vec<u64> = seen
        .iter()
        .map(|e| codec::peek_seq(e).expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<u64>>());
    let log = store.events_since("r-p", 0).await.expect("log");
    assert_eq!(
        log.events,
        seen.iter().map(|e| decoded(e)).collect::<Vec<_>>(),
        "the log keeps exactly what was published"
    );
}

/// On a cluster, durable events go out on the room's shard channel in seq
/// order, also when each is published only after a replica confirmed it
/// (concurrent writers release out of order; `publish.lua` keeps the order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_publishes_on_the_shard_channel_in_seq_order() {
    for acks in [0, 1] {
        let prefix = unique_prefix();
        let Engine { store, .. } =
            Engine::cluster_at(prefix.clone(), acks, 1000, Duration::from_secs(3600)).await;
        let cluster = RedisCluster::shared().await;
        let seeds: Vec<String> = cluster.seeds().split(',').map(str::to_owned).collect();
        let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = huddle::store::redis::cluster_client(&seeds, Duration::from_secs(2), Some(tx))
            .expect("client");
        let mut sub = client.get_async_connection().await.expect("connect");
        let room_id = format!("r-shard-{acks}");
        let ann = user("ann");
        create(
            store.as_ref(),
            &room(&room_id, &format!("SHD{acks}22"), 50, false),
            &ann,
            "a1",
        )
        .await;
        let channel = Keys::clustered(prefix).channel(&room_id);
        sub.ssubscribe(&channel).await.expect("ssubscribe");
        let mut tasks = Vec::new();
        for t in 0..4 {
            let store = store.clone();
            let ann = ann.clone();
            let room_id = room_id.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    appended(
                        send(store.as_ref(), &room_id, &ann, &format!("t{t}m{i}"), None).await,
                    );
                }
            }));
        }
        for t in tasks {
            t.await.expect("sender");
        }
        let mut seqs = Vec::new();
        while seqs.len() < 40 {
            let push = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
                .await
                .expect("published in time")
                .expect("push channel open");
            if push.kind != redis::PushKind::SMessage {
                continue;
            }
            let Some(redis::Value::BulkString(payload)) = push.data.get(1) else {
                panic!("smessage without payload: {push:?}");
            };
            seqs.push(codec::peek_seq(payload).expect("seq"));
        }
        assert_eq!(seqs, (2..=41).collect::<Vec<u64>>(), "acks {acks}");
    }
}

/// Keys copied from one Redis into a cluster (`redis-cli --cluster import`)
/// bring the unsplit room index: the cluster engine moves it into its
/// shards, so the rooms are listed and swept as if made on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_moves_an_imported_room_index_into_its_shards() {
    let prefix = unique_prefix();
    let Engine { store, .. } =
        Engine::cluster_at(prefix.clone(), 0, 1000, Duration::from_secs(3600)).await;
    let ann = user("ann");
    let mut made = Vec::new();
    for i in 0..6 {
        let id = format!("r-imported-{i}");
        create(
            store.as_ref(),
            &room(&id, &format!("IMP{i}22"), 50, i == 5),
            &ann,
            "a1",
        )
        .await;
        made.push(id);
    }
    // What an import leaves: the rooms in the unsplit index only.
    let cluster = RedisCluster::shared().await;
    let seeds: Vec<String> = cluster.seeds().split(',').map(str::to_owned).collect();
    let client = redis::cluster::ClusterClient::new(seeds).expect("client");
    let mut r = client.get_async_connection().await.expect("cluster");
    let keys = Keys::clustered(prefix.clone());
    for (i, id) in made.iter().enumerate() {
        let _: () = redis::cmd("ZREM")
            .arg(keys.active_rooms_of(id))
            .arg(id)
            .query_async(&mut r)
            .await
            .expect("zrem");
        let _: () = redis::cmd("ZREM")
            .arg(keys.public_rooms_of(id))
            .arg(id)
            .query_async(&mut r)
            .await
            .expect("zrem");
        let _: () = redis::cmd("ZADD")
            .arg(format!("{prefix}active_rooms"))
            .arg(1000 + i)
            .arg(id)
            .query_async(&mut r)
            .await
            .expect("zadd");
        if i != 5 {
            let _: () = redis::cmd("ZADD")
                .arg(format!("{prefix}public_rooms"))
                .arg(1000 + i)
                .arg(id)
                .query_async(&mut r)
                .await
                .expect("zadd");
        }
    }
    // A node started afterwards.
    let Engine { store: after, .. } =
        Engine::cluster_at(prefix.clone(), 0, 1000, Duration::from_secs(3600)).await;
    let listed: Vec<String> = after
        .list_public(10)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        listed,
        [
            "r-imported-4",
            "r-imported-3",
            "r-imported-2",
            "r-imported-1",
            "r-imported-0"
        ],
        "public rooms, newest first"
    );
    let idle = after.idle_rooms(2000, 100).await.expect("idle");
    let idle: HashSet<String> = idle.into_iter().collect();
    assert_eq!(idle, made.iter().cloned().collect::<HashSet<_>>());
    for unsplit in ["active_rooms", "public_rooms"] {
        let left: u64 = redis::cmd("ZCARD")
            .arg(format!("{prefix}{unsplit}"))
            .query_async(&mut r)
            .await
            .expect("zcard");
        assert_eq!(left, 0, "{unsplit} was moved");
    }
}

/// A deployment upgraded from a version without `public_rooms` lists its
/// public rooms all the same: the index is filled once from `active_rooms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_public_index_is_filled_after_an_upgrade() {
    let redis = RedisServer::start().await;
    let before = redis_store(&redis, "up:", 1000, Duration::from_secs(3600));
    let ann = user("ann");
    create(
        before.as_ref(),
        &room("r-old-pub", "OLD222", 50, false),
        &ann,
        "a1",
    )
    .await;
    create(
        before.as_ref(),
        &room("r-old-priv", "OLD333", 50, true),
        &ann,
        "a1",
    )
    .await;
    // What a node of the previous version left: no public index.
    let client = redis::Client::open(redis.url()).expect("client");
    let mut r = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("DEL")
        .arg("up:public_rooms")
        .arg("up:public_rooms_ready")
        .query_async(&mut r)
        .await
        .expect("del");
    let after = redis_store(&redis, "up:", 1000, Duration::from_secs(3600));
    let listed: Vec<String> = after
        .list_public(10)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["r-old-pub"]);
    let ready: bool = redis::cmd("EXISTS")
        .arg("up:public_rooms_ready")
        .query_async(&mut r)
        .await
        .expect("exists");
    assert!(ready, "filled once, then marked");
}

/// A room written by a version without `member_ids:{R}` (or whose index
/// is otherwise out of step) gets it rebuilt on its first member page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_member_index_is_rebuilt_for_an_old_room() {
    let redis = RedisServer::start().await;
    let store = redis_store(&redis, "mi:", 1000, Duration::from_secs(3600));
    let ann = user("ann");
    create(
        store.as_ref(),
        &room("r-mi", "MID222", 50, false),
        &ann,
        "a1",
    )
    .await;
    for name in ["bob", "cat", "dan"] {
        store
            .join("r-mi", &user(name), name, &note("r-mi", "joined"))
            .await
            .expect("join");
    }
    let client = redis::Client::open(redis.url()).expect("client");
    let mut r = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    // What an older node left: no index, then one join that added to it.
    let _: () = redis::cmd("DEL")
        .arg("mi:member_ids:{r-mi}")
        .query_async(&mut r)
        .await
        .expect("del");
    store
        .join("r-mi", &user("eve"), "eve", &note("r-mi", "joined"))
        .await
        .expect("join");
    let page = store.members("r-mi", None, 3).await.expect("page");
    let ids: Vec<String> = page.users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(ids, ["u-ann", "u-bob", "u-cat"]);
    let rest = store
        .members("r-mi", page.next.as_deref(), 3)
        .await
        .expect("page");
    let ids: Vec<String> = rest.users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(ids, ["u-dan", "u-eve"]);
    assert_eq!(rest.next, None);
    let indexed: u64 = redis::cmd("ZCARD")
        .arg("mi:member_ids:{r-mi}")
        .query_async(&mut r)
        .await
        .expect("zcard");
    assert_eq!(indexed, 5, "rebuilt from room_members");
}

/// A Redis that is down is `Unavailable`, not a hang and not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_reports_unavailable() {
    let mut redis = RedisServer::start().await;
    let store = redis_store(&redis, "down:", 1000, Duration::from_secs(3600));
    store.ping().await.expect("up");
    redis.kill();
    let started = std::time::Instant::now();
    let err = store.room("r").await.expect_err("down");
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
