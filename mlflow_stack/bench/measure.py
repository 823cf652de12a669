"""The measurements: `invoke up` cold and warm, memory at rest, and HTTP load side by side."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil

from mlflow_stack import paths
from mlflow_stack.bench.report import TARGETS, Row, ratios, verdict
from mlflow_stack.bench.servers import (
    Server,
    prepare_run,
    rss_mb,
    start_mlflow,
    stock_servers,
    tree,
    wait_healthy,
)
from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.loadgen import LoadResult, run_load
from mlflow_stack.render import database_uri

SEARCH = "/api/2.0/mlflow/experiments/search"
LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"


@dataclass
class Bench:
    quick: bool
    profile: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def python(self, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """`python ARGV` from the project root in the bench's environment, output captured."""
        return subprocess.run(
            [sys.executable, *argv],
            cwd=paths.PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # --- the project's stack, driven through invoke like a user -------------------------

    def invoke(self, *args: str, check: bool = True) -> float:
        """Run `invoke ARGS --profile P`; the seconds it took."""
        started = time.monotonic()
        result = self.python("-m", "invoke", *args, "--profile", self.profile, timeout=600)
        if check and result.returncode != 0:
            raise RuntimeError(f"invoke {' '.join(args)} failed: {result.stderr.strip()}")
        return time.monotonic() - started

    @property
    def layout(self) -> StackLayout:
        return StackLayout(self.home / self.profile)  # the bench's MLFLOW_STACK_HOME

    def project_processes(self) -> list[psutil.Process]:
        roots = []
        for pid_file in (
            self.layout.supervisord_pid,
            self.layout.postmaster_pid,
        ):
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                roots.append(psutil.Process(int(pid_file.read_text().split()[0])))
        return tree(roots)

    def cell_limits(self) -> tuple[int, float]:
        return (200, 2.0) if self.quick else (1200, 8.0)


def payload_for(endpoint: str, server: Server) -> Callable[[int], dict[str, Any]]:
    def payload(i: int) -> dict[str, Any]:
        if endpoint == SEARCH:
            return {"max_results": 10}
        return {
            "run_id": server.run_id,
            "key": "bench",
            "value": float(i),
            "timestamp": int(time.time() * 1000),
            "step": i,
        }

    return payload


def measure_side_by_side(bench: Bench, servers: list[Server]) -> list[Row]:
    """Every cell for every (server, auth mode), in interleaved rounds.

    Interleaving short bursts spreads any drift of the machine (another process, a cache
    warming up) evenly over the configurations compared, so their ratio stays fair.
    """
    max_requests, max_seconds = bench.cell_limits()
    rounds = 2 if bench.quick else 4
    rows = []
    for endpoint in (SEARCH, LOG_METRIC):
        for concurrency in (1, 4):
            for keepalive in (True, False):
                merged: dict[tuple[str, str], LoadResult] = {}
                for _ in range(rounds):
                    for server in servers:
                        for mode, (headers, auth) in server.auth_modes().items():
                            burst = run_load(
                                f"{server.url}{endpoint}",
                                payload_for(endpoint, server),
                                headers,
                                auth,
                                concurrency,
                                keepalive,
                                max_requests // rounds,
                                max_seconds / rounds,
                            )
                            total = merged.setdefault((server.label, mode), LoadResult())
                            total.merge(burst)
                for (label, mode), result in merged.items():
                    row = {
                        "server": label,
                        "endpoint": endpoint.split("/mlflow/", 1)[1],
                        "auth": mode,
                        "concurrency": concurrency,
                        "connection": "keep-alive" if keepalive else "new",
                        **result.summary(),
                    }
                    rows.append(row)
                    print(
                        f"  {label:15} {row['endpoint']:20} {mode:6} c={concurrency} "
                        f"{row['connection']:10} {row['throughput_rps']:8.1f} req/s "
                        f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
                        f"{'  errors ' + str(row['errors']) if row['errors'] else ''}",
                        flush=True,
                    )
    return rows


def run(bench: Bench) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "quick": bench.quick,
        "profile": bench.profile,
        "targets": TARGETS,
    }
    import mlflow.version

    results["mlflow"] = mlflow.version.VERSION
    servers: list[Server] = []
    try:
        print("project: cold up (fresh database, migrations included)", flush=True)
        cold = bench.invoke("up")
        warm = []
        for _ in range(1 if bench.quick else 3):
            bench.invoke("down")
            warm.append(bench.invoke("up"))
        time.sleep(5)
        project_processes = bench.project_processes()
        results["project"] = {
            "cold_up_seconds": round(cold, 2),
            "warm_up_seconds": round(sorted(warm)[len(warm) // 2], 2),
            "warm_up_all": [round(w, 2) for w in warm],
            "rest_rss_mb": rss_mb(project_processes),
            "processes": len(project_processes),
        }
        print(f"  {results['project']}", flush=True)

        from mlflow_stack.auth import tokens
        from mlflow_stack.profile import load_profile
        from mlflow_stack.secrets import load_secrets

        os.environ.update({k: v for k, v in bench.env.items() if k.startswith("MLFLOW_STACK_")})
        profile = load_profile(bench.profile)
        secrets = load_secrets(profile)
        auth_db = database_uri(
            profile, secrets, "127.0.0.1", profile.postgres_port, profile.auth_database
        )
        _, token = tokens.create_token(
            auth_db, profile.admin_username, name="bench", expires_at=timedelta(hours=2)
        )
        project = Server(
            "project",
            f"http://127.0.0.1:{profile.mlflow_port}",
            basic=(profile.admin_username, secrets.admin_password),
            bearer=token,
        )
        local_env = parse_env_file(bench.layout.local_mlflow_env)
        noauth_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        noauth_env.update(
            MLFLOW_BACKEND_STORE_URI=local_env["MLFLOW_BACKEND_STORE_URI"],
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        project_noauth = start_mlflow(
            bench.home,
            "project-noauth",
            [
                "--workers",
                str(profile.workers),
                "--artifacts-destination",
                str(bench.home / "noauth-artifacts"),
            ],
            noauth_env,
        )
        servers.append(project_noauth)
        wait_healthy(project_noauth)
        print("load (req/s, latency of successful requests)", flush=True)
        for server in (project, project_noauth):
            prepare_run(server)
        rows = measure_side_by_side(bench, [project, project_noauth])

        print("smoke: python -m mlflow_stack.smoke against the running stack", flush=True)
        started = time.monotonic()
        smoke = bench.python(
            "-m", "mlflow_stack.smoke", "--profile", bench.profile, "-q", timeout=900
        )
        results["smoke"] = {
            "seconds": round(time.monotonic() - started, 2),
            "exit_code": smoke.returncode,
        }
        # The stock servers run alone: their job runners would otherwise take CPU from the
        # project's measurements above.
        project_noauth.stop()
        print("stock: cold and warm start", flush=True)
        stock, stock_noauth, stock_facts = stock_servers(bench.home, profile, secrets)
        servers += [stock, stock_noauth]
        results["stock"] = stock_facts
        print(f"  {stock_facts}", flush=True)
        for server in (stock, stock_noauth):
            prepare_run(server)
        rows += measure_side_by_side(bench, [stock, stock_noauth])
        results["load"] = rows
        results["ratios"] = ratios(rows, "project", "project-noauth") + ratios(
            rows, "stock", "stock-noauth"
        )
    finally:
        for server in servers:
            server.stop()
        bench.invoke("clean", "--volumes", "--yes", check=False)
    results["verdict"] = verdict(results)
    return results
