"""native_routes: MLflow's FastAPI middlewares run only for the requests they act on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlflow_stack.auth import native_routes


def http(path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "method": method,
        "headers": headers or [],
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
    }


class Calls:
    def __init__(self) -> None:
        self.inner = 0
        self.dispatch = 0
        self.sent: list[dict[str, Any]] = []

    async def app(self, scope, receive, send) -> None:
        self.inner += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def middleware(self, request, call_next):
        self.dispatch += 1
        return await call_next(request)

    def run(self, gate: native_routes.Gate, scope: dict) -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            self.sent.append(message)

        asyncio.run(gate(scope, receive, send))


@pytest.mark.parametrize("passes", [True, False])
def test_the_gate_calls_mlflows_middleware_only_when_it_would_act(passes):
    calls = Calls()
    gate = native_routes.Gate(calls.app, calls.middleware, lambda _scope: passes)
    calls.run(gate, http("/x"))
    assert (calls.inner, calls.dispatch) == (1, 0 if passes else 1)
    assert calls.sent[0]["status"] == 200


def test_what_runs_around_a_passed_request_is_undone_after_it():
    calls = Calls()
    events = []

    def around(_scope):
        events.append("set")
        return lambda: events.append("cleared")

    gate = native_routes.Gate(calls.app, calls.middleware, lambda _scope: True, around)
    calls.run(gate, http("/x"))
    assert events == ["set", "cleared"] and calls.inner == 1


@pytest.fixture(scope="module")
def mlflow_fastapi_app():
    from mlflow.server import auth
    from mlflow.server.fastapi_app import create_fastapi_app

    app = create_fastapi_app()
    auth.add_fastapi_permission_middleware(app)
    return app


def test_install_gates_all_three_of_mlflows_http_middlewares(mlflow_fastapi_app):
    gated = native_routes.install(mlflow_fastapi_app)
    assert sorted(gated) == sorted(native_routes.GATES)
    assert [m.cls for m in mlflow_fastapi_app.user_middleware].count(native_routes.Gate) == 3


@pytest.mark.parametrize(
    ("path", "method", "passes"),
    [
        ("/api/2.0/mlflow/experiments/search", "POST", True),  # Flask: its own checks
        ("/api/2.0/mlflow/runs/log-metric", "POST", True),
        ("/health", "GET", True),  # unprotected
        ("/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt", "GET", False),  # native
        ("/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt", "PUT", False),
        ("/gateway/e/mlflow/invocations", "POST", False),
        ("/v1/traces", "POST", False),
    ],
)
def test_the_permission_gate_passes_flask_routes_only(mlflow_fastapi_app, path, method, passes):
    assert native_routes.permission_gate(mlflow_fastapi_app)(http(path, method)) is passes


def test_the_workspace_header_goes_to_mlflow():
    assert native_routes._workspace_passes(http("/api/2.0/mlflow/experiments/search"))
    with_header = http("/x", headers=[(b"x-mlflow-workspace", b"team")])
    assert not native_routes._workspace_passes(with_header)
