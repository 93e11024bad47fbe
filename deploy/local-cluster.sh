#!/usr/bin/env bash
# A Huddle cluster on loopback, without Docker: one redis-server (append-only
# file on), three Huddle nodes on it, and nginx in front of them, balancing
# WebSockets with no stickiness, configured like the compose stack (both
# include deploy/nginx/huddle-proxy.conf).
#
#   deploy/local-cluster.sh start     start everything, print the URL
#   deploy/local-cluster.sh status    show what runs (exit 3: nothing runs)
#   deploy/local-cluster.sh stop      stop what `start` started, nothing else
#
# Settings, as environment variables (or the flags in brackets, after the
# command):
#   HUDDLE_BIN          the huddle binary [--bin]; default: target/release/huddle,
#                       else target/debug/huddle (under CARGO_TARGET_DIR or
#                       ./target), else `huddle` on PATH
#   CLUSTER_DIR         state directory: logs, Redis data, pid list [--dir];
#                       default ${XDG_RUNTIME_DIR:-/tmp}/huddle-local-cluster-$UID
#   CLUSTER_PORT        nginx's port on 127.0.0.1 [--port]; default 8080
#   CLUSTER_REDIS_PORT  Redis's port on 127.0.0.1 [--redis-port]; default 6390
#   CLUSTER_NODES       how many nodes [--nodes]; default 3
#   CLUSTER_NODE_PORTS  the nodes' ports, space-separated [--node-ports];
#                       default: each node picks a free one
#   NGINX_BIN           nginx binary; default `nginx` on PATH, else /usr/sbin/nginx
#   REDIS_SERVER        redis-server binary; default `redis-server` on PATH
# Other HUDDLE_* variables reach the nodes as their settings (for example
# HUDDLE_JWT_SECRET or HUDDLE_DRAIN_WINDOW); --bind, --redis and --node-id
# are set by this script.
#
# Redis keeps its data in CLUSTER_DIR/redis across stop and start; remove
# the directory to start from nothing.
#
# `stop` signals only processes listed in CLUSTER_DIR/pids, one line per
# process that `start` started: `KIND NAME PID START` (KIND is redis, node
# or nginx; START is the process' start time, so a recycled pid is never
# taken for ours). Nodes get SIGTERM and drain (their clients are closed
# with 1012); what is still running after the grace period gets SIGKILL.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

say() { printf 'local-cluster: %s\n' "$*"; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# --- settings ---------------------------------------------------------------

command_name="${1:-}"
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) HUDDLE_BIN="$2"; shift 2 ;;
    --dir) CLUSTER_DIR="$2"; shift 2 ;;
    --port) CLUSTER_PORT="$2"; shift 2 ;;
    --redis-port) CLUSTER_REDIS_PORT="$2"; shift 2 ;;
    --nodes) CLUSTER_NODES="$2"; shift 2 ;;
    --node-ports) CLUSTER_NODE_PORTS="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

dir="${CLUSTER_DIR:-${XDG_RUNTIME_DIR:-/tmp}/huddle-local-cluster-$(id -u)}"
port="${CLUSTER_PORT:-8080}"
redis_port="${CLUSTER_REDIS_PORT:-6390}"
nodes="${CLUSTER_NODES:-3}"
pids="$dir/pids"

# --- processes --------------------------------------------------------------

# The start time of process $1 (clock ticks since boot), or nothing when it
# does not exist or is a zombie. With the pid it identifies one process.
proc_start() {
  local pid="$1" stat rest
  if [ -r "/proc/$pid/stat" ]; then
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 0
    # Fields after "(comm)": state is the 3rd field of the line, start time
    # the 22nd. comm may contain spaces, so cut at the last ')'.
    rest="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    [ "$1" = Z ] && return 0
    printf '%s\n' "${20}"
  else
    ps -o lstart= -p "$pid" 2>/dev/null | tr -s ' ' '_' || true
  fi
}

# Records a process this script started.
remember() { # KIND NAME PID
  local start
  start="$(proc_start "$3")"
  [ -n "$start" ] || start=gone
  printf '%s %s %s %s\n' "$1" "$2" "$3" "$start" >>"$pids"
}

