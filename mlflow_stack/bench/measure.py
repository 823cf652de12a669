"""The measurements: `invoke up` cold and warm, memory at rest, HTTP load side by side
(mlflow_stack/bench/cells.py), round trips per request."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil

from mlflow_stack import paths
from mlflow_stack.bench.cells import (
    ARTIFACT,
    ENDPOINT_LABELS,
    LOG_METRIC,
    SEARCH,
    measure_interleaved,
    measure_side_by_side,
    method_for,
    payload_for,
)
from mlflow_stack.bench.report import (
    TARGETS,
    interleaved_ratios,
    noise,
    ratios,
    verdict,
)
from mlflow_stack.bench.servers import (
    Server,
    add_reader,
    prepare_run,
    rss_mb,
    start_mlflow,
    stock_servers,
    tree,
    wait_healthy,
)
from mlflow_stack.endpoints import Endpoints
from mlflow_stack.files import parse_env_file
from mlflow_stack.invoking import run_invoke
from mlflow_stack.layout import StackLayout

# The unauthenticated server's rows of the NO_PERMISSIONS pass (its second).
NOAUTH_AGAIN = "project-noauth (2nd pass)"


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
        result = run_invoke(args, env=self.env, timeout=600, profile=self.profile)
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
        """Requests and seconds per configuration and cell, over all its rounds."""
        return (200, 2.0) if self.quick else (1200, 8.0)

    def rounds(self) -> int:
        """Rounds per cell: enough that a cell's median round ratio shrugs off a stalled burst."""
        return 3 if self.quick else 8

    def interleaved_rounds(self) -> int:
        """Rounds of the interleaved c=1 measurement, per endpoint (a request per configuration
        each): about a minute per endpoint for the project's six configurations."""
        return 200 if self.quick else 1000


def count_round_trips(
    bench: Bench, server: Server, time_audit: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Round trips per request type and credential, and with `time_audit` the audit's cost per
    audited request (mlflow_stack.bench.roundtrips), in a process of their own on the running
    stack's databases and configuration."""
    local_env = parse_env_file(bench.layout.local_mlflow_env)
    environment = {
        **local_env,
        "MLFLOW_AUTH_CONFIG_PATH": str(bench.layout.local_auth_config),
        "_MLFLOW_SERVER_FILE_STORE": local_env["MLFLOW_BACKEND_STORE_URI"],
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(bench.layout.artifacts),
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
    }
    requests = []
    for mode, (headers, basic) in server.auth_modes().items():
        if basic is not None:
            encoded = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            headers = {**headers, "Authorization": f"Basic {encoded}"}
        for endpoint in (SEARCH, LOG_METRIC, ARTIFACT):
            path = f"{ARTIFACT}/{server.artifact}" if endpoint == ARTIFACT else endpoint
            requests.append(
                {
                    "name": f"{mode} {ENDPOINT_LABELS[endpoint]}",
                    "method": method_for(endpoint),
                    "path": path,
                    "json": None if endpoint == ARTIFACT else payload_for(endpoint, server)(0),
                    "headers": headers,
                }
            )
    spec = bench.home / "roundtrips.json"
    # The spec holds the stack's passwords: readable by this user only.
    descriptor = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"environment": environment, "requests": requests, "time_audit": time_audit}, out)
    try:
        counted = bench.python("-m", "mlflow_stack.bench.roundtrips", str(spec), timeout=600)
    finally:
        spec.unlink()
    if counted.returncode != 0:
        raise RuntimeError(f"counting round trips failed: {counted.stderr.strip()[-2000:]}")
    printed = json.loads(counted.stdout.strip().splitlines()[-1])
    out_rows = []
    for name, groups in printed["round_trips"].items():
        mode, endpoint = name.split(" ", 1)
        out_rows.append({"server": server.label, "auth_mode": mode, "endpoint": endpoint, **groups})
        print(f"  round trips {server.label:12} {mode:11} {endpoint:20} {groups}", flush=True)
    if printed["audit"] is not None:
        print(f"  audit log cost {server.label:12} {printed['audit']}", flush=True)
    return out_rows, printed["audit"]


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
        endpoints = Endpoints.of(profile)
        auth_db = endpoints.auth_database_uri(secrets, endpoints.local_database)
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
            prepare_run(server, profile)
        add_reader(project, profile, auth_db)
        rows = measure_side_by_side(bench, [project, project_noauth])
        print("c=1 keep-alive, requests interleaved one by one", flush=True)
        interleaved = measure_interleaved(bench, [project, project_noauth])
        trips: dict[str, list[dict[str, Any]]] = {}
        trips["project"], results["audit"] = count_round_trips(bench, project, time_audit=True)

        print("smoke: python -m mlflow_stack.smoke against the running stack", flush=True)
        started = time.monotonic()
        smoke = bench.python(
            "-m", "mlflow_stack.smoke", "--profile", bench.profile, "-q", timeout=900
        )
        results["smoke"] = {
            "seconds": round(time.monotonic() - started, 2),
            "exit_code": smoke.returncode,
        }
        # The same non-admin on the same data with default_permission NO_PERMISSIONS: only
        # their grant lets them in.
        print("project with default_permission NO_PERMISSIONS: the non-admin's cells", flush=True)
        bench.env["MLFLOW_STACK_DEFAULT_PERMISSION"] = "NO_PERMISSIONS"
        bench.invoke("down")
        bench.invoke("up")
        strict = dataclasses.replace(project, label="project-nop", admin_cells=False)
        strict_rows = measure_side_by_side(bench, [strict, project_noauth])
        strict_interleaved = measure_interleaved(bench, [strict, project_noauth])
        trips["project-nop"], _ = count_round_trips(bench, strict)  # the audit: timed once
        strict_ratios = ratios(strict_rows, "project-nop", "project-noauth")
        for row in strict_rows + strict_interleaved:
            if row["server"] == "project-noauth":
                row["server"] = NOAUTH_AGAIN
        results["interleaved"] = interleaved + strict_interleaved
        results["interleaved_ratios"] = (
            interleaved_ratios(interleaved, "project", "project-noauth")
            + interleaved_ratios(interleaved, "project-noauth", "project-noauth")
            + interleaved_ratios(strict_interleaved, "project-nop", NOAUTH_AGAIN)
            + interleaved_ratios(strict_interleaved, NOAUTH_AGAIN, NOAUTH_AGAIN)
        )
        controls = ratios(rows, "project-noauth", "project-noauth")
        controls += ratios(strict_rows, NOAUTH_AGAIN, NOAUTH_AGAIN)
        rows += strict_rows
        # The stock servers run alone: their job runners would otherwise take CPU from the
        # project's measurements above.
        project_noauth.stop()
        print("stock: cold and warm start", flush=True)
        stock, stock_noauth, stock_facts = stock_servers(bench.home, profile, secrets)
        servers += [stock, stock_noauth]
        results["stock"] = stock_facts
        print(f"  {stock_facts}", flush=True)
        for server in (stock, stock_noauth):
            prepare_run(server, profile)
        rows += measure_side_by_side(bench, [stock, stock_noauth], control=False)
        results["load"] = rows
        results["controls"] = controls
        results["noise"] = noise(controls)
        results["ratios"] = (
            ratios(rows, "project", "project-noauth")
            + strict_ratios
            + ratios(rows, "stock", "stock-noauth")
        )
        results["round_trips"] = trips
    finally:
        for server in servers:
            server.stop()
        bench.invoke("clean", "--volumes", "--yes", check=False)
    results["verdict"] = verdict(results)
    return results
