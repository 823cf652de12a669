"""mlflow_stack.auth.features (what the profile switches off, answered before MLflow) and the
KEK passphrase that protects the AI gateway's provider keys."""

from __future__ import annotations

import asyncio
import json
import stat

import flask
import pytest
from werkzeug.datastructures import Authorization

from mlflow_stack.auth import features, hook
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.secrets import load_secrets, resolve_secrets


@pytest.fixture
def app() -> flask.Flask:
    return flask.Flask("features-test")


def signed_in(monkeypatch, is_admin: bool | None) -> list[str]:
    """The hook's answer for this request: a user (admin or not), or None for MLflow's 401.
    Returns the list of paths it was asked about."""
    asked: list[str] = []

    def authenticate():
        asked.append(flask.request.path)
        if is_admin is None:
            return hook.unauthenticated_response()
        return Authorization("basic", {"username": "alice"})

    monkeypatch.setattr(hook, "authenticate", authenticate)
    monkeypatch.setattr(hook, "is_admin_of_this_request", lambda: is_admin)
    return asked


def answer(app, path: str, method: str = "POST"):
    with app.test_request_context(path, method=method):
        return features.refusal(flask.request)


@pytest.mark.parametrize("path", sorted(features.JOB_PATHS))
def test_with_the_job_runner_off_a_job_request_is_a_400_that_says_how_to_turn_it_on(
    app, monkeypatch, path
):
    monkeypatch.setenv(features.JOB_VARIABLE, "false")
    signed_in(monkeypatch, is_admin=False)
    refused = answer(app, path)
    assert refused is not None and refused.status_code == 400
    body = refused.get_json()
    assert body["error_code"] == "FEATURE_DISABLED"
    assert "job_execution = true" in body["message"]
    assert "MLFLOW_STACK_JOB_EXECUTION=true" in body["message"]


def test_with_the_job_runner_on_or_unauthenticated_mlflow_answers(app, monkeypatch):
    path = "/ajax-api/3.0/mlflow/scorer/invoke"
    signed_in(monkeypatch, is_admin=False)
    monkeypatch.setenv(features.JOB_VARIABLE, "True")
    assert answer(app, path) is None
    monkeypatch.setenv(features.JOB_VARIABLE, "false")
    signed_in(monkeypatch, is_admin=None)
    assert answer(app, path) is None  # MLflow's authentication gives its 401
    monkeypatch.delenv(features.JOB_VARIABLE)  # MLflow's default: off
    signed_in(monkeypatch, is_admin=True)
    assert answer(app, path).status_code == 400


def test_users_list_is_for_admins_only_where_the_profile_says_so(app, monkeypatch):
    for path in sorted(features.USERS_LIST_PATHS):
        monkeypatch.setenv(features.USERS_LIST_VARIABLE, "false")
        signed_in(monkeypatch, is_admin=False)
        assert answer(app, path, "GET") is None
        monkeypatch.setenv(features.USERS_LIST_VARIABLE, "true")
        refused = answer(app, path, "GET")
        assert refused is not None and refused.status_code == 403
        assert refused.get_json()["error_code"] == "PERMISSION_DENIED"
        signed_in(monkeypatch, is_admin=True)
        assert answer(app, path, "GET") is None
        signed_in(monkeypatch, is_admin=None)
        assert answer(app, path, "GET") is None


@pytest.mark.parametrize("path", sorted(features.GATEWAY_SECRET_PATHS))
def test_only_admins_store_provider_keys(app, monkeypatch, path):
    signed_in(monkeypatch, is_admin=False)
    refused = answer(app, path)
    assert refused is not None and refused.status_code == 403
    signed_in(monkeypatch, is_admin=True)
    assert answer(app, path) is None


def test_every_other_request_costs_no_lookup(app, monkeypatch):
    asked = signed_in(monkeypatch, is_admin=False)
    monkeypatch.setenv(features.USERS_LIST_VARIABLE, "true")
    for path, method in [
        ("/api/2.0/mlflow/experiments/search", "GET"),
        ("/api/2.0/mlflow/runs/create", "POST"),
        ("/ajax-api/3.0/mlflow/gateway/secrets/list", "GET"),
        ("/ajax-api/3.0/mlflow/scorer/invoke", "GET"),
    ]:
        assert answer(app, path, method) is None
    assert asked == []


