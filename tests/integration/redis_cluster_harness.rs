//! The Redis Cluster harness itself ([`RedisCluster`]): it forms a healthy
//! cluster, computes slots as Redis does, finds a key's master, survives a
//! master's death by failover, moves a slot with its keys, and lists shard
//! and classic pub/sub channels per node. The server's cluster tests build
//! on these guarantees.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{RedisCluster, Role, SlotMigration, heavy};

/// Ports in a `seeds()` string, e.g. `redis://127.0.0.1:1,redis://…`.
fn seed_ports(seeds: &str) -> BTreeSet<u16> {
    seeds
        .split(',')
        .map(|url| {
            url.strip_prefix("redis://127.0.0.1:")
                .and_then(|port| port.parse().ok())
                .unwrap_or_else(|| panic!("unexpected seed {url:?} in {seeds:?}"))
        })
        .collect()
}

/// Opens a raw connection to `port` and sends `SUBSCRIBE`/`SSUBSCRIBE
/// channel`; returns it once the confirmation arrives. Keep it alive for
/// as long as the subscription should exist.
async fn subscribe(port: u16, command: &str, channel: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect for subscribe");
    let request = format!(
        "*2\r\n${}\r\n{command}\r\n${}\r\n{channel}\r\n",
        command.len(),
        channel.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send subscribe");
    let mut reply = Vec::new();
    let confirmed = async {
        let mut buf = [0u8; 256];
        loop {
            let n = stream.read(&mut buf).await.expect("read subscribe reply");
            assert!(n > 0, "node {port} closed the subscription");
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            assert!(!text.starts_with('-'), "{command} {channel} failed: {text}");
            if text.contains(channel) && text.ends_with(":1\r\n") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), confirmed)
        .await
        .expect("subscribe confirmation within 5 s");
    stream
}

/// The key count of `slot` on the node on `port`.
async fn count_keys(cluster: &RedisCluster, port: u16, slot: u16) -> Value {
    cluster
        .command(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
        .await
}

#[tokio::test]
async fn three_masters_with_one_replica_each_start_healthy() {
    let started = Instant::now();
    let cluster = RedisCluster::start().await;
    eprintln!("RedisCluster::start() took {:?}", started.elapsed());

    let nodes = cluster.nodes().await;
    assert_eq!(nodes.len(), 6, "{nodes:#?}");
    assert_eq!(nodes.iter().filter(|n| n.myself).count(), 1);
    assert!(nodes.iter().all(|n| n.connected && !n.failed), "{nodes:#?}");
    let masters: Vec<_> = nodes.iter().filter(|n| n.role == Role::Master).collect();
    assert_eq!(masters.len(), 3, "{nodes:#?}");
    let covered: usize = masters.iter().map(|m| m.slot_count()).sum();
    assert_eq!(covered, 16384);
    for master in &masters {
        assert!(master.master_id.is_none());
        let replicas: Vec<_> = nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .collect();
        assert_eq!(
            replicas.len(),
            1,
            "replicas of {}: {replicas:#?}",
            master.port
        );
        assert_eq!(replicas[0].role, Role::Replica);
        assert!(replicas[0].slots.is_empty());
    }

    let mut all_ports = cluster.ports();
    all_ports.sort_unstable();
    let mut node_ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    node_ports.sort_unstable();
    assert_eq!(all_ports, node_ports);
    assert!(all_ports.iter().all(|&p| p < 55535));
    assert_eq!(
        seed_ports(&cluster.seeds()),
        masters.iter().map(|m| m.port).collect::<BTreeSet<u16>>()
    );
    for port in cluster.live_ports() {
        let info = cluster.command_text(port, &["CLUSTER", "INFO"]).await;
        assert!(info.contains("cluster_state:ok"), "port {port}: {info}");
    }
}

#[tokio::test]
async fn slot_of_agrees_with_cluster_keyslot() {
    // One master joined by hand: the cheapest cluster there is.
    let cluster = RedisCluster::start_masters_only(1).await;
    let nodes = cluster.nodes().await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].slots, vec![0..=16383]);

    // Reference values from the cluster specification.
    assert_eq!(RedisCluster::slot_of("123456789"), 0x31C3);
    assert_eq!(
        RedisCluster::slot_of("{user1000}.following"),
        RedisCluster::slot_of("{user1000}.followers")
    );
    let keys = [
        "",
        "foo",
        "123456789",
        "{user1000}.following",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{}",
        "{",
        "}{x}",
        "room:{r-42}:events",
        "hüddle:{ünïcode}",
        "plain:key:without:tag",
    ];
    let port = cluster.ports()[0];
    for key in keys {
        let reply = cluster.command(port, &["CLUSTER", "KEYSLOT", key]).await;
        assert_eq!(
            reply,
            Value::Int(i64::from(RedisCluster::slot_of(key))),
            "key {key:?}"
        );
    }
}

