"""REST smoke checks against a running, authenticated MLflow tracking server.

Each test is one check; its docstring's first line is the name shown in the
summary table. Configuration and shared fixtures live in ``conftest.py``.
Run e.g.::

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 \\
    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \\
    python -m pytest tests/smoke -q
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from urllib.parse import urlparse

import pytest
import requests

from .smoke_client import (
    ENV_REVOKED_TOKEN,
    ENV_SMOKE_TOKEN,
    ENV_TOKEN,
    BearerAuth,
    MlflowRest,
    SmokeConfig,
    SmokeRun,
)

# A cheap endpoint that needs an authenticated user (any user may search; results
# are filtered by permission).
PROTECTED = "/api/2.0/mlflow/experiments/search"
PROTECTED_PARAMS = {"max_results": 1}


def expect_status(resp: requests.Response, expected: int, what: str) -> None:
    assert resp.status_code == expected, (
        f"{what}: {expected} expected but got {resp.status_code} "
        f"({resp.request.method} {urlparse(resp.url).path}): {resp.text.strip()[:200]}"
    )


# --------------------------------------------------------------------------- server


def test_health(anon_api: MlflowRest) -> None:
    """Health endpoint answers 200 without credentials"""
    resp = anon_api.request("GET", "/health")
    expect_status(resp, 200, "GET /health")
    assert resp.text.strip() == "OK", f"unexpected /health body: {resp.text[:100]!r}"


# --------------------------------------------------------------------------- authentication


def test_authentication_accepted(admin_api: MlflowRest, smoke_config: SmokeConfig) -> None:
    """Admin credentials are accepted"""
    admin_api.call("GET", PROTECTED, params=PROTECTED_PARAMS)
    # The basic-auth app knows who we are (and a server without it has no such route).
    resp = admin_api.request("GET", "/api/2.0/mlflow/users/current")
    expect_status(resp, 200, "GET users/current (is the server running --app-name basic-auth?)")
    user = resp.json().get("user", {})
    if smoke_config.username is not None:
        assert user.get("username") == smoke_config.username, user
    assert user.get("is_admin") is True, (
        f"the configured user is not an admin: {user}; the user-management checks need one"
    )


def test_no_credentials_rejected(anon_api: MlflowRest) -> None:
    """Request without credentials gets 401"""
    resp = anon_api.request("GET", PROTECTED, params=PROTECTED_PARAMS)
    expect_status(resp, 401, "read without credentials")
    resp = anon_api.request(
        "POST",
        "/api/2.0/mlflow/experiments/create",
        json={"name": f"smoke-must-not-exist-{secrets.token_hex(4)}"},
    )
    expect_status(resp, 401, "write without credentials")


def test_wrong_password_rejected(anon_api: MlflowRest, smoke_config: SmokeConfig) -> None:
    """Wrong password gets 401"""
    username = smoke_config.username or "admin"
    wrong = requests.auth.HTTPBasicAuth(username, f"wrong-{secrets.token_urlsafe(12)}")
    resp = anon_api.request("GET", PROTECTED, params=PROTECTED_PARAMS, auth=wrong)
    expect_status(resp, 401, f"wrong password for {username!r}")


# --------------------------------------------------------------------------- tracking


def test_create_experiment(admin_api: MlflowRest, smoke_experiment: dict) -> None:
    """Create an experiment"""
    exp = admin_api.call(
        "GET",
        "/api/2.0/mlflow/experiments/get",
        params={"experiment_id": smoke_experiment["experiment_id"]},
    )["experiment"]
    assert exp["name"] == smoke_experiment["name"]
    assert exp["lifecycle_stage"] == "active"


def test_create_run(smoke_run: SmokeRun) -> None:
    """Create a run"""
    info = smoke_run.create_response["run"]["info"]
    assert info["experiment_id"] == smoke_run.experiment_id
    assert info["status"] == "RUNNING", info
    fetched = smoke_run.get()["info"]
    assert fetched["run_id"] == smoke_run.run_id


def test_log_param_metric_batch(smoke_run: SmokeRun) -> None:
    """Log a parameter, a metric and a batch"""
    # log-parameter, log-metric and log-batch each must answer 200 (checked in log()).
    smoke_run.log()
    data = smoke_run.get()["data"]
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    assert params.get(SmokeRun.PARAM[0]) == SmokeRun.PARAM[1]


def test_finish_run(smoke_run: SmokeRun) -> None:
    """Finish the run"""
    smoke_run.finish()
    info = smoke_run.get()["info"]
    assert info["status"] == "FINISHED", info
    assert int(info.get("end_time", 0)) >= int(info["start_time"]), info


def test_get_run(smoke_run: SmokeRun) -> None:
    """Get the run back with its metrics and params"""
    smoke_run.finish()
    run = smoke_run.get()
    metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
    params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    expected_metrics = {SmokeRun.METRIC[0]: SmokeRun.METRIC[1], **SmokeRun.BATCH_METRICS}
    expected_params = {SmokeRun.PARAM[0]: SmokeRun.PARAM[1], **SmokeRun.BATCH_PARAMS}
    for key, value in expected_metrics.items():
        assert metrics.get(key) == pytest.approx(value), f"metric {key}: {metrics}"
    for key, value in expected_params.items():
        assert params.get(key) == value, f"param {key}: {params}"
    assert tags.get(SmokeRun.BATCH_TAG[0]) == SmokeRun.BATCH_TAG[1], tags
    assert run["info"]["status"] == "FINISHED"


def test_search_runs_by_metric(admin_api: MlflowRest, smoke_run: SmokeRun) -> None:
    """Search runs with a metric filter"""
    smoke_run.log()
    key, value = SmokeRun.METRIC
    hits = admin_api.call(
        "POST",
        "/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [smoke_run.experiment_id],
            "filter": f"metrics.{key} > {value - 0.5}",
            "max_results": 10,
        },
    ).get("runs", [])
    assert smoke_run.run_id in [r["info"]["run_id"] for r in hits], hits
    misses = admin_api.call(
        "POST",
        "/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [smoke_run.experiment_id],
            "filter": f"metrics.{key} > {value + 0.5}",
            "max_results": 10,
        },
    ).get("runs", [])
    assert misses == [], f"filter metrics.{key} > {value + 0.5} should match nothing: {misses}"


def test_search_experiments(admin_api: MlflowRest, smoke_experiment: dict, prefix: str) -> None:
    """Search experiments by name"""
    found = admin_api.call(
        "POST",
        "/api/2.0/mlflow/experiments/search",
        json={"filter": f"name LIKE '{prefix}%'", "max_results": 10},
    ).get("experiments", [])
    assert [e["experiment_id"] for e in found] == [smoke_experiment["experiment_id"]], found


# --------------------------------------------------------------------------- artifacts


def test_artifact_roundtrip(admin_api: MlflowRest, smoke_run: SmokeRun, cleanup) -> None:
    """Upload and download an artifact through the proxied artifact store"""
    artifact_uri = smoke_run.get()["info"]["artifact_uri"]
    parsed = urlparse(artifact_uri)
    assert parsed.scheme == "mlflow-artifacts", (
        f"run artifact_uri is {artifact_uri!r}; expected an 'mlflow-artifacts:' URI "
        "(server must run with --serve-artifacts and no direct --default-artifact-root)"
    )
    # mlflow-artifacts:/<exp>/<run>/artifacts (or mlflow-artifacts://host/<...>)
    run_root = parsed.path.strip("/")
    rel_dir = "smoke"
    filename = f"{smoke_run.experiment_name}.bin"
    proxied_dir = f"{run_root}/{rel_dir}"
    payload = secrets.token_bytes(64 * 1024) + bytes(range(256))  # binary, not UTF-8
    url_path = f"/api/2.0/mlflow-artifacts/artifacts/{proxied_dir}/{filename}"

    if proxied_dir not in cleanup.artifact_dirs:
        cleanup.artifact_dirs.append(proxied_dir)
    up = admin_api.request("PUT", url_path, data=payload)
    expect_status(up, 200, "artifact upload")

    listing = admin_api.call(
        "GET",
        "/api/2.0/mlflow/artifacts/list",
        params={"run_id": smoke_run.run_id, "path": rel_dir},
    ).get("files", [])
    sizes = {f["path"]: int(f.get("file_size", -1)) for f in listing}
    assert sizes.get(f"{rel_dir}/{filename}") == len(payload), listing

    down = admin_api.request("GET", url_path)
    expect_status(down, 200, "artifact download")
    assert hashlib.sha256(down.content).hexdigest() == hashlib.sha256(payload).hexdigest(), (
        f"downloaded {len(down.content)} bytes differ from the {len(payload)} uploaded"
    )


# --------------------------------------------------------------------------- users


def test_created_user_authenticates(
    admin_api: MlflowRest, user_api: MlflowRest, smoke_user: dict
) -> None:
    """User created through the admin API authenticates"""
    assert smoke_user["created"].get("user", {}).get("username") == smoke_user["username"]
    me = user_api.call("GET", "/api/2.0/mlflow/users/current").get("user", {})
    assert me.get("username") == smoke_user["username"], me
    assert me.get("is_admin") is False, me
    user_api.call("GET", PROTECTED, params=PROTECTED_PARAMS)


def test_non_admin_forbidden_on_admin_endpoint(
    admin_api: MlflowRest, user_api: MlflowRest, smoke_user: dict, prefix: str
) -> None:
    """Non-admin gets 403 on admin endpoints"""
    # Privilege escalation attempt on itself (harmless if it wrongly succeeded: the
    # user is deleted at the end and the assertion below reports it).
    resp = user_api.request(
        "PATCH",
        "/api/2.0/mlflow/users/update-admin",
        json={"username": smoke_user["username"], "is_admin": True},
    )
    expect_status(resp, 403, "non-admin users/update-admin")
    # Deleting a user: aimed at a name that does not exist, so a broken server
    # cannot destroy anything.
    resp = user_api.request(
        "DELETE",
        "/api/2.0/mlflow/users/delete",
        json={"username": f"{prefix}-nonexistent"},
    )
    expect_status(resp, 403, "non-admin users/delete")
    user = admin_api.call(
        "GET", "/api/2.0/mlflow/users/get", params={"username": smoke_user["username"]}
    )["user"]
    assert user.get("is_admin") is False, f"non-admin managed to make itself admin: {user}"


# --------------------------------------------------------------------------- tokens


def test_bearer_token_accepted(smoke_config: SmokeConfig, anon_api: MlflowRest) -> None:
    """Bearer token authenticates"""
    if not smoke_config.smoke_token:
        pytest.skip(f"no valid token given: set {ENV_SMOKE_TOKEN} (or {ENV_TOKEN})")
    resp = anon_api.request(
        "GET", PROTECTED, params=PROTECTED_PARAMS, auth=BearerAuth(smoke_config.smoke_token)
    )
    expect_status(resp, 200, "request with a valid bearer token")
    assert "experiments" in resp.json() or resp.json() == {}, resp.text[:200]


def test_revoked_token_rejected(smoke_config: SmokeConfig, anon_api: MlflowRest) -> None:
    """Revoked bearer token gets 401"""
    if not smoke_config.revoked_token:
        pytest.skip(f"no revoked token given: set {ENV_REVOKED_TOKEN}")
    resp = anon_api.request(
        "GET",
        PROTECTED,
        params=PROTECTED_PARAMS,
        auth=BearerAuth(smoke_config.revoked_token),
    )
    expect_status(resp, 401, "request with a revoked bearer token")


# --------------------------------------------------------------------------- single sign-on


def test_oidc_token_accepted(smoke_config: SmokeConfig, anon_api: MlflowRest) -> None:
    """OpenID Connect access token authenticates"""
    assert smoke_config.oidc_token is not None
    resp = anon_api.request(
        "GET", PROTECTED, params=PROTECTED_PARAMS, auth=BearerAuth(smoke_config.oidc_token)
    )
    expect_status(resp, 200, "request with the provider's access token")


def test_forged_oidc_token_rejected(smoke_config: SmokeConfig, anon_api: MlflowRest) -> None:
    """Forged OpenID Connect token gets 401"""
    assert smoke_config.oidc_token is not None
    header, payload, signature = smoke_config.oidc_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    resp = anon_api.request(
        "GET",
        PROTECTED,
        params=PROTECTED_PARAMS,
        auth=BearerAuth(f"{header}.{forged_payload}.{signature}"),
    )
    expect_status(resp, 401, "request with a token whose payload was changed after signing")
