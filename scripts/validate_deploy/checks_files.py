"""Checks of the files under deploy/: the Dockerfile, the compose file (both
profiles), nginx, Prometheus and Grafana."""

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from checks_common import ROOT, check, check_env, duration_seconds, fail, run, section


def check_files():
    """Runs every check of deploy/."""
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

    section("Prometheus")
    promtool = os.environ["PROMTOOL"]
    run([promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")], "promtool check config (with alerts.yml)")
    run([promtool, "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")], "promtool check rules alerts.yml")

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
