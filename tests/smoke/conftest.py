"""Configuration, REST client, shared fixtures and the summary table of the smoke suite.

The smoke suite talks to a *running* MLflow tracking server (``mlflow server
--app-name basic-auth``) over plain HTTP(S) with ``requests``, exactly as a remote
client would. It never imports the MLflow SDK.

Configuration comes only from environment variables:

``MLFLOW_TRACKING_URI`` (required)
    Base URL of the server, e.g. ``https://mlflow.example.org`` (a static prefix
    such as ``https://host/mlflow`` is fine: every route is appended to it).
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
    Credentials of an **admin** user (basic auth). The user-management checks
    need admin rights.
``MLFLOW_TRACKING_TOKEN`` (optional)
    Bearer token. Used for the main client only when no username/password is
    set, and as the "valid token" of the token check when
    ``MLFLOW_STACK_SMOKE_TOKEN`` is not set.
``MLFLOW_STACK_SMOKE_TOKEN`` (optional)
    A valid bearer token; the token-accepted check is skipped without it (and
    without ``MLFLOW_TRACKING_TOKEN``).
``MLFLOW_STACK_SMOKE_REVOKED_TOKEN`` (optional)
    A revoked bearer token; the revoked-token check is skipped without it.
``MLFLOW_STACK_SMOKE_OIDC_TOKEN`` (optional)
    An OpenID Provider's access token for the server's API audience: adds the single-sign-on
    checks (the token is accepted; the same token with a forged payload is refused).
``MLFLOW_TRACKING_INSECURE_TLS`` / ``MLFLOW_TRACKING_SERVER_CERT_PATH`` (optional)
    Same meaning as for the MLflow client: skip TLS verification, or verify
    against this CA bundle.
``MLFLOW_HTTP_REQUEST_TIMEOUT`` (optional)
    Per-request timeout in seconds (default 30).

Everything a run creates is named with a unique prefix ``smoke-<UTC timestamp>-<random>``
and removed by a session-scoped finalizer (see :class:`CleanupRegistry`).

Limitation (MLflow 3.17.2): there is no REST endpoint that *permanently* deletes an
experiment or a run. ``POST /api/2.0/mlflow/experiments/delete`` only moves the
experiment (and its runs) to the ``deleted`` lifecycle stage; the rows, and the name,
stay in the backend store until an operator runs ``mlflow gc`` with direct access to
the backend store. Hence: every smoke run uses fresh unique names (a deleted
experiment's name can never be re-created, so a fixed name would collide on the
second run), and the finalizer checks that searches with the *default* view type
(ACTIVE_ONLY) no longer show any smoke experiment. Uploaded artifacts are deleted
explicitly through the proxied artifact store, users are deleted for real.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from pathlib import Path

import pytest
import requests

from .smoke_client import (
    ENV_OIDC_TOKEN,
    ENV_URI,
    CleanupRegistry,
    MlflowRest,
    NoAuth,
    SmokeConfig,
    SmokeRun,
    load_config,
    now_ms,
    run_cleanup,
)

SMOKE_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass
class CleanupOutcome:
    ran: bool = False
    ok: bool = True
    duration: float = 0.0
    detail: str = ""


_CLEANUP = CleanupOutcome()

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def smoke_config() -> SmokeConfig:
    try:
        return load_config()
    except ValueError as exc:
        problem = str(exc)
    pytest.fail(f"smoke configuration: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def admin_api(smoke_config: SmokeConfig):
    """Client authenticated as the admin user from the environment."""
    api = MlflowRest(smoke_config, smoke_config.admin_auth)
    yield api
    api.close()


@pytest.fixture(scope="session")
def anon_api(smoke_config: SmokeConfig):
    """Client that sends no credentials."""
    api = MlflowRest(smoke_config, NoAuth())
    yield api
    api.close()


@pytest.fixture(scope="session")
def prefix(smoke_config: SmokeConfig) -> str:
    return smoke_config.prefix


@pytest.fixture(scope="session")
def cleanup(admin_api: MlflowRest, prefix: str):
    """Register created objects here; they are removed when the session ends."""
    reg = CleanupRegistry()
    yield reg
    if not (reg.experiments or reg.users or reg.artifact_dirs):
        return
    start = time.perf_counter()
    errors = run_cleanup(admin_api, reg, prefix)
    _CLEANUP.ran = True
    _CLEANUP.duration = time.perf_counter() - start
    _CLEANUP.ok = not errors
    _CLEANUP.detail = (
        f"{len(reg.experiments)} experiment(s) soft-deleted, {len(reg.users)} user(s) "
        f"deleted, {len(reg.artifact_dirs)} artifact dir(s) removed"
        if not errors
        else "; ".join(errors)
    )
    if errors:
        pytest.fail("smoke cleanup failed:\n  " + "\n  ".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def smoke_experiment(admin_api: MlflowRest, cleanup: CleanupRegistry, prefix: str) -> dict:
    """An experiment named ``<prefix>-experiment``, created once per session."""
    name = f"{prefix}-experiment"
    created = admin_api.call(
        "POST",
        "/api/2.0/mlflow/experiments/create",
        json={"name": name, "tags": [{"key": "smoke.prefix", "value": prefix}]},
    )
    exp_id = created.get("experiment_id")
    if not exp_id:
        pytest.fail(f"experiments/create returned no experiment_id: {created}", pytrace=False)
    cleanup.experiments.append(exp_id)
    return {"experiment_id": exp_id, "name": name}


@pytest.fixture(scope="session")
def smoke_run(admin_api: MlflowRest, smoke_experiment: dict, prefix: str) -> SmokeRun:
    """A run inside the smoke experiment, created once per session."""
    created = admin_api.call(
        "POST",
        "/api/2.0/mlflow/runs/create",
        json={
            "experiment_id": smoke_experiment["experiment_id"],
            "run_name": f"{prefix}-run",
            "start_time": now_ms(),
            "tags": [{"key": "smoke.prefix", "value": prefix}],
        },
    )
    info = created.get("run", {}).get("info", {})
    run_id = info.get("run_id") or info.get("run_uuid")
    if not run_id:
        pytest.fail(f"runs/create returned no run id: {created}", pytrace=False)
    return SmokeRun(
        api=admin_api,
        experiment_id=smoke_experiment["experiment_id"],
        experiment_name=smoke_experiment["name"],
        run_id=run_id,
        create_response=created,
    )


@pytest.fixture(scope="session")
def smoke_user(admin_api: MlflowRest, cleanup: CleanupRegistry, prefix: str) -> dict:
    """A non-admin user created through the admin API, deleted at the end."""
    username = f"{prefix}-user"
    password = secrets.token_urlsafe(18)  # MLflow requires >= 12 characters
    created = admin_api.call(
        "POST",
        "/api/2.0/mlflow/users/create",
        json={"username": username, "password": password},
    )
    cleanup.users.append(username)
    return {"username": username, "password": password, "created": created}


@pytest.fixture(scope="session")
def user_api(smoke_config: SmokeConfig, smoke_user: dict):
    api = MlflowRest(
        smoke_config,
        requests.auth.HTTPBasicAuth(smoke_user["username"], smoke_user["password"]),
    )
    yield api
    api.close()


# --------------------------------------------------------------------------- summary


@dataclasses.dataclass
class CheckResult:
    name: str
    outcome: str = "PASS"
    duration: float = 0.0
    detail: str = ""


_RESULTS: dict[str, CheckResult] = {}
_RANK = {"PASS": 0, "SKIP": 1, "FAIL": 2, "ERROR": 3}


def _is_smoke_item(item: pytest.Item) -> bool:
    return SMOKE_DIR in Path(str(item.path)).resolve().parents


def _check_name(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().splitlines()[0].strip().rstrip(".") if doc.strip() else ""
    return first or item.name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The single-sign-on checks exist only for a server that has it (an OIDC token given):
    # elsewhere they are not checks at all, rather than skipped ones.
    if not os.environ.get(ENV_OIDC_TOKEN):
        items[:] = [item for item in items if "oidc" not in item.name]
    for item in items:
        if _is_smoke_item(item):
            item.add_marker(pytest.mark.smoke)
            item.user_properties.append(("smoke_check", _check_name(item)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "smoke: REST smoke check against a running MLflow server (tests/smoke)"
    )


def _short(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    text = " ".join(text.split())
    for noise in ("Failed: ", "AssertionError: "):
        text = text.removeprefix(noise)
    if "RestError: " in text:
        text = text.split("RestError: ", 1)[1]
    return text


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    name = props.get("smoke_check")
    if name is None:
        return
    res = _RESULTS.setdefault(report.nodeid, CheckResult(name=name))
    if report.when == "teardown":
        # The only teardown work in this suite is the session cleanup, which has
        # its own row in the summary.
        return
    res.duration += report.duration
    if report.skipped:
        new = "SKIP"
    elif report.failed:
        new = "ERROR" if report.when == "setup" else "FAIL"
    else:
        return
    if _RANK[new] > _RANK[res.outcome]:
        res.outcome, res.detail = new, _short(report)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _RESULTS:
        return
    tr = terminalreporter
    rows = list(_RESULTS.values())
    width = max(len(r.name) for r in [*rows, CheckResult(name="cleanup (smoke objects)")])
    uri = os.environ.get(ENV_URI, "<unset>")
    tr.write_sep("=", f"MLflow smoke checks against {uri}")
    tr.write_line(f"{'#':>2}  {'check':<{width}}  {'result':<6}  {'time':>7}  detail")
    for i, r in enumerate(rows, 1):
        detail = r.detail[:100] + ("..." if len(r.detail) > 100 else "")
        tr.write_line(
            f"{i:>2}  {r.name:<{width}}  {r.outcome:<6}  {r.duration:>6.2f}s  {detail}",
            green=r.outcome == "PASS",
            red=r.outcome in ("FAIL", "ERROR"),
            yellow=r.outcome == "SKIP",
        )
    if _CLEANUP.ran:
        outcome = "PASS" if _CLEANUP.ok else "FAIL"
        tr.write_line(
            f"{'':>2}  {'cleanup (smoke objects)':<{width}}  {outcome:<6}  "
            f"{_CLEANUP.duration:>6.2f}s  {_CLEANUP.detail[:200]}",
            green=_CLEANUP.ok,
            red=not _CLEANUP.ok,
        )
    counts = {k: sum(r.outcome == k for r in rows) for k in _RANK}
    total = sum(r.duration for r in rows) + _CLEANUP.duration
    tr.write_line(
        f"{len(rows)} checks: {counts['PASS']} passed, {counts['FAIL']} failed, "
        f"{counts['ERROR']} errors, {counts['SKIP']} skipped in {total:.2f}s"
    )
