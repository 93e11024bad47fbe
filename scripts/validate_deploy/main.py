"""scripts/validate-deploy.sh's checks, run from the repository's root with
the tools it installed on PATH (PROMTOOL, NGINX_BIN and KUSTOMIZE_CMD in the
environment). Exit code 1 when any check failed."""

import sys

from checks_common import FAILURES, ROOT, run, section
from checks_files import check_files
from checks_k8s import check_kubernetes

check_files()
check_kubernetes()

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
