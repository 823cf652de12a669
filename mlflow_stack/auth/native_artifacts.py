"""The native artifact routes (FastAPI's download and upload) on the fast path.

MLflow's FastAPI permission middleware authenticates these through the configured hook in a
synthetic Flask request, then looks the user up again (``store.get_user``) for the admin flag,
and for a non-admin resolves grants through two more store sessions. ``decide`` asks the hook
on the request's path and headers alone, takes the admin flag and grants its one statement
read, and reuses MLflow's own path parsing (``_artifact_proxy_child``) and fold. Anything else
(an experiment-level artifact, single sign-on users, workspaces, a refusal, an error) is left
to MLflow's middleware: ``None``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from mlflow_stack.auth import fastpath, hook, permissions_sql

FORWARD = "forward"
_ACTIONS = {"GET": "read", "PUT": "update"}


def decide(scope: dict[str, Any]) -> Any:
    """FORWARD (let the request through), a Starlette response to send, or None (ask MLflow).
    Blocks for one database read, as MLflow's middleware does for its own."""
    from mlflow.exceptions import MlflowException

    try:
        return _decide(scope)
    except MlflowException:
        return None  # MLflow's middleware answers it, in MLflow's words


def _decide(scope: dict[str, Any]) -> Any:
    from mlflow.server import auth as mlflow_auth

    auth: Any = mlflow_auth  # its module globals are untyped

    path, method = scope.get("path") or "", scope.get("method", "")
    action = _ACTIONS.get(method)
    if action is None or auth.MLFLOW_ENABLE_WORKSPACES.get():
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    # The hook's own decision on path and headers, without the synthetic Flask request
    # MLflow's _authenticate_custom_for_fastapi builds (a quarter of this function's time).
    # None: not basic or bearer, or refused: MLflow answers (and its 401 is the hook's).
    authenticated = hook.authenticate_headers(path, headers)
    if authenticated is None:
        return None
    is_admin, username, read_grants = authenticated
    if is_admin:
        return FORWARD
    # Starlette's query_params.get keeps the last value of a repeated key.
    query_path = dict(parse_qsl(query)).get("path")
    child = auth._artifact_proxy_child(
        auth._artifact_proxy_path_from_request_path(path, query_path), action
    )
    if child is auth._ARTIFACT_PROXY_UNPARSABLE:
        return _denied()
    if child is None:
        return None
    # Read with the credentials, in the same statement.
    grants = permissions_sql.user_grants(
        hook.database(), username, auth.DEFAULT_WORKSPACE_NAME, read_grants
    )
    if grants is None:
        return None
    child_types, experiment = child
    from mlflow.server.auth.requirements import Requirement

    requirements = [
        Requirement("experiment", experiment[1], "read"),
        *(Requirement(t, "*", action, fallback_if_no_grant=(experiment,)) for t in child_types),
    ]
    return FORWARD if fastpath.all_met(auth, grants, requirements) else _denied()


def _denied() -> Any:
    from starlette.responses import PlainTextResponse

    # MLflow's middleware answers a refused validator with exactly this.
    return PlainTextResponse("Permission denied", status_code=403)
