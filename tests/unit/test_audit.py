"""The audit log in-process: which requests make a line, what a line holds (and never holds),
rotation across writers, and reading it back with the filters of `invoke audit`."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, jsonify, request
from werkzeug.datastructures import Authorization

from mlflow_stack.auth import audit, audit_requests, hook
from mlflow_stack.cli import audit as audit_cli
from mlflow_stack.errors import StackError

PASSWORD = "s3cret-Passw0rd-%$@'\""
TOKEN = "mlst_" + "T" * 43


@pytest.mark.parametrize(
    ("method", "path", "changing"),
    [
        ("POST", "/api/2.0/mlflow/experiments/create", True),
        ("POST", "/api/2.0/mlflow/experiments/update", True),
        ("POST", "/api/2.0/mlflow/runs/log-metric", True),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", True),
        ("PATCH", "/api/2.0/mlflow/users/update-password", True),
        ("POST", "/api/2.0/mlflow/runs/search", False),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", False),
        ("POST", "/api/3.0/mlflow/traces/batch-get", False),
        ("POST", "/graphql", False),
        ("GET", "/api/2.0/mlflow/experiments/get", False),
    ],
)
def test_which_requests_change_state(method, path, changing):
    assert audit.is_state_changing(method, path) is changing


def test_resource_ids_copy_identifiers_only():
    body = {"experiment_id": 7, "name": "churn", "password": PASSWORD, "value": 0.3, "tags": []}
    assert audit.resource_ids(body, {"run_id": "abc"}) == {
        "experiment_id": "7",
        "name": "churn",
        "run_id": "abc",
    }
    assert audit.resource_ids(None, {}) == {}


def make_app(tmp_path, monkeypatch, max_bytes=audit.DEFAULT_MAX_BYTES, backups=3):
    """A Flask app with the audit installed, whose 'authentication' is the test's choice."""
    app = Flask(__name__)
    settings = audit.Settings(tmp_path / "audit.jsonl", max_bytes=max_bytes, backups=backups)
    log = audit_requests.install(app, settings)
    method = {"value": None}
    monkeypatch.setattr(hook, "method_of_this_request", lambda: method["value"])

    @app.before_request
    def authenticate():
        header = request.headers.get("Authorization", "")
        if header == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode():
            method["value"] = hook.METHOD_PASSWORD
            request.authorization = Authorization("basic", {"username": "alice"})
        elif header == f"Bearer {TOKEN}":
            method["value"] = hook.METHOD_TOKEN
            request.authorization = Authorization("bearer", {"username": "bob", "token_id": "4"})
        else:
            method["value"] = None
            return hook.unauthenticated_response()
        return None

    @app.route("/api/2.0/mlflow/<path:rest>", methods=["GET", "POST", "PATCH", "DELETE"])
    def mlflow_route(rest):
        if rest == "experiments/delete" and request.authorization["username"] == "bob":
            return jsonify({"error_code": "PERMISSION_DENIED"}), 403
        return jsonify({})

    return app, log


def lines(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def basic(password=PASSWORD) -> dict[str, str]:
    encoded = base64.b64encode(f"alice:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def test_changes_and_failed_logins_are_recorded_once_without_secrets(tmp_path, monkeypatch):
    app, log = make_app(tmp_path, monkeypatch)
    client = app.test_client()
    client.post("/api/2.0/mlflow/experiments/create", json={"name": "churn"}, headers=basic())
    client.post("/api/2.0/mlflow/runs/search", json={}, headers=basic())  # a read: no line
    client.get("/api/2.0/mlflow/experiments/get?experiment_id=1", headers=basic())
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    client.post("/api/2.0/mlflow/experiments/delete", json={"experiment_id": "1"}, headers=bearer)
    client.get("/api/2.0/mlflow/experiments/get", headers=basic("wrong-password"))
    client.post("/api/2.0/mlflow/runs/log-metric", headers={"Authorization": "Bearer mlst_nope"})
    log.close()

    records = lines(tmp_path)
    assert [(r["route"].rsplit("/", 2)[-2:], r["status"]) for r in records] == [
        (["experiments", "create"], 200),
        (["experiments", "delete"], 403),
        (["experiments", "get"], 401),
        (["runs", "log-metric"], 401),
    ]
    created, deleted, wrong_password, bad_token = records
    assert created["user"] == "alice" and created["auth"] == "password"
    assert created["name"] == "churn" and created["outcome"] == "ok"
    assert created["client"] == "127.0.0.1" and created["duration_ms"] >= 0
    assert deleted["user"] == "bob" and deleted["token_id"] == "4"
    assert deleted["outcome"] == "denied" and deleted["experiment_id"] == "1"
    assert wrong_password["user"] == "alice" and wrong_password["outcome"] == "unauthenticated"
    assert bad_token["auth"] == "token" and bad_token["user"] is None
    text = (tmp_path / "audit.jsonl").read_text()
    for secret in (PASSWORD, "wrong-password", TOKEN, "mlst_nope", "Basic ", "Bearer "):
        assert secret not in text


def test_rotation_keeps_the_configured_number_of_files_across_writers(tmp_path):
    settings = audit.Settings(tmp_path / "audit.jsonl", max_bytes=400, backups=2)
    # Two writers, as two server workers: each notices the other's rotation by the inode.
    first, second = audit.AuditFile(settings), audit.AuditFile(settings)
    for number in range(60):
        (first if number % 2 else second).append({"n": number, "pad": "x" * 40})
    first.close()
    second.close()
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    numbers = [r["n"] for r in audit.read_records(settings.path)]
    assert numbers == sorted(numbers) and numbers[-1] == 59  # oldest first, nothing reordered
    assert all(p.stat().st_size <= 400 + 80 for p in tmp_path.glob("audit.jsonl*"))
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": 3, "tor')
    assert [r["n"] for r in audit.read_records(path)] == [1, 2]


def test_filters_of_invoke_audit():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    records = [
        {"ts": "2026-12-01T09:00:00.000Z", "user": "alice", "outcome": "ok"},
        {"ts": "2026-12-01T11:30:00.000Z", "user": "alice", "outcome": "unauthenticated"},
        {"ts": "2026-12-01T11:45:00.000Z", "user": "bob", "outcome": "ok"},
    ]
    since = audit_cli.parse_since("2h", now)
    assert since == now - timedelta(hours=2)
    assert [r["user"] for r in audit_cli.matching(records, since=since)] == ["alice", "bob"]
    assert list(audit_cli.matching(records, user="alice", failed=True)) == [records[1]]
    assert audit_cli.parse_since("2026-12-01T10:00") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(StackError, match="invalid --since '2 weeks'"):
        audit_cli.parse_since("2 weeks")


def test_a_tasks_line_goes_to_the_volume_and_not_to_stdout(tmp_path, monkeypatch, capsys):
    import io

    from mlflow_stack.container import audit_log

    monkeypatch.setenv(audit.FILE_VARIABLE, str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv(audit.STDOUT_VARIABLE, "1")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"route": "tokens.create"}\n'))
    assert audit_log.main(["append"]) == 0
    assert capsys.readouterr().out == ""
    assert lines(tmp_path) == [{"route": "tokens.create"}]
    assert audit_log.main(["dump"]) == 0
    assert json.loads(capsys.readouterr().out) == {"route": "tokens.create"}
