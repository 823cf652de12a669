"""Plain helpers of the smoke suite: configuration, REST client, cleanup, shared run.

See ``conftest.py`` for the environment variables and the cleanup limitation.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import secrets
import time
from typing import Any, ClassVar

import requests

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_USERNAME = "MLFLOW_TRACKING_USERNAME"
ENV_PASSWORD = "MLFLOW_TRACKING_PASSWORD"
ENV_TOKEN = "MLFLOW_TRACKING_TOKEN"
ENV_SMOKE_TOKEN = "MLFLOW_STACK_SMOKE_TOKEN"
ENV_REVOKED_TOKEN = "MLFLOW_STACK_SMOKE_REVOKED_TOKEN"
# An OpenID Provider's access token (a JWT): its checks run only where one is given.
ENV_OIDC_TOKEN = "MLFLOW_STACK_SMOKE_OIDC_TOKEN"
ENV_INSECURE_TLS = "MLFLOW_TRACKING_INSECURE_TLS"
ENV_CERT_PATH = "MLFLOW_TRACKING_SERVER_CERT_PATH"
ENV_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"

DEFAULT_TIMEOUT = 30.0


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class SmokeConfig:
    base_url: str
    username: str | None
    password: str | None
    token: str | None
    smoke_token: str | None
    revoked_token: str | None
    oidc_token: str | None
    verify: bool | str
    timeout: float
    prefix: str

    @property
    def admin_auth(self) -> requests.auth.AuthBase:
        if self.username is not None and self.password is not None:
            return requests.auth.HTTPBasicAuth(self.username, self.password)
        assert self.token is not None
        return BearerAuth(self.token)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _make_prefix() -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"smoke-{stamp}-{secrets.token_hex(3)}"


def load_config() -> SmokeConfig:
    """Read the environment; raise ``ValueError`` with a readable message if unusable."""
    uri = _env(ENV_URI)
    if uri is None:
        raise ValueError(
            f"{ENV_URI} is not set: the smoke suite needs the URL of a running MLflow "
            f"server (e.g. {ENV_URI}=http://127.0.0.1:5000)"
        )
    if not uri.startswith(("http://", "https://")):
        raise ValueError(f"{ENV_URI}={uri!r} is not an http(s) URL of a tracking server")
    username, password, token = _env(ENV_USERNAME), _env(ENV_PASSWORD), _env(ENV_TOKEN)
    if (username is None) != (password is None):
        raise ValueError(f"set both {ENV_USERNAME} and {ENV_PASSWORD}, or neither")
    if username is None and token is None:
        raise ValueError(
            f"no credentials: set {ENV_USERNAME} and {ENV_PASSWORD} (an admin user) or {ENV_TOKEN}"
        )
    verify: bool | str = True
    if (_env(ENV_INSECURE_TLS) or "").lower() in ("1", "true", "yes"):
        verify = False
    elif _env(ENV_CERT_PATH):
        verify = _env(ENV_CERT_PATH)  # type: ignore[assignment]
    try:
        timeout = float(_env(ENV_TIMEOUT) or DEFAULT_TIMEOUT)
    except ValueError as exc:
        raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds") from exc
    return SmokeConfig(
        base_url=uri.rstrip("/"),
        username=username,
        password=password,
        token=token,
        smoke_token=_env(ENV_SMOKE_TOKEN) or token,
        revoked_token=_env(ENV_REVOKED_TOKEN),
        oidc_token=_env(ENV_OIDC_TOKEN),
        verify=verify,
        timeout=timeout,
        prefix=_make_prefix(),
    )


# --------------------------------------------------------------------------- client


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


class NoAuth(requests.auth.AuthBase):
    """Send no credentials at all (also stops requests from falling back to ~/.netrc)."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.pop("Authorization", None)
        return r


class RestError(AssertionError):
    """An HTTP call did not return the status a check expected."""