async def _call(asgi_app, path: str, method: str = "POST") -> tuple[int, dict | None]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    await asgi_app({"type": "http", "method": method, "path": path}, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if body else None


async def _inner(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_the_fastapi_job_route_gets_the_same_400_while_the_runner_is_off(monkeypatch):
    guard = features.JobsRouteGuard(_inner)
    monkeypatch.setenv(features.JOB_VARIABLE, "false")
    status, body = asyncio.run(_call(guard, "/ajax-api/3.0/jobs/"))
    assert status == 400 and body["error_code"] == "FEATURE_DISABLED"
    assert asyncio.run(_call(guard, "/ajax-api/3.0/jobs/abc", "GET"))[0] == 200
    assert asyncio.run(_call(guard, "/api/2.0/mlflow/runs/create"))[0] == 200
    monkeypatch.setenv(features.JOB_VARIABLE, "true")
    assert asyncio.run(_call(guard, "/ajax-api/3.0/jobs/"))[0] == 200


def test_the_guard_goes_around_a_fastapi_app_and_leaves_flask_alone():
    from fastapi import FastAPI

    fastapi_app = FastAPI()
    assert features.guard_jobs_route(fastapi_app) is fastapi_app
    assert [m.cls for m in fastapi_app.user_middleware] == [features.JobsRouteGuard]
    flask_app = flask.Flask("plain")
    assert features.guard_jobs_route(flask_app) is flask_app


def test_the_server_gets_the_switches_features_reads(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_JOB_EXECUTION", "true")
    render_profile(load_profile("demo"))
    env = parse_env_file(stack_home / "demo" / "local" / "mlflow.env")
    assert env[features.USERS_LIST_VARIABLE] == "true"
    assert env[features.JOB_VARIABLE] == "true"
    render_profile(load_profile("ci"))
    env = parse_env_file(stack_home / "ci" / "local" / "mlflow.env")
    assert env[features.USERS_LIST_VARIABLE] == "false"


# --- the KEK passphrase --------------------------------------------------------------------

KEK = "MLFLOW_CRYPTO_KEK_PASSPHRASE"


@pytest.mark.parametrize("name", ["dev", "ci", "demo", "sso"])
def test_every_profile_generates_a_kek_passphrase_kept_across_renders(stack_home, name):
    render_profile(load_profile(name))
    secrets_file = stack_home / name / "secrets.env"
    stored = parse_env_file(secrets_file)["MLFLOW_STACK_KEK_PASSPHRASE"]
    assert len(stored) >= 32
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    local_env_file = stack_home / name / "local" / "mlflow.env"
    assert parse_env_file(local_env_file)[KEK] == stored
    assert parse_env_file(local_env_file)["MLFLOW_CRYPTO_KEK_VERSION"] == "1"
    assert stat.S_IMODE(local_env_file.stat().st_mode) == 0o600
    compose_text = (stack_home / name / "docker-compose.yml").read_text()
    assert f"{KEK}: " in compose_text and stored in compose_text
    assert stored not in (stack_home / name / "local" / "supervisord.conf").read_text()
    render_profile(load_profile(name))
    assert parse_env_file(secrets_file)["MLFLOW_STACK_KEK_PASSPHRASE"] == stored


def test_the_kek_differs_per_profile_and_is_no_public_default(stack_home):
    ci, _ = resolve_secrets(load_profile("ci"), environ={})
    dev, _ = resolve_secrets(load_profile("dev"), environ={})
    assert ci.kek_passphrase != dev.kek_passphrase
    with pytest.raises(StackError, match="known default"):
        resolve_secrets(
            load_profile("demo"),
            environ={
                "MLFLOW_STACK_KEK_PASSPHRASE": "mlflow-default-kek-passphrase-for-development-only"
            },
        )
    with pytest.raises(StackError, match="MLFLOW_STACK_KEK_PASSPHRASE is shorter than 32"):
        resolve_secrets(load_profile("ci"), environ={"MLFLOW_STACK_KEK_PASSPHRASE": "x" * 31})


def test_a_secrets_file_from_before_the_kek_still_loads(stack_home):
    profile = load_profile("ci")
    render_profile(profile)
    secrets_file = stack_home / "ci" / "secrets.env"
    lines = secrets_file.read_text().splitlines()
    secrets_file.write_text(
        "\n".join(line for line in lines if "KEK" not in line) + "\n", encoding="utf-8"
    )
    assert load_secrets(profile).kek_passphrase == ""
    _, changed = resolve_secrets(profile)
    assert changed  # the next render adds one


def test_a_new_kek_version_reaches_the_server(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_KEK_VERSION", "2")
    render_profile(load_profile("ci"))
    env = parse_env_file(stack_home / "ci" / "local" / "mlflow.env")
    assert env["MLFLOW_CRYPTO_KEK_VERSION"] == "2"
    monkeypatch.setenv("MLFLOW_STACK_KEK_VERSION", "0")
    with pytest.raises(StackError, match="kek_version"):
        load_profile("ci")
