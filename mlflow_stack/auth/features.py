"""Requests the stack answers before MLflow does, by the profile's choice of features.

- With MLflow's job runner off (job_execution = false), the requests that would submit a job
  get a 400 saying how to turn it on; MLflow answers them with a 500.
- With users_list_admins_only, users/list is for admins alone (MLflow lets any user list
  every user).
- Provider keys of the AI gateway (gateway/secrets create, update) are stored by admins alone:
  MLflow lets every user who may create experiments store one, and without workspaces that
  is every user.

`refusal` runs in the project app's before_request, ahead of MLflow's own checks, on every
request: it looks at the path first and does nothing else for any other. `guard_jobs_route`
covers the one job route that FastAPI serves without Flask.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from flask import Request, Response, jsonify

from mlflow_stack.auth import hook

JOB_VARIABLE = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"  # MLflow's own switch
USERS_LIST_VARIABLE = "MLFLOW_STACK_SERVER_USERS_LIST_ADMINS_ONLY"  # rendered by render.py
# The Flask routes that submit a job (mlflow/server/handlers.py), all POST.
JOB_PATHS = frozenset(
    {
        "/ajax-api/3.0/mlflow/scorer/invoke",
        "/ajax-api/3.0/mlflow/issues/invoke",
        "/ajax-api/3.0/mlflow/genai/evaluate/invoke",
        "/api/3.0/mlflow/prompt-optimization/jobs",
        "/ajax-api/3.0/mlflow/prompt-optimization/jobs",
    }
)
# mlflow/server/job_api.py's submit route (FastAPI, outside Flask).
FASTAPI_JOBS_PATH = "/ajax-api/3.0/jobs"
USERS_LIST_PATHS = frozenset({"/api/2.0/mlflow/users/list", "/ajax-api/2.0/mlflow/users/list"})
GATEWAY_SECRET_PATHS = frozenset(
    {
        f"/{api}/3.0/mlflow/gateway/secrets/{action}"
        for api in ("api", "ajax-api")
        for action in ("create", "update")
    }
)
JOBS_OFF_MESSAGE = (
    "MLflow's job runner is off on this server, and the judges, evaluation, issue detection "
    "and prompt optimization run as its jobs: set job_execution = true in the stack's profile "
    "(or MLFLOW_STACK_JOB_EXECUTION=true) and run `invoke up` again"
)
USERS_LIST_MESSAGE = "only admins may list users on this server (users_list_admins_only)"
PROVIDER_KEYS_MESSAGE = "only admins may store provider keys (gateway secrets) on this server"


def _switched_on(variable: str, default: str = "false") -> bool:
    # MLflow's boolean variables: true/1 (any case) are on.
    return os.environ.get(variable, default).strip().lower() in ("true", "1")


def job_execution_enabled() -> bool:
    """Whether MLflow runs its job runner in this server (MLflow's default is off)."""
    return _switched_on(JOB_VARIABLE)


def error(status: int, code: str, message: str) -> Response:
    """An answer shaped like MLflow's own errors, which the UI shows."""
    response = jsonify({"error_code": code, "message": message})
    response.status_code = status
    return response


def _is_admin() -> bool | None:
    """Whether the caller is an admin; None when not authenticated (MLflow then answers)."""
    authorization = hook.authenticate()
    if isinstance(authorization, Response):
        return None
    known = hook.is_admin_of_this_request()
    if known is not None:
        return known
    from mlflow_stack.auth.sso_store import SsoStore

    found = SsoStore(hook.database()).user(authorization.username or "")
    return found is not None and found[1]


def refusal(request: Request) -> Response | None:
    """The answer to a request this profile does not serve, or None to let MLflow answer."""
    path = request.path
    if path in JOB_PATHS:
        if request.method != "POST" or job_execution_enabled() or _is_admin() is None:
            return None
        return error(400, "FEATURE_DISABLED", JOBS_OFF_MESSAGE)
    if path in USERS_LIST_PATHS:
        if not _switched_on(USERS_LIST_VARIABLE) or _is_admin() is not False:
            return None
        return error(403, "PERMISSION_DENIED", USERS_LIST_MESSAGE)
    if path in GATEWAY_SECRET_PATHS and request.method == "POST":
        if _is_admin() is not False:
            return None
        return error(403, "PERMISSION_DENIED", PROVIDER_KEYS_MESSAGE)
    return None


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class JobsRouteGuard:
    """ASGI middleware: POST /ajax-api/3.0/jobs/ answered with the 400 while the job runner is
    off. It runs outside MLflow's authentication (FastAPI's middlewares wrap it), so it says
    no more than that the feature is off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope.get("type") == "http"
            and scope.get("method") == "POST"
            and str(scope.get("path", "")).rstrip("/") == FASTAPI_JOBS_PATH
            and not job_execution_enabled()
        ):
            import json

            body = json.dumps({"error_code": "FEATURE_DISABLED", "message": JOBS_OFF_MESSAGE})
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await self.app(scope, receive, send)


def guard_jobs_route(app: Any) -> Any:
    """The app MLflow's create_app returned, with JobsRouteGuard outermost where it is the
    FastAPI app (uvicorn); a Flask app (other servers) has no such route and is returned as is."""
    if hasattr(app, "add_middleware"):
        app.add_middleware(JobsRouteGuard)
    return app
