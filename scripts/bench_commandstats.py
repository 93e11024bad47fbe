#!/usr/bin/env python3
"""What each Redis did during a `scripts/bench.sh` run.

    bench_commandstats.py STATE_DIR JSON_OUT|"" PORT...

Reads, for every PORT, STATE_DIR/stats-before-PORT.txt and
STATE_DIR/stats-after-PORT.txt (the output of `INFO replication`,
`INFO commandstats` and, on a cluster, `CLUSTER INFO`, taken just before and
just after the bench) and the bench's JSON line in STATE_DIR/report.json.
Prints, per Redis and in all, the calls of every command over the run and
the calls per acknowledged send (commands run inside scripts count too:
a send is one EVALSHA and the HINCRBY, ZADD, ... of its script), the
microseconds Redis spent in EVALSHA (the scripts), and on a cluster the
cluster-bus messages each node sent for PUBLISH (sent to every node of the
cluster) and SPUBLISH (sent to the shard's replicas only). With JSON_OUT
it also writes all of it there as JSON.

The deltas include what happened around the sends in the same window:
the bench's hellos and joins, the nodes' heartbeats and the client's
topology refreshes; with thousands of sends they weigh little.
"""

import json
import math
import re
import sys


def read(state, when, port):
    """Calls and microseconds per command, the role, cluster-bus messages
    sent (None on one Redis; CLUSTER INFO leaves out the kinds never sent)."""
    calls, usec, bus, role = {}, {}, None, "master"
    with open(f"{state}/stats-{when}-{port}.txt") as f:
        for line in f:
            line = line.strip()
            m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
            if m:
                calls[m[1]] = int(m[2])
                usec[m[1]] = int(m[3])
            if line.startswith("cluster_state:"):
                bus = {"publish": 0, "publishshard": 0, **(bus or {})}
            m = re.match(r"cluster_stats_messages_(publish|publishshard)_sent:(\d+)", line)
            if m:
                bus = {**(bus or {}), m[1]: int(m[2])}
            if line.startswith("role:"):
                role = "replica" if line == "role:slave" else "master"
    return calls, usec, bus, role


def main():
    state, out, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(f"{state}/report.json") as f:
        report = json.loads(f.read().strip().splitlines()[-1])
    acked = report.get("acked") or 0
    nodes = []
    for port in ports:
        c0, u0, b0, _ = read(state, "before", port)
        c1, u1, b1, role = read(state, "after", port)
        calls = {k: v - c0.get(k, 0) for k, v in c1.items() if v != c0.get(k, 0)}
        bus = b1 and {k: v - (b0 or {}).get(k, 0) for k, v in b1.items()}
        usec = u1.get("evalsha", 0) - u0.get("evalsha", 0)
        nodes.append({"port": int(port), "role": role, "calls": calls,
                      "evalsha_usec": usec, "cluster_bus_sent": bus})

    def per(n):
        return n / acked if acked else math.nan

    def row(name, values):
        # Without acknowledged sends (`connections`) only the calls.
        cells = "".join(f"{v:>12}{per(v):>9.3f}" if acked else f"{v:>21}" for v in values)
        total = sum(values)
        end = f"{total:>12}{per(total):>9.3f}" if acked else f"{total:>21}"
        print(f"{name:<18}{cells}{end}")

    commands = sorted({c for n in nodes for c in n["calls"]},
                      key=lambda c: -sum(n["calls"].get(c, 0) for n in nodes))
    for must in ("evalsha", "spublish", "publish"):
        if must not in commands:
            commands.append(must)
    print(f"\nRedis commands over the run: calls and calls per acknowledged send "
          f"({acked} acked)")
    names = [f":{n['port']} {n['role']}" for n in nodes]
    print(f"{'command':<18}" + "".join(f"{name:>21}" for name in names) + f"{'all':>21}")
    for c in commands:
        row(c, [n["calls"].get(c, 0) for n in nodes])
    row("(all commands)", [sum(n["calls"].values()) for n in nodes])
    row("(usec in evalsha)", [n["evalsha_usec"] for n in nodes])
    if all(n["cluster_bus_sent"] is not None for n in nodes):
        print("cluster-bus messages sent (PUBLISH: to every node; SPUBLISH: to the "
              "shard's replicas)")
        for kind in ("publish", "publishshard"):
            row(kind, [n["cluster_bus_sent"].get(kind, 0) for n in nodes])
    if out:
        with open(out, "w") as f:
            json.dump({"acked": acked, "report": report, "redis": nodes}, f)


if __name__ == "__main__":
    main()
