"""`nox -s bench`: the project's stack next to stock MLflow, measured in one run.

usage: python -m mlflow_stack.bench [--quick] [--profile ci] [--output-dir bench/results]

Everything runs in a scratch MLFLOW_STACK_HOME on free loopback ports and is removed at the end.
Servers measured side by side:
  project        the profile's stack (local runtime: our auth_config.ini, hook, workers, …)
  project-noauth the same mlflow server command without --app-name, on the same database
  stock          `mlflow server --app-name basic-auth` with MLflow's defaults (4 workers, job
                 runner on, MLflow's basic-auth function, auth cache off), databases of its own
  stock-noauth   `mlflow server` with MLflow's defaults, on the stock database
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets as random_source
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psutil
import requests

from mlflow_stack import paths
from mlflow_stack.files import parse_env_file
from mlflow_stack.loadgen import LoadResult, run_load
from mlflow_stack.render import LOCAL_MLFLOW_ENV_FILE, database_uri

SEARCH = "/api/2.0/mlflow/experiments/search"
LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
TARGETS = {
    "auth_throughput_ratio": 0.9,
    "keepalive_search_p50_ms": 10.0,
    "warm_up_seconds": 5.0,
    "cold_up_seconds": 10.0,
    "rest_rss_mb": 600.0,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    label: str
    url: str
    basic: tuple[str, str] | None = None
    bearer: str | None = None
    run_id: str = ""
    process: subprocess.Popen | None = None
    log: Path | None = None

    def auth_modes(self) -> dict[str, tuple[dict[str, str], tuple[str, str] | None]]:
        if self.basic is None:
            return {"none": ({}, None)}
        modes = {"basic": ({}, self.basic)}
        if self.bearer:
            modes["bearer"] = ({"Authorization": f"Bearer {self.bearer}"}, None)
        return modes

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)


@dataclass
class Bench:
    quick: bool
    profile: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    # --- the project's stack, driven through invoke like a user -------------------------

    def invoke(self, *args: str, check: bool = True) -> float:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "invoke", *args, "--profile", self.profile],
            cwd=paths.PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"invoke {' '.join(args)} failed: {result.stderr.strip()}")
        return time.monotonic() - started

    @property
    def state_dir(self) -> Path:
        return self.home / self.profile

    def project_processes(self) -> list[psutil.Process]:
        roots = []
        for pid_file in (
            self.state_dir / "run" / "supervisord.pid",
            self.state_dir / "pgdata" / "postmaster.pid",
        ):
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                roots.append(psutil.Process(int(pid_file.read_text().split()[0])))
        return tree(roots)

    # --- helpers -------------------------------------------------------------------------

    def cell_limits(self) -> tuple[int, float]:
        return (200, 2.0) if self.quick else (1200, 8.0)

    def start_mlflow(self, label: str, args: list[str], env: dict[str, str]) -> Server:
        port = free_port()
        log = self.home / f"{label}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Server(label, f"http://127.0.0.1:{port}", process=process, log=log)


def tree(roots: list[psutil.Process]) -> list[psutil.Process]:
    found = {}
    for root in roots:
        try:
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            continue
    return list(found.values())


def rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return round(total / 1e6, 1)


def wait_healthy(server: Server, timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process and server.process.poll() is not None:
            raise RuntimeError(f"{server.label} exited; see {server.log}")
        try:
            if requests.get(f"{server.url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.label} not healthy after {timeout} s; see {server.log}")


def prepare_run(server: Server) -> None:
    """An experiment and a run to search and to log metrics into."""
    auth = server.basic
    name = f"bench-{server.label}-{random_source.token_hex(4)}"
    created = requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/create",
        auth=auth,
        json={"name": name},
        timeout=30,
    )
    created.raise_for_status()
    experiment_id = created.json()["experiment_id"]
    run = requests.post(
        f"{server.url}/api/2.0/mlflow/runs/create",
        auth=auth,
        timeout=30,
        json={"experiment_id": experiment_id, "start_time": int(time.time() * 1000)},
    )
    run.raise_for_status()
    server.run_id = run.json()["run"]["info"]["run_id"]


def payload_for(endpoint: str, server: Server):
    def payload(i: int) -> dict:
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


def measure_side_by_side(bench: Bench, servers: list[Server]) -> list[dict]:
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


def ratios(rows: list[dict], auth_server: str, noauth_server: str) -> list[dict]:
    base = {
        (r["endpoint"], r["concurrency"], r["connection"]): r
        for r in rows
        if r["server"] == noauth_server
    }
    out = []
    for row in rows:
        if row["server"] != auth_server:
            continue
        ref = base.get((row["endpoint"], row["concurrency"], row["connection"]))
        if ref and ref["throughput_rps"]:
            out.append(
                {
                    "server": auth_server,
                    "auth": row["auth"],
                    "endpoint": row["endpoint"],
                    "concurrency": row["concurrency"],
                    "connection": row["connection"],
                    "ratio": round(row["throughput_rps"] / ref["throughput_rps"], 3),
                }
            )
    return out


def stock_servers(bench: Bench, profile, secrets) -> tuple[Server, Server, dict]:
    """Stock MLflow on databases of its own in the project's cluster."""
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(
        host="127.0.0.1",
        port=profile.postgres_port,
        user=profile.db_user,
        password=secrets.db_password,
        dbname="postgres",
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        for name in ("stock_tracking", "stock_auth"):
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connection.close()

    def uri(database: str) -> str:
        return database_uri(profile, secrets, "127.0.0.1", profile.postgres_port, database)

    admin_password = random_source.token_urlsafe(16)
    config = bench.home / "stock_auth_config.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {uri('stock_auth').replace('%', '%%')}\n"
        f"admin_username = admin\nadmin_password = {admin_password}\n"
    )
    config.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_BACKEND_STORE_URI=uri("stock_tracking"),
        MLFLOW_AUTH_CONFIG_PATH=str(config),
        MLFLOW_FLASK_SERVER_SECRET_KEY=random_source.token_urlsafe(32),
    )
    artifacts = ["--artifacts-destination", str(bench.home / "stock-artifacts")]
    timings = {}
    stock = bench.start_mlflow("stock", ["--app-name", "basic-auth", *artifacts], env)
    timings["cold_start_seconds"] = round(wait_healthy(stock), 2)
    stock.stop()
    stock = bench.start_mlflow("stock", ["--app-name", "basic-auth", *artifacts], env)
    timings["warm_start_seconds"] = round(wait_healthy(stock), 2)
    stock.basic = ("admin", admin_password)
    time.sleep(5)
    timings["rest_rss_mb_mlflow"] = rss_mb(tree([psutil.Process(stock.process.pid)]))
    timings["processes"] = len(tree([psutil.Process(stock.process.pid)]))
    noauth = bench.start_mlflow("stock-noauth", artifacts, env)
    wait_healthy(noauth)
    return stock, noauth, timings


