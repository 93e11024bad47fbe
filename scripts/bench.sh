#!/usr/bin/env bash
# Runs `huddle bench` against a fresh local setup: one redis-server, N nodes
# (release build), all on loopback, then stops what it started.
#
#   scripts/bench.sh fanout   [huddle bench flags…]
#   scripts/bench.sh saturate [flags…]
#   scripts/bench.sh connections --connections 19000 [flags…]
#   scripts/bench.sh abuse [--connections 10 --duration 10s …]
#   scripts/bench.sh storm [--connections 20000 --rooms 100 --join-rate 1000 …]
#
# `storm` (issue 13) starts NODES=3 by default with a JWT secret of its own,
# passes the first node's PID as `--victim-pid` (the bench kills it with
# SIGKILL once everyone has joined: half the clients are on it, the rest
# on the others, where they reconnect) and the secret to the bench, which
# signs its clients' tokens. The clients are split over worker processes
# (one per 8,000 by default, `--workers`) as one process may open 20,000
# files at most.
#
# NODES (default 2; 3 for storm) sets how many nodes; NODE_FLAGS adds flags to each node,
# NODE_ENV environment (e.g. TOKIO_WORKER_THREADS=1), and NODE_BIN runs
# another build as the nodes (A/B against an older commit) while the load
# generator stays this one.
# The server PIDs (nodes and Redis) are passed to the bench, which reports
# their CPU time and memory. `abuse` measures the nodes' own limits: its
# nodes keep the default rate limit (NODE_FLAGS can change it) and the bench
# gets the Redis URL instead of the PIDs.
#
# CLUSTER=1 (or REDIS_MODE=cluster) starts a local Redis Cluster of MASTERS
# (default 3) masters instead of one redis-server, REPLICAS=1 adds a replica
# per master, and the nodes get `--redis-cluster` with the masters as seeds
# (NODE_FLAGS="--redis-replica-acks 1" measures acknowledged writes). Every
# Redis process's PID goes to the bench. After a cluster run the script
# prints each Redis's INFO commandstats deltas over the run, per
# acknowledged send, and the cluster-bus messages sent for pub/sub
# (scripts/bench_commandstats.py). COMMANDSTATS=1 prints the same for one
# Redis; COMMANDSTATS_JSON=FILE also writes them as JSON. KEEP_LOGS=DIR keeps
# the nodes' output (node-N.out, node-N.err) there after the run.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: scripts/bench.sh fanout|saturate|connections|abuse|storm [flags]}
shift
if [ "$mode" = storm ]; then nodes=${NODES:-3}; else nodes=${NODES:-2}; fi
bin=${HUDDLE_BIN:-target/release/huddle}
[ -x "$bin" ] || cargo build --release --locked
state=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$state"/node-* "$KEEP_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$state"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

cluster=0
[ "${CLUSTER:-0}" = 0 ] || cluster=1
[ "${REDIS_MODE:-single}" != cluster ] || cluster=1
stats=${COMMANDSTATS:-$cluster}
if [ "$cluster" = 1 ] && [ "$mode" = abuse ]; then
  echo "bench.sh: abuse reports one Redis's memory; run it without CLUSTER" >&2
  exit 64
fi

