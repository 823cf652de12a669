"""The hook inside a real ``mlflow server --app-name basic-auth`` (2 uvicorn workers)
on a real, throwaway PostgreSQL cluster. Nothing is mocked and nothing is skipped.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from psycopg2 import sql

from mlflow_stack.auth import tokens
from mlflow_stack.auth.engine import HOOK_APPLICATION_NAME, create_auth_engine
from mlflow_stack.auth.schema import TOKENS_TABLE_NAME, ensure_schema
from mlflow_stack.auth.token_format import hash_token
from tests.auth_tables import create_auth_tables
from tests.stacks import expire_token, free_port
from tests.throwaway_postgres import Postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ADMIN = ("admin", "admin-password-" + secrets.token_hex(4))
# Fresh TCP connections per request: with 2 uvicorn workers accepting on one socket,
# a burst of new connections reaches both processes.
BURST = 24
TOKENS = sql.Identifier(TOKENS_TABLE_NAME)


# --- real MLflow server ----------------------------------------------------------------------


@dataclass
class Server:
    base_url: str
    auth_db_url: str
    log: Path

    def get(self, path: str, **kwargs) -> requests.Response:
        # requests.get (no Session) opens a new connection each time.
        return requests.get(self.base_url + path, timeout=30, **kwargs)

    def search(self, **kwargs) -> requests.Response:
        return requests.post(
            self.base_url + "/api/2.0/mlflow/experiments/search",
            json={"max_results": 10},
            timeout=30,
            **kwargs,
        )

    def burst_status(self, **kwargs) -> set[int]:
        """Status codes of BURST searches on fresh connections (so both workers answer)."""
        return {self.search(**kwargs).status_code for _ in range(BURST)}

    def admin(self, method: str, path: str, payload: dict) -> requests.Response:
        response = requests.request(
            method, self.base_url + path, json=payload, auth=ADMIN, timeout=30
        )
        assert response.status_code == 200, response.text
        return response

    def create_user(self, username: str, password: str) -> None:
        self.admin(
            "POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password}
        )


@pytest.fixture(scope="module")
def server(postgres: Postgres) -> Iterator[Server]:
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-stack-auth-server-"))
    auth_db_url = postgres.url("auth")
    config = workdir / "auth_config.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {auth_db_url}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow_stack.auth.hook:authenticate\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        env.pop(leaked, None)
    log = workdir / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--backend-store-uri",
                postgres.url("backend"),
                "--default-artifact-root",
                str(workdir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown kills all workers
        )
    try:
        srv = Server(base_url=f"http://127.0.0.1:{port}", auth_db_url=auth_db_url, log=log)
        _wait_until_both_workers_serve(process, srv)
        yield srv
    finally:
        _kill_group(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_both_workers_serve(process: subprocess.Popen, srv: Server) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited:\n{srv.log.read_text()[-4000:]}")
        started = srv.log.read_text().count("Application startup complete")
        if started >= 2:
            try:
                if srv.get("/health").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not ready in time:\n{srv.log.read_text()[-4000:]}")


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --- helpers ---------------------------------------------------------------------------------


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str, password: str) -> dict:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def fresh_user(server: Server, prefix: str) -> tuple[str, str]:
    username = f"{prefix}-{secrets.token_hex(3)}"
    password = "pw-" + secrets.token_urlsafe(12)
    server.create_user(username, password)
    return username, password


def assert_all_401(server: Server, **kwargs) -> None:
    responses = [server.search(**kwargs) for _ in range(BURST)]
    assert {r.status_code for r in responses} == {401}
    assert all(r.headers.get("WWW-Authenticate") == 'Basic realm="mlflow"' for r in responses)


# --- tests -----------------------------------------------------------------------------------


def test_sdk_works_with_mlflow_tracking_token_alone(server, monkeypatch):
    import mlflow

    username, _ = fresh_user(server, "sdk")
    _, token = tokens.create_token(server.auth_db_url, username, name="sdk")
    for var in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_INSECURE_TLS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.base_url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)

    client = mlflow.MlflowClient()
    assert "Default" in {e.name for e in client.search_experiments()}
    experiment_id = client.create_experiment(f"by-token-{secrets.token_hex(3)}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "m", 1.0)

    # The token acted as its owner: MLflow made the owner the experiment's manager.
    permission = requests.get(
        server.base_url + "/api/3.0/mlflow/users/permissions/get",
        params={"username": username, "resource_type": "experiment", "resource_id": experiment_id},
        auth=ADMIN,
        timeout=30,
    )
    assert permission.status_code == 200, permission.text
    assert permission.json()["permission"] == "MANAGE"
    current = server.get("/api/2.0/mlflow/users/current", headers=bearer(token))
    assert current.json()["user"]["username"] == username


def test_bearer_is_accepted_by_both_workers(server, postgres):
    username, _ = fresh_user(server, "burst")
    _, token = tokens.create_token(server.auth_db_url, username)
    assert server.burst_status(headers=bearer(token)) == {200}

    conn = postgres.connect("auth")
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
            (HOOK_APPLICATION_NAME + " %",),
        )
        hook_processes = {row[0] for row in cur.fetchall()}
    conn.close()
    assert len(hook_processes) == 2, hook_processes


def test_revoked_token_is_refused_at_once_on_every_worker(server):
    username, _ = fresh_user(server, "revoke")
    record, token = tokens.create_token(server.auth_db_url, username)
    assert server.burst_status(headers=bearer(token)) == {200}

    tokens.revoke_token(server.auth_db_url, record.id)
    assert_all_401(server, headers=bearer(token))


def test_expired_token_is_refused(server):
    username, _ = fresh_user(server, "expire")
    record, token = tokens.create_token(server.auth_db_url, username, expires_at=timedelta(hours=1))
    assert server.search(headers=bearer(token)).status_code == 200
    expire_token(server.auth_db_url, record.id)
    assert_all_401(server, headers=bearer(token))


@pytest.mark.parametrize(
    "value", ["mlst_" + secrets.token_urlsafe(32), "not-one-of-ours", "", "mlst_"]
)
def test_unknown_token_is_401(server, value):
    assert_all_401(server, headers={"Authorization": f"Bearer {value}"})


def test_no_credentials_is_401(server):
    assert_all_401(server)


def test_basic_auth_still_works(server):
    username, password = fresh_user(server, "basic")
    assert server.burst_status(headers=basic(username, password)) == {200}
    assert server.burst_status(auth=ADMIN) == {200}
    assert_all_401(server, headers=basic(username, password + "x"))
    assert_all_401(server, headers=basic("no-such-user", password))


def test_changed_password_refuses_the_old_one_at_once(server):
    username, old_password = fresh_user(server, "pwchange")
    # Warm every worker's verified-password cache with the old credential first.
    assert server.burst_status(headers=basic(username, old_password)) == {200}

    new_password = "pw-" + secrets.token_urlsafe(12)
    server.admin(
        "PATCH",
        "/api/2.0/mlflow/users/update-password",
        {"username": username, "password": new_password},
    )
    assert_all_401(server, headers=basic(username, old_password))
    assert server.burst_status(headers=basic(username, new_password)) == {200}


def test_deleted_user_loses_tokens_and_basic_auth(server, postgres):
    username, password = fresh_user(server, "delete")
    _, token = tokens.create_token(server.auth_db_url, username)
    assert server.burst_status(headers=bearer(token)) == {200}
    assert server.burst_status(headers=basic(username, password)) == {200}

    server.admin("DELETE", "/api/2.0/mlflow/users/delete", {"username": username})
    assert_all_401(server, headers=bearer(token))
    assert_all_401(server, headers=basic(username, password))
    conn = postgres.connect("auth")
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE token_hash = %s").format(TOKENS),
            (hash_token(token),),
        )
        assert cur.fetchone()[0] == 0  # ON DELETE CASCADE took the row with the user
    conn.close()


def test_fastapi_routes_authenticate_bearer_tokens(server):
    username, _ = fresh_user(server, "fastapi")
    _, token = tokens.create_token(server.auth_db_url, username)
    own = requests.post(
        server.base_url + "/api/2.0/mlflow/experiments/create",
        json={"name": f"traces-{secrets.token_hex(3)}"},
        headers=bearer(token),
        timeout=30,
    ).json()["experiment_id"]
    admins = requests.post(
        server.base_url + "/api/2.0/mlflow/experiments/create",
        json={"name": f"admins-{secrets.token_hex(3)}"},
        auth=ADMIN,
        timeout=30,
    ).json()["experiment_id"]

    def otlp(experiment_id: str, headers: dict) -> int:
        return requests.post(
            server.base_url + "/v1/traces",
            headers={
                **headers,
                "Content-Type": "application/x-protobuf",
                "x-mlflow-experiment-id": experiment_id,
            },
            data=b"",
            timeout=30,
        ).status_code

    # Authenticated as the owner and then authorised with the owner's permissions:
    # past auth on its own experiment (400: empty payload), refused on the admin's.
    assert otlp(own, bearer(token)) == 400
    assert otlp(admins, bearer(token)) == 403
    assert otlp(own, {}) == 401
    assert otlp(own, bearer("mlst_" + secrets.token_urlsafe(32))) == 401

    # Gateway routes: MLflow credentials ride in X-MLflow-Authorization next to a
    # provider key in Authorization.
    gateway = server.base_url + "/gateway/mlflow/v1/chat/completions"
    body = {"model": "no-such-endpoint", "messages": []}
    with_token = requests.post(
        gateway,
        json=body,
        headers={"X-MLflow-Authorization": f"Bearer {token}", "Authorization": "Bearer sk-x"},
        timeout=30,
    )
    assert with_token.status_code != 401
    provider_key_only = requests.post(
        gateway, json=body, headers={"Authorization": "Bearer sk-x"}, timeout=30
    )
    assert provider_key_only.status_code == 401


def test_token_table_holds_no_plaintext_token(server, postgres):
    username, _ = fresh_user(server, "plain")
    issued = [tokens.create_token(server.auth_db_url, username, name=f"t{i}")[1] for i in range(3)]
    for token in issued:
        assert server.search(headers=bearer(token)).status_code == 200  # last_used_at written

    conn = postgres.connect("auth")
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(TOKENS))
        rows = cur.fetchall()
        cur.execute(sql.SQL("SELECT token_hash FROM {}").format(TOKENS))
        hashes = {row[0] for row in cur.fetchall()}
    conn.close()
    dumped = repr(rows)
    for token in issued:
        assert token not in dumped
        assert token[len("mlst_") :] not in dumped
        assert hash_token(token) in hashes


def test_ensure_schema_races_safely_on_postgres(postgres):
    postgres.create_database("race")
    setup = create_auth_engine(postgres.url("race"))
    create_auth_tables(setup)
    setup.dispose()

    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker() -> None:
        engine = create_auth_engine(postgres.url("race"), for_request_path=True)
        try:
            start.wait()
            ensure_schema(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert tokens.list_tokens(postgres.url("race")) == []