def run(bench: Bench) -> dict:
    results: dict = {
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
        from mlflow_stack.secrets import resolve_secrets

        os.environ.update({k: v for k, v in bench.env.items() if k.startswith("MLFLOW_STACK_")})
        profile = load_profile(bench.profile)
        secrets, _ = resolve_secrets(profile)
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
        local_env = parse_env_file(bench.state_dir / LOCAL_MLFLOW_ENV_FILE)
        noauth_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        noauth_env.update(
            MLFLOW_BACKEND_STORE_URI=local_env["MLFLOW_BACKEND_STORE_URI"],
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        project_noauth = bench.start_mlflow(
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
        smoke = subprocess.run(
            [sys.executable, "-m", "mlflow_stack.smoke", "--profile", bench.profile, "-q"],
            cwd=paths.PROJECT_ROOT,
            env=bench.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        results["smoke"] = {
            "seconds": round(time.monotonic() - started, 2),
            "exit_code": smoke.returncode,
        }
        # The stock servers run alone: their job runners would otherwise take CPU from the
        # project's measurements above.
        project_noauth.stop()
        print("stock: cold and warm start", flush=True)
        stock, stock_noauth, stock_facts = stock_servers(bench, profile, secrets)
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


def verdict(results: dict) -> dict:
    project_ratios = [r["ratio"] for r in results.get("ratios", []) if r["server"] == "project"]
    keepalive_search = [
        r["p50_ms"]
        for r in results.get("load", [])
        if r["server"] == "project"
        and r["endpoint"] == "experiments/search"
        and r["connection"] == "keep-alive"
        and r["concurrency"] == 1
    ]
    project = results.get("project", {})
    measured = {
        "auth_throughput_ratio": min(project_ratios) if project_ratios else None,
        "keepalive_search_p50_ms": max(keepalive_search) if keepalive_search else None,
        "warm_up_seconds": project.get("warm_up_seconds"),
        "cold_up_seconds": project.get("cold_up_seconds"),
        "rest_rss_mb": project.get("rest_rss_mb"),
    }
    verdicts = {}
    for key, target in TARGETS.items():
        value = measured[key]
        met = value is not None and (
            value >= target if key == "auth_throughput_ratio" else value <= target
        )
        verdicts[key] = {"measured": value, "target": target, "met": met}
    return verdicts


def markdown(results: dict) -> str:
    lines = [
        f"# Benchmark {results['date']}",
        "",
        f"MLflow {results['mlflow']}, {results['machine']['cpus']} CPUs, "
        f"{results['machine']['memory_gb']} GB, {results['machine']['platform']}"
        f"{' (quick run)' if results['quick'] else ''}.",
        "",
        "| target | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    names = {
        "auth_throughput_ratio": "authenticated / unauthenticated throughput (worst cell)",
        "keepalive_search_p50_ms": "p50 authenticated search, reused connection (ms)",
        "warm_up_seconds": "`invoke up`, warm (s)",
        "cold_up_seconds": "`invoke up`, cold (s)",
        "rest_rss_mb": "whole stack at rest, RSS (MB)",
    }
    for key, item in results["verdict"].items():
        lines.append(
            f"| {names[key]} | {item['measured']} | {item['target']} | "
            f"{'yes' if item['met'] else 'no'} |"
        )
    stock = results.get("stock", {})
    lines += [
        "",
        f"Stock MLflow (defaults): warm start {stock.get('warm_start_seconds')} s, cold "
        f"{stock.get('cold_start_seconds')} s, {stock.get('processes')} processes, "
        f"{stock.get('rest_rss_mb_mlflow')} MB RSS (MLflow processes only). "
        f"`nox -s smoke` against a running stack: {results.get('smoke', {}).get('seconds')} s.",
        "",
        "| server | endpoint | auth | c | connection | req/s | p50 ms | p99 ms | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ratio_of = {
        (r["server"], r["auth"], r["endpoint"], r["concurrency"], r["connection"]): r["ratio"]
        for r in results.get("ratios", [])
    }
    for row in results.get("load", []):
        key = (row["server"], row["auth"], row["endpoint"], row["concurrency"], row["connection"])
        lines.append(
            f"| {row['server']} | {row['endpoint']} | {row['auth']} | {row['concurrency']} | "
            f"{row['connection']} | {row['throughput_rps']} | {row['p50_ms']} | {row['p99_ms']} "
            f"| {ratio_of.get(key, '')} |"
        )
    lines += [
        "",
        "ratio: throughput of the authenticated cell / the same cell on the same server "
        "with authentication off (project-noauth, stock-noauth).",
        "",
    ]
    return "\n".join(lines)


def chart(results: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    cells = [r for r in results.get("ratios", [])]
    labels = sorted({(r["endpoint"], r["concurrency"], r["connection"]) for r in cells})
    series = [("project", "basic"), ("project", "bearer"), ("stock", "basic")]
    width = 0.8 / len(series)
    for index, (server, mode) in enumerate(series):
        values = []
        for label in labels:
            match = [
                r["ratio"]
                for r in cells
                if r["server"] == server
                and r["auth"] == mode
                and (r["endpoint"], r["concurrency"], r["connection"]) == label
            ]
            values.append(match[0] if match else 0)
        left.bar(
            [i + index * width for i in range(len(labels))], values, width, label=f"{server} {mode}"
        )
    left.axhline(TARGETS["auth_throughput_ratio"], color="red", linestyle="--", label="target 0.9")
    left.set_xticks([i + width for i in range(len(labels))])
    left.set_xticklabels([f"{e.split('/')[-1]}\nc={c}\n{n}" for e, c, n in labels], fontsize=8)
    left.set_ylabel("authenticated / unauthenticated throughput")
    left.set_title("Cost of authentication (higher is better)")
    left.legend(fontsize=8)

    verdict = results["verdict"]
    keys = ["keepalive_search_p50_ms", "warm_up_seconds", "cold_up_seconds", "rest_rss_mb"]
    names = ["p50 search\nkeep-alive (ms)", "up warm (s)", "up cold (s)", "RSS at rest\n(x100 MB)"]
    measured = [verdict[k]["measured"] or 0 for k in keys]
    targets = [verdict[k]["target"] for k in keys]
    measured[-1] /= 100
    targets[-1] /= 100
    positions = range(len(keys))
    right.bar(
        [p - 0.2 for p in positions],
        measured,
        0.4,
        label="measured",
        color=["green" if verdict[k]["met"] else "orange" for k in keys],
    )
    right.bar([p + 0.2 for p in positions], targets, 0.4, label="target", color="lightgray")
    right.set_xticks(list(positions))
    right.set_xticklabels(names, fontsize=8)
    right.set_title("Latency, start time, memory (lower is better)")
    right.legend(fontsize=8)
    fig.suptitle(f"mlflow-stack vs stock MLflow {results['mlflow']} - {results['date']}")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nox -s bench --", description=__doc__.splitlines()[0])
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
    bench = Bench(args.quick, args.profile, home, env)
    try:
        results = run(bench)
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
