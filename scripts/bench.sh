#!/usr/bin/env bash
# Runs `huddle bench` against a fresh local setup: one redis-server, N nodes
# (release build), all on loopback, then stops what it started.
#
#   scripts/bench.sh fanout   [huddle bench flags…]
#   scripts/bench.sh saturate [flags…]
#   scripts/bench.sh connections --connections 19000 [flags…]
#   scripts/bench.sh abuse [--connections 10 --duration 10s …]
#
# NODES (default 2) sets how many nodes; NODE_FLAGS adds flags to each node,
# NODE_ENV environment (e.g. TOKIO_WORKER_THREADS=1), and NODE_BIN runs
# another build as the nodes (A/B against an older commit) while the load
# generator stays this one.
# The server PIDs (nodes and Redis) are passed to the bench, which reports
# their CPU time and memory. `abuse` measures the nodes' own limits: its
# nodes keep the default rate limit (NODE_FLAGS can change it) and the bench
# gets the Redis URL instead of the PIDs.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: scripts/bench.sh fanout|saturate|connections|abuse [flags]}
shift
nodes=${NODES:-2}
bin=${HUDDLE_BIN:-target/release/huddle}
[ -x "$bin" ] || cargo build --release --locked
state=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$state" \
  --logfile "$state/redis.log" &
pids+=($!)
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

urls=()
# CPU counts Redis too; memory per connection counts the nodes only.
server_pids=()
[ "$mode" = connections ] || server_pids=(--server-pid "$redis_pid")
limits=(--rate-limit 100000 --rate-burst 200000)
# Load tests turn the per-minute abuse limits off (variables, not flags, so an
# older NODE_BIN that has no such limits starts all the same).
limit_env=(HUDDLE_ROOM_CREATE_PER_MIN=0 HUDDLE_CODE_MISS_PER_MIN=0)
abuse_flags=()
if [ "$mode" = abuse ]; then
  limits=()
  limit_env=()
  server_pids=()
  abuse_flags=(--redis-url "redis://127.0.0.1:$port")
fi
for i in $(seq "$nodes"); do
  # shellcheck disable=SC2086
  env ${limit_env[@]+"${limit_env[@]}"} ${NODE_ENV:-} "${NODE_BIN:-$bin}" serve --bind 127.0.0.1:0 --redis "redis://127.0.0.1:$port" --node-id "bench-$i" \
    ${limits[@]+"${limits[@]}"} --max-connections 100000 ${NODE_FLAGS:-} \
    >"$state/node-$i.out" 2>"$state/node-$i.err" &
  pids+=($!)
  [ "$mode" = abuse ] || server_pids+=(--server-pid "$!")
  for _ in $(seq 100); do grep -q "listening on" "$state/node-$i.out" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/^listening on //p' "$state/node-$i.out")
  urls+=(--url "ws://$addr/ws")
done
echo "redis pid $redis_pid; node pids ${pids[*]:1}" >&2
"$bin" bench "$mode" "${urls[@]}" ${server_pids[@]+"${server_pids[@]}"} ${abuse_flags[@]+"${abuse_flags[@]}"} "$@"
