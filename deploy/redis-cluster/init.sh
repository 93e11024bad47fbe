#!/bin/sh
# One-shot set-up of the compose stack's Redis Cluster (service
# `redis-cluster-init`, profile `cluster`). Idempotent: it creates the
# cluster only when no node knows any other yet, and otherwise just waits
# for the existing cluster to be healthy. It exits 0 once every slot is
# served (`cluster_state:ok`) by a master with its replicas in sync, 1
# otherwise; the Huddle nodes start only after it succeeded.
#
# Settings (environment):
#   REDIS_CLUSTER_NODES     host:port of every node, space-separated
#   REDIS_CLUSTER_REPLICAS  replicas per master (default 1)
#   REDIS_CLUSTER_WAIT      seconds to wait for each node and for the
#                           cluster to be healthy (default 60)
set -eu

nodes="${REDIS_CLUSTER_NODES:?REDIS_CLUSTER_NODES: host:port of every node}"
replicas="${REDIS_CLUSTER_REPLICAS:-1}"
wait_s="${REDIS_CLUSTER_WAIT:-60}"

say() { printf 'redis-cluster-init: %s\n' "$*"; }

# A field of CLUSTER INFO on node $1 (host:port), or nothing.
info_field() { # NODE FIELD
  redis-cli -h "${1%:*}" -p "${1##*:}" cluster info 2>/dev/null |
    tr -d '\r' | sed -n "s/^$2://p"
}

# Every node must answer before anything is decided.
for node in $nodes; do
  tries=0
  until [ "$(redis-cli -h "${node%:*}" -p "${node##*:}" ping 2>/dev/null | tr -d '\r')" = PONG ]; do
    tries=$((tries + 1))
    if [ "$tries" -ge "$wait_s" ]; then
      say "$node does not answer PING"
      exit 1
    fi
    sleep 1
  done
  enabled="$(redis-cli -h "${node%:*}" -p "${node##*:}" info cluster 2>/dev/null |
    tr -d '\r' | sed -n 's/^cluster_enabled://p')"
  if [ "$enabled" != 1 ]; then
    say "$node does not run in cluster mode (cluster-enabled yes)"
    exit 1
  fi
done

# Created before (a node knows others): never create again. redis-cli would
# refuse anyway, since those nodes are not empty.
created=""
for node in $nodes; do
  known="$(info_field "$node" cluster_known_nodes)"
  if [ -n "$known" ] && [ "$known" -gt 1 ]; then
    created="$node"
    break
  fi
done

if [ -n "$created" ]; then
  say "the cluster exists already ($created knows $(info_field "$created" cluster_known_nodes) nodes)"
else
  say "creating the cluster: $nodes, $replicas replica(s) per master"
  # shellcheck disable=SC2086 # one argument per node
  redis-cli --cluster create $nodes --cluster-replicas "$replicas" --cluster-yes
fi

first="${nodes%% *}"

# The address (ip:port) of every master that serves slots, as $first sees it.
masters() {
  redis-cli -h "${first%:*}" -p "${first##*:}" cluster nodes 2>/dev/null | tr -d '\r' |
    awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9 { sub(/@.*/, "", $2); print $2 }'
}

# True when every slot is served and every master has $replicas replicas
# in sync: Huddle's nodes with --redis-replica-acks need them from the
# first write.
healthy() {
  [ "$(info_field "$first" cluster_state)" = ok ] || return 1
  count=0
  for master in $(masters); do
    online="$(redis-cli -h "${master%:*}" -p "${master##*:}" info replication 2>/dev/null |
      grep -c 'state=online' || true)"
    [ "$online" -ge "$replicas" ] || return 1
    count=$((count + 1))
  done
  [ "$count" -gt 0 ]
}

tries=0
until healthy; do
  tries=$((tries + 1))
  if [ "$tries" -ge "$wait_s" ]; then
    say "not every slot is served by a master with $replicas replica(s) in sync after ${wait_s}s:"
    redis-cli -h "${first%:*}" -p "${first##*:}" cluster nodes || true
    exit 1
  fi
  sleep 1
done
say "cluster_state:ok, every master has $replicas replica(s) in sync"
redis-cli -h "${first%:*}" -p "${first##*:}" cluster nodes
