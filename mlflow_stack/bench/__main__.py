"""`python -m mlflow_stack.bench`: measure, then write <time>.json, .md and .png."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mlflow_stack import bench, paths
from mlflow_stack.bench.measure import Bench, run
from mlflow_stack.bench.report import chart, markdown
from mlflow_stack.bench.servers import free_port


def main(argv: list[str]) -> int:
    description = (bench.__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="nox -s bench --", description=description)
    parser.add_argument("--quick", action="store_true", help="shorter load cells, one warm start")
    parser.add_argument("--profile", default="ci", help="profile to measure (default ci)")
    parser.add_argument("--output-dir", default=str(paths.PROJECT_ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="mlflow-stack-bench-"))
    home.chmod(0o755)  # the unprivileged PostgreSQL user (when run as root) must reach it
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_STACK_", "MLFLOW_TRACKING_"))
    }
    env.update(
        MLFLOW_STACK_HOME=str(home),
        MLFLOW_STACK_MLFLOW_PORT=str(free_port()),
        MLFLOW_STACK_POSTGRES_PORT=str(free_port()),
    )
    measured = Bench(args.quick, args.profile, home, env)
    try:
        results = run(measured)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (output_dir / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / f"{stamp}.md").write_text(markdown(results))
    chart(results, output_dir / f"{stamp}.png")
    print(markdown(results))
    print(f"wrote {output_dir}/{stamp}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