# True when the recorded process still runs and is the one we started.
ours_alive() { # PID START
  local now
  now="$(proc_start "$1")"
  [ -n "$now" ] && [ "$now" = "$2" ]
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when a Redis on 127.0.0.1:$1 answers PING (in a subshell, so the
# descriptor never leaks and a refused connection is just false).
redis_pong() (
  reply=""
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 reply <&3 || true
  [ "${reply%$'\r'}" = "+PONG" ]
) 2>/dev/null

tail_log() { # FILE
  if [ -f "$1" ]; then
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 30 "$1" >&2 || true
  fi
}

# --- start ------------------------------------------------------------------

# A failed start: show the log, stop what was started, exit 1.
abort() { # MESSAGE LOG
  say "$1" >&2
  tail_log "$2"
  say "start failed; stopping what was started" >&2
  stop quiet || true
  exit 1
}

find_huddle() {
  if [ -n "${HUDDLE_BIN:-}" ]; then
    [ -x "$HUDDLE_BIN" ] || die "HUDDLE_BIN=$HUDDLE_BIN is not an executable"
    printf '%s\n' "$HUDDLE_BIN"
    return
  fi
  local target="${CARGO_TARGET_DIR:-$repo/target}" candidate
  for candidate in "$target/release/huddle" "$target/debug/huddle"; do
    if [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return
    fi
  done
  if command -v huddle >/dev/null 2>&1; then
    command -v huddle
    return
  fi
  die "no huddle binary: build it (cargo build --release) or set HUDDLE_BIN"
}

find_nginx() {
  if [ -n "${NGINX_BIN:-}" ]; then
    printf '%s\n' "$NGINX_BIN"
  elif command -v nginx >/dev/null 2>&1; then
    command -v nginx
  elif [ -x /usr/sbin/nginx ]; then
    printf '%s\n' /usr/sbin/nginx
  else
    die "nginx is missing: install it (Debian: apt-get install nginx-light) or set NGINX_BIN"
  fi
}

find_redis() {
  local bin="${REDIS_SERVER:-redis-server}"
  command -v "$bin" >/dev/null 2>&1 ||
    die "redis-server is missing: install it (Debian: apt-get install redis-server) or set REDIS_SERVER"
  command -v "$bin"
}

# Writes nginx's configuration for the node addresses given as arguments.
write_nginx_conf() {
  local nginx_bin="$1" conf="$dir/nginx/nginx.conf" modules temp addr limit
  shift
  modules="$("$nginx_bin" -V 2>&1)"
  temp="$dir/nginx/temp"
  mkdir -p "$temp"
  # Each proxied WebSocket holds two connections.
  limit="$(ulimit -n 2>/dev/null || echo 1024)"
  case "$limit" in ''|unlimited|*[!0-9]*) limit=16384 ;; esac
  [ "$limit" -gt 16384 ] && limit=16384
  {
    echo "# Written by deploy/local-cluster.sh; regenerated at every start."
    echo "daemon off;"
    echo "worker_processes 1;"
    echo "pid \"$dir/nginx/nginx.pid\";"
    echo "error_log \"$dir/nginx/error.log\" warn;"
    echo "events { worker_connections $limit; }"
    echo "http {"
    echo "    access_log \"$dir/nginx/access.log\";"
    echo "    server_tokens off;"
    echo "    client_body_temp_path \"$temp/body\";"
    echo "    proxy_temp_path \"$temp/proxy\";"
    # Temp paths of the modules this nginx has (their compiled-in defaults
    # are not writable without root).
    case "$modules" in *--without-http_fastcgi_module*) ;; *) echo "    fastcgi_temp_path \"$temp/fastcgi\";" ;; esac
    case "$modules" in *--without-http_uwsgi_module*) ;; *) echo "    uwsgi_temp_path \"$temp/uwsgi\";" ;; esac
    case "$modules" in *--without-http_scgi_module*) ;; *) echo "    scgi_temp_path \"$temp/scgi\";" ;; esac
    echo "    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }"
    echo "    upstream huddle {"
    echo "        least_conn;"
    for addr in "$@"; do
      echo "        server $addr max_fails=1 fail_timeout=5s;"
    done
    echo "        keepalive 16;"
    echo "    }"
    echo "    server {"
    echo "        listen 127.0.0.1:$port;"
    echo "        include \"$here/nginx/huddle-proxy.conf\";"
    echo "    }"
    echo "}"
  } >"$conf"
}

