"""The project's MLflow app (`mlflow server --app-name mlflow-stack`): MLflow's basic-auth app,
wrapped, never patched, through `mlflow.server.auth.create_app`, the supported extension point.

What it adds around MLflow's own checks, each in a module of its own:
- `features`: refusals by profile (job routes with the runner off, users/list, provider keys);
- `sso`: the single sign-on routes (/oidc/…), and users/current answered so the UI shows Logout;
- `fastpath` and `native_routes`: MLflow's own permission decisions, made with fewer database
  round trips (same answers, tests/differential);
- `audit_requests`: one audit line per change and per failed authentication (and
  `audit_native` for the requests FastAPI answers itself);
- `transport`: HSTS and Secure cookies over HTTPS;
- `access_log`: uvicorn's access lines written in batches, not one pipe write per request;
- `selfcheck`: refuses to start on MLflow internals other than the reviewed ones.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, Response, jsonify, request

from mlflow_stack.auth import (
    access_log,
    audit_native,
    audit_requests,
    fastpath,
    features,
    hook,
    native_routes,
    selfcheck,
    sso,
    transport,
)
from mlflow_stack.auth.idp import Provider
from mlflow_stack.auth.oidc_config import oidc_config
from mlflow_stack.auth.sso_store import SsoStore

# users/current, as MLflow routes it (GET_CURRENT_USER and its ajax twin).
CURRENT_USER_PATHS = frozenset(
    {"/api/2.0/mlflow/users/current", "/ajax-api/2.0/mlflow/users/current"}
)
# The methods after which the UI may offer Logout (and, for passwords, Change password).
BROWSER_METHODS = frozenset({hook.METHOD_PASSWORD, hook.METHOD_SESSION})
_START_LOCK_KEY = zlib.crc32(b"mlflow-stack-app-start") & 0x7FFFFFFF


@functools.cache
def browser_login() -> sso.BrowserLogin | None:
    config = oidc_config()
    if config is None:
        return None
    return sso.BrowserLogin(config, Provider(config), SsoStore(hook.database()))


def create_app(app: Flask | None = None) -> Any:
    """The app factory MLflow's `--app-name mlflow-stack` calls in every worker."""
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app

    # Before MLflow registers anything: a changed MLflow must not start with the fast path.
    selfcheck.check()
    flask_app = app or mlflow_flask_app
    flask_app.before_request(_before_mlflow)
    with _one_worker_at_a_time():
        served = create_basic_auth_app(flask_app)
    audit_log = audit_requests.install(flask_app)
    fastpath.install(flask_app)
    native_routes.install(served)
    served = features.guard_jobs_route(served)
    if audit_log is not None and hasattr(served, "add_middleware"):  # FastAPI (uvicorn)
        # A middleware of the FastAPI app, not a wrapper: the app uvicorn gets stays FastAPI.
        served.add_middleware(audit_native.NativeRouteAudit, fastapi_app=served, log=audit_log)
    access_log.batch_access_log()
    return transport.install(served)


def _before_mlflow() -> Response | None:
    if (refused := features.refusal(request)) is not None:
        return refused
    login = browser_login()
    if login is not None and request.path.startswith(sso.PREFIX):
        return login.handle(request)
    if request.method == "GET" and request.path in CURRENT_USER_PATHS:
        return _current_user(login)
    if (
        login is not None
        and sso.is_logout_mark(request.cookies.get(sso.SESSION_COOKIE))
        and sso.is_browser_navigation(request)
    ):
        return sso.redirect_to(sso.LOGOUT)
    return None


def _current_user(login: sso.BrowserLogin | None) -> Response:
    """MLflow's users/current, with is_basic_auth true wherever the browser signed in by
    password or session: MLflow sets it only for its own default hook, so with the project's
    hook the UI hid Logout and Change password from everyone."""
    authorization = hook.authenticate()
    if isinstance(authorization, Response):
        offered = hook.basic_credentials(request.headers.get("Authorization", "")[6:])
        if (
            login is not None
            and offered is not None
            and (offered.username or "").startswith(sso.UI_LOGOUT_USER_PREFIX)
        ):
            # No challenge this time: the browser must not prompt for a password.
            del authorization.headers["WWW-Authenticate"]
            return login.end_after_ui_logout(request, authorization)
        return authorization
    if (
        login is not None
        and hook.method_of_this_request() == hook.METHOD_SESSION
        and "Content-Type" not in request.headers
    ):
        # MLflow's UI logs out with an XMLHttpRequest carrying made-up credentials, which a
        # browser sends only when challenged; its ordinary users/current call carries a JSON
        # Content-Type. So the credential-less one is challenged, and its retry, as the
        # made-up user, ends the session above.
        return hook.unauthenticated_response()
    store = SsoStore(hook.database())
    found = store.user(authorization.username or "")
    if found is None:
        return hook.unauthenticated_response()
    user_id, is_admin = found
    return jsonify(
        {
            "user": {"id": user_id, "username": authorization.username, "is_admin": is_admin},
            "is_basic_auth": hook.method_of_this_request() in BROWSER_METHODS,
        }
    )


@contextmanager
def _one_worker_at_a_time() -> Iterator[None]:
    """MLflow's app migrates the auth database and creates the admin in every worker; with
    several workers starting on an empty database those race (duplicate keys). A PostgreSQL
    advisory lock lets them run one after the other."""
    engine = hook.database().engine()
    if engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy as sa

    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _START_LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _START_LOCK_KEY})