# Every Redis process: its port and PID.
redis_ports=()
redis_pids=()
if [ "$cluster" = 0 ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$state" \
    --logfile "$state/redis.log" &
  pids+=($!)
  redis_pid=$!
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis_ports=("$port")
  redis_pids=("$redis_pid")
  redis_flags=(--redis "redis://127.0.0.1:$port")
else
  masters=${MASTERS:-3}
  replicas=${REPLICAS:-0}
  count=$((masters * (1 + replicas)))
  # Free ports whose cluster-bus port (+10000) is free too.
  read -r -a redis_ports <<<"$(python3 -c '
import random, socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    p = random.randint(20000, 55000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); held.append(s)
        ports.append(p)
    except OSError:
        pass
print(" ".join(map(str, ports)))' "$count")"
  for p in "${redis_ports[@]}"; do
    mkdir "$state/redis-$p"
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$state/redis-$p" \
      --logfile "$state/redis-$p/redis.log" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 2000 --cluster-require-full-coverage no &
    pids+=($!)
    redis_pids+=($!)
  done
  addrs=()
  for p in "${redis_ports[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
    addrs+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes \
    >"$state/cluster-create.log" 2>&1 || { cat "$state/cluster-create.log" >&2; exit 1; }
  # Ready: every node sees the whole cluster in state ok, every replica's
  # link to its master is up.
  for _ in $(seq 100); do
    ready=1
    for p in "${redis_ports[@]}"; do
      info=$(redis-cli -p "$p" cluster info; redis-cli -p "$p" info replication)
      grep -q '^cluster_state:ok' <<<"$info" || ready=0
      grep -q "^cluster_known_nodes:$count" <<<"$info" || ready=0
      if grep -q '^role:slave' <<<"$info"; then
        grep -q '^master_link_status:up' <<<"$info" || ready=0
      fi
    done
    [ "$ready" = 1 ] && break
    sleep 0.1
  done
  [ "$ready" = 1 ] || { echo "bench.sh: the Redis Cluster did not become ready" >&2; exit 1; }
  seeds=()
  for p in "${redis_ports[@]}"; do
    redis-cli -p "$p" info replication | grep -q '^role:master' && seeds+=("redis://127.0.0.1:$p")
  done
  redis_flags=(--redis-cluster "$(IFS=,; echo "${seeds[*]}")")
  echo "redis cluster: ${#seeds[@]} masters and $((count - ${#seeds[@]})) replicas on ports ${redis_ports[*]}" >&2
fi

urls=()
# CPU counts Redis too; memory per connection counts the nodes only.
server_pids=()
if [ "$mode" != connections ]; then
  for p in "${redis_pids[@]}"; do server_pids+=(--server-pid "$p"); done
fi
limits=(--rate-limit 100000 --rate-burst 200000)
# Load tests turn the per-minute abuse limits off (variables, not flags, so an
# older NODE_BIN that has no such limits starts all the same).
limit_env=(HUDDLE_ROOM_CREATE_PER_MIN=0 HUDDLE_CODE_MISS_PER_MIN=0)
abuse_flags=()
storm_flags=()
if [ "$mode" = storm ]; then
  # Clients come back as the same user: nodes and bench share a secret.
  HUDDLE_JWT_SECRET="storm-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  export HUDDLE_JWT_SECRET
fi
if [ "$mode" = abuse ]; then
  limits=()
  limit_env=()
  server_pids=()
  abuse_flags=(--redis-url "redis://127.0.0.1:$port")
fi
for i in $(seq "$nodes"); do
  # shellcheck disable=SC2086
  env ${limit_env[@]+"${limit_env[@]}"} ${NODE_ENV:-} "${NODE_BIN:-$bin}" serve --bind 127.0.0.1:0 "${redis_flags[@]}" --node-id "bench-$i" \
    ${limits[@]+"${limits[@]}"} --max-connections 100000 ${NODE_FLAGS:-} \
    >"$state/node-$i.out" 2>"$state/node-$i.err" &
  pids+=($!)
  [ "$mode" = abuse ] || server_pids+=(--server-pid "$!")
  # The first node is the storm's victim; the bench kills it (cleanup's
  # kill of a dead PID is harmless; disowned, its death is not reported).
  if [ "$mode" = storm ] && [ "$i" = 1 ]; then
    storm_flags=(--victim-pid "$!")
    disown "$!"
  fi
  for _ in $(seq 100); do grep -q "listening on" "$state/node-$i.out" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/^listening on //p' "$state/node-$i.out")
  urls+=(--url "ws://$addr/ws")
done
echo "redis pid ${redis_pids[*]}; node pids ${pids[*]:${#redis_pids[@]}}" >&2
if [ "$stats" = 0 ]; then
  "$bin" bench "$mode" "${urls[@]}" ${server_pids[@]+"${server_pids[@]}"} ${abuse_flags[@]+"${abuse_flags[@]}"} \
    ${storm_flags[@]+"${storm_flags[@]}"} "$@"
  exit
fi

# Every Redis's role, commandstats (and cluster info) just before and after.
snapshot() {
  for p in "${redis_ports[@]}"; do
    {
      redis-cli -p "$p" info replication | grep '^role:'
      redis-cli -p "$p" info commandstats
      [ "$cluster" = 0 ] || redis-cli -p "$p" cluster info
    } >"$state/stats-$1-$p.txt"
  done
}
snapshot before
"$bin" bench "$mode" "${urls[@]}" ${server_pids[@]+"${server_pids[@]}"} ${abuse_flags[@]+"${abuse_flags[@]}"} \
  ${storm_flags[@]+"${storm_flags[@]}"} "$@" | tee "$state/report.json"
snapshot after
python3 scripts/bench_commandstats.py "$state" "${COMMANDSTATS_JSON:-}" "${redis_ports[@]}" >&2
