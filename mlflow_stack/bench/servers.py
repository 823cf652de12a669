"""The servers the bench measures: started on free loopback ports, watched, stopped."""

from __future__ import annotations

import os
import secrets as random_source
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psutil
import requests
from psycopg2 import sql

from mlflow_stack.client import EXPERIMENT, AdminClient
from mlflow_stack.profile import Profile
from mlflow_stack.render import database_uri
from mlflow_stack.runtime import DatabaseEndpoint
from mlflow_stack.runtime.postgres import connect
from mlflow_stack.secrets import Secrets

# How a request authenticates: extra headers, and basic-auth credentials (None: no basic auth).
AuthMode = tuple[dict[str, str], tuple[str, str] | None]
# The non-admin user the bench measures: EDIT on the bench's experiment, nothing else.
READER = "bench-reader"
ARTIFACT_BYTES = b"x" * 4096
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    label: str
    url: str
    basic: tuple[str, str] | None = None
    bearer: str | None = None
    run_id: str = ""
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    experiment_id: str = ""
    # The artifact's path under ARTIFACTS_API (downloaded by the load).
    artifact: str = ""
    reader: tuple[str, str] | None = None
    reader_bearer: str | None = None
    # False: only the non-admin's cells are measured (the NO_PERMISSIONS pass).
    admin_cells: bool = True

    def auth_modes(self) -> dict[str, AuthMode]:
        modes: dict[str, AuthMode] = {}
        if self.basic is not None and self.admin_cells:
            modes["basic"] = ({}, self.basic)
            if self.bearer:
                modes["bearer"] = ({"Authorization": f"Bearer {self.bearer}"}, None)
        if self.reader is not None:
            modes["user-basic"] = ({}, self.reader)
        if self.reader_bearer:
            modes["user-bearer"] = ({"Authorization": f"Bearer {self.reader_bearer}"}, None)
        return modes or {"none": ({}, None)}

    def processes(self) -> list[psutil.Process]:
        """The server's process and all its children (workers, job runners)."""
        return tree([psutil.Process(self.process.pid)]) if self.process else []

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def start_mlflow(home: Path, label: str, args: list[str], env: dict[str, str]) -> Server:
    """`mlflow server ARGS` on a free port, in a process group of its own, logging to home."""
    port = free_port()
    log = home / f"{label}.log"
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


def admin_client(server: Server, profile: Profile) -> AdminClient:
    """The project's REST client, as the server's admin (or anonymous without auth)."""
    username, password = server.basic or ("", "")
    client = AdminClient(profile, username, password)
    client.url = server.url  # the stock servers listen elsewhere than the profile says
    if server.basic is None:
        client.session.auth = None
    return client


def prepare_run(server: Server, profile: Profile) -> None:
    """An experiment, a run to log metrics into and an artifact to download."""
    name = f"bench-{server.label}-{random_source.token_hex(4)}"
    with admin_client(server, profile) as client:
        server.experiment_id = client.create_experiment(name)
        server.run_id = client.create_run(server.experiment_id, int(time.time() * 1000))
        server.artifact = f"{server.experiment_id}/{server.run_id}/artifacts/bench.bin"
        uploaded = client.session.put(
            f"{server.url}{ARTIFACTS_API}/{server.artifact}", data=ARTIFACT_BYTES, timeout=30
        )
        uploaded.raise_for_status()


def add_reader(server: Server, profile: Profile, auth_database_uri: str) -> None:
    """The non-admin user, with EDIT on the bench's experiment, a password and a token."""
    from mlflow_stack.auth import tokens

    password = random_source.token_urlsafe(18)
    with admin_client(server, profile) as client:
        client.create_user(READER, password)
        client.grant(READER, EXPERIMENT, server.experiment_id, "EDIT")
    _, token = tokens.create_token(
        auth_database_uri, READER, name="bench", expires_at=timedelta(hours=2)
    )
    server.reader = (READER, password)
    server.reader_bearer = token


def stock_servers(
    home: Path, profile: Profile, secrets: Secrets
) -> tuple[Server, Server, dict[str, float]]:
    """Stock MLflow on databases of its own in the project's cluster."""
    endpoint = DatabaseEndpoint("127.0.0.1", profile.postgres_port)
    connection = connect(profile, secrets, endpoint)
    connection.autocommit = True
    with connection.cursor() as cursor:
        for name in ("stock_tracking", "stock_auth"):
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connection.close()

    def uri(database: str) -> str:
        return database_uri(profile, secrets, endpoint.host, endpoint.port, database)

    admin_password = random_source.token_urlsafe(16)
    config = home / "stock_auth_config.ini"
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
    artifacts = ["--artifacts-destination", str(home / "stock-artifacts")]
    timings: dict[str, float] = {}
    stock = start_mlflow(home, "stock", ["--app-name", "basic-auth", *artifacts], env)
    timings["cold_start_seconds"] = round(wait_healthy(stock), 2)
    stock.stop()
    stock = start_mlflow(home, "stock", ["--app-name", "basic-auth", *artifacts], env)
    timings["warm_start_seconds"] = round(wait_healthy(stock), 2)
    stock.basic = ("admin", admin_password)
    time.sleep(5)
    at_rest = stock.processes()
    timings["rest_rss_mb_mlflow"] = rss_mb(at_rest)
    timings["processes"] = len(at_rest)
    noauth = start_mlflow(home, "stock-noauth", artifacts, env)
    wait_healthy(noauth)
    return stock, noauth, timings
