"""Checks of the Kubernetes manifests: the base in k8s/ and the overlay in
k8s-overlays/redis-cluster/, rendered with kustomize (and with a renderer of
our own for exactly the features they use, which must agree), validated
against the Kubernetes JSON schemas, then held to the rules the manifests
must keep."""

import os
import re
import shlex
import subprocess

import jsonschema
import kubernetes_validate
import yaml

from checks_common import ROOT, check, check_env, fail, load_yaml_docs, ok, section

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


def check_kubernetes():
    """Checks the base and the overlay."""
    check_kustomization(K8S, "single")
    check_kustomization(OVERLAY, "cluster")
