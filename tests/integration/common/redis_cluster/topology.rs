//! What a Redis Cluster looks like from the outside: the `CLUSTER NODES`
//! table parsed into [`ClusterNode`]s, and the key → hash slot function of
//! the cluster specification (CRC16-XMODEM of the key or of its hash tag,
//! modulo 16384), written here so tests can pick keys by slot without a
//! round trip.

use std::ops::RangeInclusive;

/// Number of hash slots in every Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// A node's role in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Serves a share of the slots.
    Master,
    /// Replicates one master and may take over its slots.
    Replica,
}

/// One line of `CLUSTER NODES`, as one node sees the cluster.
#[derive(Clone, Debug)]
pub(crate) struct ClusterNode {
    /// The node's 40-character cluster id.
    pub(crate) id: String,
    /// Its client port on 127.0.0.1 (0 while the address is unknown).
    pub(crate) port: u16,
    /// Master or replica.
    pub(crate) role: Role,
    /// For a replica, the id of the master it replicates.
    pub(crate) master_id: Option<String>,
    /// For a master, the slots it serves (migrating/importing markers are
    /// left out; they are not ownership).
    pub(crate) slots: Vec<RangeInclusive<u16>>,
    /// Flagged `fail` or `fail?` by the node that answered.
    pub(crate) failed: bool,
    /// The cluster-bus link to it is up, as the answering node sees it.
    pub(crate) connected: bool,
    /// This line describes the node that answered.
    pub(crate) myself: bool,
}

impl ClusterNode {
    /// Whether this node is a master serving `slot`.
    pub(crate) fn serves(&self, slot: u16) -> bool {
        self.role == Role::Master && self.slots.iter().any(|range| range.contains(&slot))
    }

    /// How many slots this node serves.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.iter().map(|range| range.clone().count()).sum()
    }
}

/// Parses the text of `CLUSTER NODES`; panics on a line it cannot read, so
/// a format surprise is reported instead of misread.
pub(crate) fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse_line(line).unwrap_or_else(|| panic!("unreadable CLUSTER NODES line: {line:?}"))
        })
        .collect()
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot>...`
fn parse_line(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let address = fields[1].split([',', '@']).next()?;
    let port = address.rsplit_once(':')?.1.parse().ok()?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let role = if flags.contains(&"master") {
        Role::Master
    } else if flags.contains(&"slave") {
        Role::Replica
    } else {
        // A node still in handshake has neither flag: treat it as a
        // master without slots, which no check mistakes for an owner.
        Role::Master
    };
    let master_id = (fields[3] != "-").then(|| fields[3].to_string());
    let mut slots = Vec::new();
    for spec in &fields[8..] {
        if spec.starts_with('[') {
            continue;
        }
        let range = match spec.split_once('-') {
            Some((start, end)) => start.parse().ok()?..=end.parse().ok()?,
            None => {
                let slot = spec.parse().ok()?;
                slot..=slot
            }
        };
        slots.push(range);
    }
    Some(ClusterNode {
        id: fields[0].to_string(),
        port,
        role,
        master_id,
        slots,
        failed: flags.iter().any(|flag| flag.starts_with("fail")),
        connected: fields[7] == "connected",
        myself: flags.contains(&"myself"),
    })
}

/// The hash slot of `key` per the cluster specification: when the key has
/// a `{...}` hash tag (the first `{` followed later by a `}` with at least
/// one byte between them), only the tag is hashed.
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16_xmodem(hashed) % SLOTS
}

/// CRC16-CCITT in the XMODEM variant (polynomial 0x1021, initial value 0,
/// no reflection), bit by bit: speed does not matter here.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _bit in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}
