#!/usr/bin/env bash
# Runs every Huddle test. Integration tests start their own redis-server
# processes on free ports, so redis-server must be on PATH: this script
# installs it from Debian's packages when it is missing. A test that needs
# Redis fails (never skips) without it.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

install_debian() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "test.sh: installing $* from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! need cargo; then
  echo "test.sh: cargo is not on PATH; install Rust (rustup) first" >&2
  exit 1
fi
if ! need redis-server; then
  install_debian redis-server
fi
need redis-server || { echo "test.sh: redis-server is still missing" >&2; exit 1; }
# redis-cli: the Redis Cluster tests create their clusters with it.
need redis-cli || install_debian redis-tools
# ss (iproute2): the listener test reads the accept backlog.
need ss || install_debian iproute2
# openssl: the TLS test makes its own certificates.
need openssl || install_debian openssl
# nginx: the load-balancer test runs a real one in front of three nodes.
if ! need nginx && [ ! -x /usr/sbin/nginx ]; then
  install_debian nginx-light
fi

# Enough descriptors for the connection tests.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo test --locked --all-targets "$@"

# The multi-node tests once more, on a Redis Cluster (3 masters + 3
# replicas, shared by these tests under a key prefix each): nodes started
# with --redis-cluster instead of --redis.
if [ "$#" -eq 0 ]; then
  HUDDLE_TEST_REDIS=cluster cargo test --locked --test integration -- \
    cluster:: messages:: moderation:: presence:: rooms:: abuse:: storm:: reads:: \
    --skip nginx_cluster:: --skip store_conformance:: --skip bench_abuse::
fi

# The web client's end-to-end tests: headless Chromium (Debian's) driven by
# playwright-core, against real nodes.
if [ -f tests/web/package.json ] && [ "$#" -eq 0 ]; then
  need chromium || install_debian chromium
  need node || install_debian nodejs npm
  cargo build --locked --bin huddle
  export HUDDLE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/huddle"
  (cd tests/web && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1)
fi