start() {
  local huddle_bin redis_bin nginx_bin i node_port node_id addr deadline pid
  local -a node_ports addrs
  huddle_bin="$(find_huddle)"
  redis_bin="$(find_redis)"
  nginx_bin="$(find_nginx)"
  case "$nodes" in ''|*[!0-9]*|0) die "CLUSTER_NODES must be a positive number" ;; esac

  mkdir -p "$dir"
  if [ -f "$pids" ]; then
    while read -r _kind name pid start; do
      if ours_alive "$pid" "$start"; then
        die "already running ($name, pid $pid; state in $dir): run \`$0 stop\` first"
      fi
    done <"$pids"
    rm -f "$pids"
  fi

  read -r -a node_ports <<<"${CLUSTER_NODE_PORTS:-}"
  for p in "$port" "$redis_port" "${node_ports[@]}"; do
    [ "$p" = 0 ] && continue
    port_busy "$p" && die "port $p on 127.0.0.1 is in use: choose others (see --help)"
  done


  # Redis, append-only file on, data kept in the state directory.
  mkdir -p "$dir/redis"
  "$redis_bin" --port "$redis_port" --bind 127.0.0.1 --dir "$dir/redis" \
    --appendonly yes --appendfsync everysec --save "" --daemonize no \
    --logfile "" </dev/null >"$dir/redis.log" 2>&1 &
  remember redis redis $!
  deadline=$((SECONDS + 10))
  until redis_pong "$redis_port"; do
    if [ $SECONDS -ge $deadline ]; then
      abort "redis-server did not answer PING within 10 s" "$dir/redis.log"
    fi
    sleep 0.1
  done

  # The nodes. Each prints `listening on ADDR` on stdout once it listens.
  for ((i = 1; i <= nodes; i++)); do
    node_port="${node_ports[$((i - 1))]:-0}"
    node_id="local-$i"
    NO_COLOR="${NO_COLOR:-1}" "$huddle_bin" serve --bind "127.0.0.1:$node_port" \
      --redis "redis://127.0.0.1:$redis_port" --node-id "$node_id" \
      </dev/null >"$dir/node-$i.out" 2>"$dir/node-$i.log" &
    remember node "$node_id" $!
  done
  for ((i = 1; i <= nodes; i++)); do
    deadline=$((SECONDS + 20))
    addr=""
    until [ -n "$addr" ]; do
      addr="$(sed -n 's/^listening on //p' "$dir/node-$i.out" 2>/dev/null | head -n 1)"
      if [ -z "$addr" ] && [ $SECONDS -ge $deadline ]; then
        abort "node local-$i did not start within 20 s" "$dir/node-$i.log"
      fi
      [ -n "$addr" ] || sleep 0.1
    done
    addrs+=("$addr")
  done
  for ((i = 1; i <= nodes; i++)); do
    deadline=$((SECONDS + 20))
    until "$huddle_bin" health --url "http://${addrs[$((i - 1))]}/readyz" --timeout 2s 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        abort "node local-$i was not ready within 20 s" "$dir/node-$i.log"
      fi
      sleep 0.2
    done
  done

  # nginx in front, in the foreground of its own background job. (nginx
  # reads inherited listening sockets from an NGINX variable: never pass one.)
  mkdir -p "$dir/nginx"
  write_nginx_conf "$nginx_bin" "${addrs[@]}"
  env -u NGINX "$nginx_bin" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log" \
    </dev/null >"$dir/nginx/stderr.log" 2>&1 &
  pid=$!
  remember nginx nginx "$pid"
  deadline=$((SECONDS + 10))
  until "$huddle_bin" health --url "http://127.0.0.1:$port/readyz" --timeout 2s 2>/dev/null; do
    if [ $SECONDS -ge $deadline ] || [ -z "$(proc_start "$pid")" ]; then
      abort "nginx did not serve /readyz on port $port within 10 s" "$dir/nginx/error.log"
    fi
    sleep 0.1
  done

  {
    echo "URL=http://127.0.0.1:$port"
    echo "WS_URL=ws://127.0.0.1:$port/ws"
    echo "REDIS_URL=redis://127.0.0.1:$redis_port"
    echo "NODES=\"${addrs[*]}\""
  } >"$dir/cluster.env"
  say "up: $nodes nodes on redis://127.0.0.1:$redis_port behind nginx"
  for ((i = 1; i <= nodes; i++)); do
    say "  node local-$i  http://${addrs[$((i - 1))]}  (log $dir/node-$i.log)"
  done
  say "state and logs in $dir; stop with: $0 stop"
  echo "url: http://127.0.0.1:$port  (WebSocket: ws://127.0.0.1:$port/ws)"
}

