//! Moving one hash slot between masters while the cluster serves traffic,
//! with the steps the cluster specification documents:
//!
//! 1. `CLUSTER SETSLOT <slot> IMPORTING <source-id>` on the target;
//! 2. `CLUSTER SETSLOT <slot> MIGRATING <target-id>` on the source (from
//!    now on the source answers `ASK` for keys it no longer has);
//! 3. `CLUSTER GETKEYSINSLOT` + `MIGRATE … KEYS …` in batches until the
//!    source has no key left in the slot;
//! 4. `CLUSTER SETSLOT <slot> NODE <target-id>` on the target, then the
//!    source, then every other master.
//!
//! [`SlotMigration`] exposes the steps so a test can send traffic between
//! them; `RedisCluster::migrate_slot` runs them all.

use std::time::{Duration, Instant};

use super::{POLL, RedisCluster, text};

/// How long one `MIGRATE` batch may take on the source, in milliseconds.
const MIGRATE_TIMEOUT_MS: &str = "5000";
/// How long the other nodes have to learn the slot's new owner.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// One slot on its way from its master to another master; begun with
/// [`SlotMigration::begin`], ended with [`SlotMigration::finish`].
pub(crate) struct SlotMigration<'a> {
    /// The cluster the slot moves in.
    cluster: &'a RedisCluster,
    /// The slot being moved.
    slot: u16,
    /// Port of the master that served the slot when the move began.
    source: u16,
    /// Port of the master receiving it.
    target: u16,
    /// The target's node id, for `MIGRATING` and `NODE`.
    target_id: String,
}

impl<'a> SlotMigration<'a> {
    /// Marks `slot` importing on the master on `to_port` and migrating on
    /// its current master. Panics when `to_port` is not another master.
    pub(crate) async fn begin(cluster: &'a RedisCluster, slot: u16, to_port: u16) -> Self {
        let source = cluster.master_of_slot(slot).await;
        assert_ne!(source, to_port, "slot {slot} is already on {to_port}");
        let target_is_master = cluster
            .nodes()
            .await
            .iter()
            .any(|node| node.port == to_port && node.role == super::Role::Master);
        assert!(target_is_master, "port {to_port} is not a master");
        let source_id = cluster.id_of(source).await;
        let target_id = cluster.id_of(to_port).await;
        let slot_arg = slot.to_string();
        cluster
            .command(
                to_port,
                &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source_id],
            )
            .await;
        cluster
            .command(
                source,
                &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target_id],
            )
            .await;
        SlotMigration {
            cluster,
            slot,
            source,
            target: to_port,
            target_id,
        }
    }

    /// Port of the master the slot is moving away from.
    pub(crate) fn source(&self) -> u16 {
        self.source
    }

    /// Port of the master the slot is moving to.
    pub(crate) fn target(&self) -> u16 {
        self.target
    }

    /// Moves up to `batch` of the keys still on the source with one
    /// `MIGRATE`; returns how many it moved (0: none left).
    pub(crate) async fn move_keys(&self, batch: usize) -> usize {
        let reply = self
            .cluster
            .command(
                self.source,
                &[
                    "CLUSTER",
                    "GETKEYSINSLOT",
                    &self.slot.to_string(),
                    &batch.to_string(),
                ],
            )
            .await;
        let keys: Vec<String> = redis::from_redis_value(reply)
            .unwrap_or_else(|e| panic!("GETKEYSINSLOT {}: {e}", self.slot));
        if keys.is_empty() {
            return 0;
        }
        let target = self.target.to_string();
        let mut args = vec![
            "MIGRATE",
            "127.0.0.1",
            &target,
            "",
            "0",
            MIGRATE_TIMEOUT_MS,
            "KEYS",
        ];
        args.extend(keys.iter().map(String::as_str));
        let reply = text(&self.cluster.command(self.source, &args).await);
        // NOKEY: every key of the batch expired or was deleted meanwhile.
        assert!(
            reply == "OK" || reply == "NOKEY",
            "MIGRATE of slot {} answered {reply}",
            self.slot
        );
        keys.len()
    }

    /// Moves any keys left, then assigns the slot to the target on the
    /// target, the source and every other master, and waits (10 s) until
    /// every live node sees the target as its owner.
    pub(crate) async fn finish(self) {
        while self.move_keys(100).await > 0 {}
        let slot_arg = self.slot.to_string();
        let assign = ["CLUSTER", "SETSLOT", &slot_arg, "NODE", &self.target_id];
        self.cluster.command(self.target, &assign).await;
        self.cluster.command(self.source, &assign).await;
        let others: Vec<u16> = self
            .cluster
            .nodes()
            .await
            .iter()
            .filter(|node| node.role == super::Role::Master)
            .map(|node| node.port)
            .filter(|&port| port != self.source && port != self.target)
            .filter(|port| self.cluster.live_ports().contains(port))
            .collect();
        for port in others {
            self.cluster.command(port, &assign).await;
        }
        let deadline = Instant::now() + PROPAGATION_TIMEOUT;
        loop {
            let mut agreed = true;
            for port in self.cluster.live_ports() {
                let view = self.cluster.nodes_from(port).await;
                let owner = view.iter().find(|node| node.serves(self.slot));
                agreed &= owner.is_some_and(|node| node.port == self.target);
            }
            if agreed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every node sees slot {} on {} within {PROPAGATION_TIMEOUT:?}",
                self.slot,
                self.target
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