#[tokio::test]
async fn a_key_lives_on_the_master_of_its_slot() {
    let cluster = RedisCluster::start_masters_only(3).await;
    let key = "{room:42}:messages";
    let slot = RedisCluster::slot_of(key);
    let owner = cluster.master_of_slot(slot).await;

    let set = cluster.command(owner, &["SET", key, "hello"]).await;
    assert_eq!(set, Value::Okay);
    assert_eq!(cluster.command_text(owner, &["GET", key]).await, "hello");

    let other = *cluster
        .live_ports()
        .iter()
        .find(|&&p| p != owner)
        .expect("another master");
    let moved = cluster
        .try_command(other, &["GET", key])
        .await
        .expect_err("a non-owner must redirect");
    assert!(
        moved.contains("MOVED") && moved.contains(&format!("{slot} 127.0.0.1:{owner}")),
        "{moved}"
    );

    let owner_stats = cluster.commandstats(owner).await;
    assert_eq!(owner_stats.get("set"), Some(&1), "{owner_stats:?}");
    assert_eq!(owner_stats.get("get"), Some(&1), "{owner_stats:?}");
    let other_stats = cluster.commandstats(other).await;
    assert_eq!(other_stats.get("set"), None, "{other_stats:?}");
}

#[tokio::test]
async fn killed_master_fails_over_and_keeps_an_acknowledged_key() {
    let _heavy = heavy(module_path!()).await;
    let mut cluster = RedisCluster::start().await;
    let key = "{failover}:k";
    let slot = RedisCluster::slot_of(key);
    let owner = cluster.master_of_slot(slot).await;
    cluster.command(owner, &["SET", key, "kept"]).await;
    let replicated = cluster.command(owner, &["WAIT", "1", "2000"]).await;
    assert_eq!(
        replicated,
        Value::Int(1),
        "the replica acknowledged the write"
    );

    let killed = cluster.kill_master_of_slot(slot).await;
    assert_eq!(killed, owner);
    assert!(!seed_ports(&cluster.seeds()).contains(&killed));
    assert!(!cluster.live_ports().contains(&killed));

    let started = Instant::now();
    let new_master = cluster.wait_failover(slot, Duration::from_secs(15)).await;
    eprintln!("failover took {:?}", started.elapsed());
    assert_ne!(new_master, killed);
    assert_eq!(cluster.master_of_slot(slot).await, new_master);
    assert_eq!(
        cluster.command_text(new_master, &["GET", key]).await,
        "kept"
    );

    // The old master comes back as a replica of the new one.
    let started = Instant::now();
    cluster.restart(killed).await;
    eprintln!("restart took {:?}", started.elapsed());
    let new_id = cluster.id_of(new_master).await;
    let nodes = cluster.nodes_from(new_master).await;
    let back = nodes
        .iter()
        .find(|n| n.port == killed)
        .expect("the restarted node is known");
    assert_eq!(back.role, Role::Replica, "{back:?}");
    assert_eq!(back.master_id.as_deref(), Some(new_id.as_str()));
    match cluster.command(killed, &["ROLE"]).await {
        Value::Array(role) => {
            assert_eq!(role.first(), Some(&Value::BulkString(b"slave".to_vec())));
        }
        other => panic!("ROLE answered {other:?}"),
    }
    // It synced the new master's data set: the one key written.
    assert_eq!(cluster.command(killed, &["DBSIZE"]).await, Value::Int(1));
}

