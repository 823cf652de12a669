"""Audit lines for the requests FastAPI answers itself (mlflow_stack/auth/audit_native.py), in
process: a FastAPI app with a native route and a mounted app standing for Flask."""

from __future__ import annotations

import asyncio
import base64
import json

from fastapi import FastAPI, HTTPException
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

from mlflow_stack.auth import audit
from mlflow_stack.auth.audit_native import NativeRouteAudit

UPLOAD = "/api/2.0/mlflow-artifacts/artifacts/1/run-a/artifacts/model.pkl"


def app_with_audit(tmp_path):
    app = FastAPI()

    @app.put("/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}")
    def upload(artifact_path: str) -> dict[str, str]:
        # A sync route runs in a worker thread, as the hook does on MLflow's native routes.
        holder = audit.REQUEST_IDENTITY.get()
        assert holder is not None
        holder.update(user="alice", auth="token", token_id="42")
        return {}

    @app.put("/refused/{name}")
    def refused(name: str) -> dict[str, str]:
        raise HTTPException(status_code=401)

    @app.get("/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}")
    def download(artifact_path: str) -> dict[str, str]:
        return {}

    async def flask_stand_in(scope, receive, send):
        await PlainTextResponse("from flask")(scope, receive, send)

    app.router.routes.append(Mount("/", app=flask_stand_in))
    log_path = tmp_path / "audit.jsonl"
    return NativeRouteAudit(app, app, audit.AuditFile(audit.Settings(log_path))), log_path


def call(app, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "server": ("127.0.0.1", 80),
        "client": ("10.0.0.7", 5000),
    }
    statuses: list[int] = []
    sent = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        return sent.pop() if sent else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return statuses[0]


def lines(log_path) -> list[dict]:
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def test_a_change_fastapi_serves_is_written_once_with_who_made_it(tmp_path):
    app, log_path = app_with_audit(tmp_path)
    assert call(app, "PUT", UPLOAD) == 200
    [line] = lines(log_path)
    assert line["route"] == UPLOAD and line["method"] == "PUT" and line["status"] == 200
    assert (line["user"], line["auth"], line["token_id"]) == ("alice", "token", "42")
    assert line["outcome"] == "ok" and line["client"] == "10.0.0.7"
    assert line["duration_ms"] >= 0


def test_reads_and_requests_left_to_flask_are_not_written_here(tmp_path):
    app, log_path = app_with_audit(tmp_path)
    assert call(app, "GET", UPLOAD) == 200
    # Flask's own after_request writes these (audit_requests.py): never twice.
    assert call(app, "POST", "/api/2.0/mlflow/experiments/create") == 200
    assert call(app, "POST", "/api/2.0/mlflow/experiments/create") == 200
    assert lines(log_path) == []


def test_a_refused_request_names_the_claimed_user_not_the_password(tmp_path):
    app, log_path = app_with_audit(tmp_path)
    basic = base64.b64encode(b"mallory:the-password-tried").decode()
    assert call(app, "PUT", "/refused/x", {"Authorization": f"Basic {basic}"}) == 401
    [line] = lines(log_path)
    assert (line["user"], line["auth"], line["outcome"]) == (
        "mallory",
        "password",
        "unauthenticated",
    )
    assert "the-password-tried" not in log_path.read_text()