def _describe(resp: requests.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and ("error_code" in body or "message" in body):
            text = f"{body.get('error_code', '')} {body.get('message', '')}".strip()
        else:
            text = resp.text
    except ValueError:
        text = resp.text
        if text.lstrip().lower().startswith(("<!doctype", "<html")):
            text = "(HTML error page)"
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


class MlflowRest:
    """Tiny REST client: ``call`` checks the status and returns the decoded JSON."""

    def __init__(self, cfg: SmokeConfig, auth: requests.auth.AuthBase) -> None:
        self.cfg = cfg
        self.auth = auth
        self.http = requests.Session()
        self.http.verify = cfg.verify

    def url(self, path: str) -> str:
        return self.cfg.base_url + path

    def request(
        self, method: str, path: str, *, auth: requests.auth.AuthBase | None = None, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", self.cfg.timeout)
        # Per request: a session's own verify loses to REQUESTS_CA_BUNDLE from the environment
        # (requests merges it in first), which proxies' setups commonly export.
        kwargs.setdefault("verify", self.cfg.verify)
        return self.http.request(method, self.url(path), auth=auth or self.auth, **kwargs)

    def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        expect: int = 200,
        auth: requests.auth.AuthBase | None = None,
    ) -> dict[str, Any]:
        resp = self.request(method, path, json=json, params=params, auth=auth)
        if resp.status_code != expect:
            raise RestError(
                f"{method} {path}: expected HTTP {expect}, got {resp.status_code}: "
                f"{_describe(resp)}"
            )
        if not resp.content:
            return {}
        try:
            data = resp.json()
        except ValueError:
            raise RestError(
                f"{method} {path}: HTTP {resp.status_code} but the body is not JSON: "
                f"{_describe(resp)}"
            ) from None
        return data if isinstance(data, dict) else {"_": data}

    def close(self) -> None:
        self.http.close()


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- cleanup


@dataclasses.dataclass
class CleanupRegistry:
    """What this session created; the finalizer of ``cleanup`` removes it."""

    experiments: list[str] = dataclasses.field(default_factory=list)
    users: list[str] = dataclasses.field(default_factory=list)
    artifact_dirs: list[str] = dataclasses.field(default_factory=list)  # proxied paths


def run_cleanup(api: MlflowRest, reg: CleanupRegistry, prefix: str) -> list[str]:
    errors: list[str] = []
    # 1. Artifacts: deleting the experiment would leave the files on disk / in the bucket.
    for path in reg.artifact_dirs:
        try:
            api.call("DELETE", f"/api/2.0/mlflow-artifacts/artifacts/{path}")
        except Exception as exc:
            errors.append(f"artifact {path}: {exc}")
    # 2. Experiments: soft delete (runs are moved to 'deleted' with them). No REST
    #    endpoint deletes permanently -- see the module docstring.
    for exp_id in reg.experiments:
        try:
            api.call("POST", "/api/2.0/mlflow/experiments/delete", json={"experiment_id": exp_id})
        except Exception as exc:
            errors.append(f"experiment {exp_id}: {exc}")
    # 3. Users: really deleted.
    for username in reg.users:
        try:
            api.call("DELETE", "/api/2.0/mlflow/users/delete", json={"username": username})
        except Exception as exc:
            errors.append(f"user {username}: {exc}")
    # 4. Nothing of ours may stay visible with the default (ACTIVE_ONLY) view.
    if reg.experiments:
        try:
            found = api.call(
                "POST",
                "/api/2.0/mlflow/experiments/search",
                json={"filter": f"name LIKE '{prefix}%'", "max_results": 100},
            ).get("experiments", [])
            if found:
                names = ", ".join(e["name"] for e in found)
                errors.append(f"still visible in the default experiment search: {names}")
        except Exception as exc:
            errors.append(f"verifying experiment cleanup: {exc}")
    return errors


# --------------------------------------------------------------------------- shared run


@dataclasses.dataclass
class SmokeRun:
    """The run shared by the tracking checks, plus which steps were done on it.

    The steps are idempotent so that every test can call the ones it depends on:
    running the suite in order performs each step in its own test, while a single
    test selected with ``-k`` performs its prerequisites itself.
    """

    api: MlflowRest
    experiment_id: str
    experiment_name: str
    run_id: str
    create_response: dict[str, Any]
    logged: bool = False
    finished: bool = False

    PARAM = ("smoke_param", "alpha")
    METRIC = ("smoke_accuracy", 0.93)
    BATCH_PARAMS: ClassVar[dict[str, str]] = {"smoke_batch_size": "32", "smoke_optimizer": "adam"}
    BATCH_METRICS: ClassVar[dict[str, float]] = {"smoke_loss": 0.25, "smoke_f1": 0.81}
    BATCH_TAG = ("smoke.tag", "batch")

    def log(self) -> None:
        if self.logged:
            return
        ts = now_ms()
        self.api.call(
            "POST",
            "/api/2.0/mlflow/runs/log-parameter",
            json={"run_id": self.run_id, "key": self.PARAM[0], "value": self.PARAM[1]},
        )
        self.api.call(
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            json={
                "run_id": self.run_id,
                "key": self.METRIC[0],
                "value": self.METRIC[1],
                "timestamp": ts,
                "step": 0,
            },
        )
        self.api.call(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            json={
                "run_id": self.run_id,
                "params": [{"key": k, "value": v} for k, v in self.BATCH_PARAMS.items()],
                "metrics": [
                    {"key": k, "value": v, "timestamp": ts, "step": 1}
                    for k, v in self.BATCH_METRICS.items()
                ],
                "tags": [{"key": self.BATCH_TAG[0], "value": self.BATCH_TAG[1]}],
            },
        )
        self.logged = True

    def finish(self) -> None:
        if self.finished:
            return
        self.log()
        self.api.call(
            "POST",
            "/api/2.0/mlflow/runs/update",
            json={"run_id": self.run_id, "status": "FINISHED", "end_time": now_ms()},
        )
        self.finished = True

    def get(self) -> dict[str, Any]:
        return self.api.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": self.run_id})[
            "run"
        ]