#[tokio::test]
async fn a_busy_slot_migrates_step_by_step_and_back() {
    let cluster = RedisCluster::start_masters_only(3).await;
    let tag = "{busy-room}";
    let slot = RedisCluster::slot_of(tag);
    let source = cluster.master_of_slot(slot).await;
    let target = *cluster
        .live_ports()
        .iter()
        .find(|&&p| p != source)
        .expect("another master");
    let keys: Vec<String> = (0..5).map(|i| format!("{tag}:m:{i}")).collect();
    for key in &keys {
        cluster.command(source, &["SET", key, key]).await;
    }

    let migration = SlotMigration::begin(&cluster, slot, target).await;
    assert_eq!((migration.source(), migration.target()), (source, target));
    assert_eq!(migration.move_keys(2).await, 2);

    // Mid-move the source still serves the keys it has and sends the rest,
    // and new keys, to the target with ASK.
    let mut asked = 0;
    for key in &keys {
        match cluster.try_command(source, &["GET", key]).await {
            Ok(value) => assert_eq!(value, Value::BulkString(key.clone().into_bytes())),
            Err(e) => {
                assert!(e.contains(&format!("ASK {slot} 127.0.0.1:{target}")), "{e}");
                asked += 1;
            }
        }
    }
    assert_eq!(asked, 2);
    let new_key = format!("{tag}:new");
    let ask = cluster
        .try_command(source, &["SET", &new_key, "x"])
        .await
        .expect_err("a new key goes to the importing node");
    assert!(ask.contains("ASK"), "{ask}");
    assert_eq!(count_keys(&cluster, target, slot).await, Value::Int(2));

    migration.finish().await;
    assert_eq!(cluster.master_of_slot(slot).await, target);
    assert_eq!(count_keys(&cluster, target, slot).await, Value::Int(5));
    assert_eq!(count_keys(&cluster, source, slot).await, Value::Int(0));
    assert_eq!(
        cluster.command_text(target, &["GET", &keys[4]]).await,
        keys[4]
    );

    cluster.migrate_slot(slot, source).await;
    assert_eq!(cluster.master_of_slot(slot).await, source);
    assert_eq!(count_keys(&cluster, source, slot).await, Value::Int(5));
    assert_eq!(count_keys(&cluster, target, slot).await, Value::Int(0));
}

#[tokio::test]
async fn shard_and_classic_subscriptions_are_listed_per_node() {
    let cluster = RedisCluster::start_masters_only(3).await;
    let shard = "room:{c1}:events";
    let owner = cluster.master_of_slot(RedisCluster::slot_of(shard)).await;
    let other = *cluster
        .live_ports()
        .iter()
        .find(|&&p| p != owner)
        .expect("another master");
    let _shard_sub = subscribe(owner, "SSUBSCRIBE", shard).await;
    let _classic_sub = subscribe(other, "SUBSCRIBE", "classic:events").await;

    let shards = cluster.shard_channels().await;
    assert_eq!(shards.len(), 3, "{shards:?}");
    for (port, channels) in &shards {
        let expected: Vec<String> = if *port == owner {
            vec![shard.to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(channels, &expected, "shard channels on {port}");
    }
    let classic = cluster.classic_channels().await;
    assert_eq!(classic.len(), 3, "{classic:?}");
    for (port, channels) in &classic {
        let expected: Vec<String> = if *port == other {
            vec!["classic:events".to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(channels, &expected, "classic channels on {port}");
    }
}