# --- stop -------------------------------------------------------------------

# Signals the recorded processes of one kind that are still ours and waits
# up to $3 seconds for them to exit; then SIGKILL.
stop_kind() { # KIND SIGNAL TIMEOUT
  local kind="$1" signal="$2" timeout="$3" k name pid start deadline entry
  local -a waiting=() left=()
  while read -r k name pid start; do
    [ "$k" = "$kind" ] || continue
    if ours_alive "$pid" "$start"; then
      kill "-$signal" "$pid" 2>/dev/null || true
      waiting+=("$name:$pid:$start")
      [ -n "$quiet" ] || say "stopping $name (pid $pid)"
    else
      [ -n "$quiet" ] || say "$name (pid $pid) was not running"
    fi
  done <"$pids"
  deadline=$((SECONDS + timeout))
  while :; do
    left=()
    for entry in "${waiting[@]}"; do
      IFS=: read -r name pid start <<<"$entry"
      ours_alive "$pid" "$start" && left+=("$entry")
    done
    [ ${#left[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      for entry in "${left[@]}"; do
        IFS=: read -r name pid start <<<"$entry"
        say "$name (pid $pid) still running after ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      done
      sleep 0.2
      return 0
    fi
    sleep 0.1
  done
}

stop() {
  quiet="${1:-}"
  if [ ! -f "$pids" ]; then
    [ -n "$quiet" ] || say "nothing to stop (no $pids)"
    return 0
  fi
  # The nodes first: they drain, closing their clients with 1012 (through
  # nginx); then nginx (fast shutdown: it would otherwise wait for open
  # WebSockets); Redis last (it flushes its append-only file on SIGTERM).
  # A node exits within its shutdown grace (HUDDLE_SHUTDOWN_GRACE, 30 s).
  local grace=30
  case "${HUDDLE_SHUTDOWN_GRACE:-}" in
    *ms) grace=1 ;;
    *s) grace="${HUDDLE_SHUTDOWN_GRACE%s}" ;;
    *m) grace="${HUDDLE_SHUTDOWN_GRACE%m}"; grace=$((grace * 60)) ;;
    *[0-9]) grace="$HUDDLE_SHUTDOWN_GRACE" ;;
  esac
  case "$grace" in ''|*[!0-9]*) grace=30 ;; esac
  stop_kind node TERM $((grace + 5))
  stop_kind nginx TERM 10
  stop_kind redis TERM 15
  rm -f "$pids" "$dir/cluster.env"
  [ -n "$quiet" ] || say "stopped (logs and Redis data kept in $dir)"
}

status() {
  if [ ! -f "$pids" ]; then
    say "not running (no $pids)"
    return 3
  fi
  local kind name pid start running=0
  while read -r kind name pid start; do
    if ours_alive "$pid" "$start"; then
      say "$kind $name pid $pid: running"
      running=$((running + 1))
    else
      say "$kind $name pid $pid: not running"
    fi
  done <"$pids"
  [ -f "$dir/cluster.env" ] && sed -n 's/^URL=/url: /p' "$dir/cluster.env"
  [ "$running" -gt 0 ] || return 3
}

case "$command_name" in
  start) start ;;
  stop) stop "" ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 64 ;;
esac
