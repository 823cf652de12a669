"""The fast path caches nothing that outlives a change: a revoked grant, a changed password and a
deleted user take effect on the next request on every worker (2 uvicorn workers, local runtime).

Connections kept alive before the change stay on the worker they were opened to, and both
workers are shown to have served them (their hook connections, named by worker pid, are
in pg_stat_activity); fresh connections after the change reach both workers too.
"""

from __future__ import annotations

import configparser
import secrets
import time

import pytest
import requests
import sqlalchemy as sa

from mlflow_stack.auth.engine import HOOK_APPLICATION_NAME
from tests.stacks import make_stack

SESSIONS = 8
FRESH = 16
USER = "worker-test-user"


@pytest.fixture(scope="module")
def stack(integration_home):
    stack = make_stack(integration_home, "ci")
    stack.env["MLFLOW_STACK_WORKERS"] = "2"
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)


class Admin:
    def __init__(self, stack) -> None:
        env = stack.client_env()
        self.url = env["MLFLOW_TRACKING_URI"]
        self.auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        config = configparser.ConfigParser(interpolation=None)
        config.read(stack.state_dir / "local" / "auth_config.ini")
        self.auth_db = config["mlflow"]["database_uri"]

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = requests.request(method, self.url + path, auth=self.auth, timeout=30, **kwargs)
        assert response.ok, (path, response.status_code, response.text)
        return response.json() if response.content else {}

    def hook_pids(self) -> set[str]:
        engine = sa.create_engine(self.auth_db)
        try:
            with engine.connect() as conn:
                names = conn.execute(
                    sa.text(
                        "SELECT application_name FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                    )
                ).scalars()
                return {n.split()[-1] for n in names if n and n.startswith(HOOK_APPLICATION_NAME)}
        finally:
            engine.dispose()


def log_metric(url: str, run_id: str, auth, session: requests.Session | None = None) -> int:
    body = {"run_id": run_id, "key": "k", "value": 1.0, "timestamp": int(time.time() * 1000)}
    send = session.post if session is not None else requests.post
    headers = {} if session is not None else {"Connection": "close"}
    response = send(
        url + "/api/2.0/mlflow/runs/log-metric", json=body, auth=auth, headers=headers, timeout=30
    )
    return response.status_code


def statuses(admin: Admin, run_id: str, auth, sessions: list[requests.Session]) -> set[int]:
    """The answers on every kept-alive connection, then on fresh ones."""
    seen = {log_metric(admin.url, run_id, auth, s) for s in sessions}
    seen |= {log_metric(admin.url, run_id, auth) for _ in range(FRESH)}
    return seen


def test_changes_take_effect_on_the_next_request_on_every_worker(stack):
    admin = Admin(stack)
    password = "pw-" + secrets.token_urlsafe(16)
    admin.call(
        "POST", "/api/2.0/mlflow/users/create", json={"username": USER, "password": password}
    )
    experiment_id = admin.call(
        "POST", "/api/2.0/mlflow/experiments/create", json={"name": "workers"}
    )["experiment_id"]
    run_id = admin.call(
        "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id}
    )["run"]["info"]["run_id"]
    grant = {"username": USER, "resource_type": "experiment", "resource_id": experiment_id}
    admin.call(
        "POST", "/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": "EDIT"}
    )

    sessions = [requests.Session() for _ in range(SESSIONS)]
    try:
        # default_permission READ: logging a metric needs the EDIT grant.
        assert statuses(admin, run_id, (USER, password), sessions) == {200}
        assert len(admin.hook_pids()) == 2, "both workers served the user"

        admin.call("POST", "/api/3.0/mlflow/users/permissions/revoke", json=grant)
        assert statuses(admin, run_id, (USER, password), sessions) == {403}

        admin.call(
            "POST", "/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": "EDIT"}
        )
        assert statuses(admin, run_id, (USER, password), sessions) == {200}

        new_password = "pw-" + secrets.token_urlsafe(16)
        admin.call(
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            json={"username": USER, "password": new_password},
        )
        assert statuses(admin, run_id, (USER, password), sessions) == {401}
        assert statuses(admin, run_id, (USER, new_password), sessions) == {200}

        admin.call("DELETE", "/api/2.0/mlflow/users/delete", json={"username": USER})
        assert statuses(admin, run_id, (USER, new_password), sessions) == {401}
    finally:
        for session in sessions:
            session.close()
