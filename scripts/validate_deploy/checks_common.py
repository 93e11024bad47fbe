"""What every check of scripts/validate-deploy.sh shares: reporting (each
failure is printed and counted; main.py's exit code says whether there was
any), YAML loading, Huddle's durations and its configuration variables."""

import re
import subprocess
from pathlib import Path

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
