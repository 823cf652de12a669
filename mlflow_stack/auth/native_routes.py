"""MLflow's three FastAPI "http" middlewares, paid for only by the requests they act on.

Under uvicorn MLflow serves its REST API through FastAPI: every request, including the Flask
routes that are most of the traffic, passes through three ``BaseHTTPMiddleware`` functions
(the workspace context, gateway timing, and basic auth's native-route permission check). A
``BaseHTTPMiddleware`` costs a task, a memory stream and a response wrapper per request even
when its function only calls ``call_next``. ``install`` puts each function behind a plain
ASGI gate that calls the inner app directly when the function would have done nothing but
``call_next`` (the same conditions as its own first lines), and MLflow's middleware otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mlflow_stack.auth import native_artifacts
from mlflow_stack.errors import StackError

# ASGI's three callables, loosely typed: this module imports no web framework at import time.
Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]

MEMO_SIZE = 4096
_WORKSPACE_HEADER = b"x-mlflow-workspace"  # mlflow.server.workspace_helpers.WORKSPACE_HEADER_NAME


class Gate:
    """Calls ``app`` itself when ``passes(scope)``, else MLflow's middleware around it."""

    def __init__(
        self,
        app: App,
        dispatch: Callable[..., Any],
        passes: Callable[[Scope], bool],
        around: Callable[[Scope], Any] | None = None,
        fast: tuple[Callable[[Scope], bool], Callable[[Scope], Any]] | None = None,
    ) -> None:
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app = app
        self.passes = passes
        self.around = around
        # (applies to this request?, its decision): native_artifacts for the permission gate.
        self.fast = fast
        self.middleware = BaseHTTPMiddleware(app, dispatch=dispatch)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.middleware(scope, receive, send)
            return
        if not self.passes(scope):
            if self.fast is not None and self.fast[0](scope):
                # On the event loop, as MLflow's own middleware authenticates: one indexed
                # read. A worker thread measured slower (in-process, c=4: 5.37 ms a request
                # against 4.33), and no faster at c=1.
                decision = self.fast[1](scope)
                if decision == native_artifacts.FORWARD:
                    await self.app(scope, receive, send)
                    return
                if decision is not None:
                    await decision(scope, receive, send)
                    return
            await self.middleware(scope, receive, send)
            return
        if self.around is None:
            await self.app(scope, receive, send)
            return
        done = self.around(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            done()


def permission_gate(fastapi_app: Any) -> Callable[[Scope], bool]:
    """When fastapi_permission_middleware would only call call_next: an unprotected path, or
    no native-route validator and (in fail-closed mode, MLflow's default) no native route
    either. Which native route a (method, path) matches never changes, so it is remembered."""
    from mlflow.environment_variables import MLFLOW_BASIC_AUTH_FAIL_CLOSED
    from mlflow.server import auth

    native = auth._native_fastapi_routes(fastapi_app)
    memo: dict[tuple[str, str], bool] = {}

    def passes(scope: Scope) -> bool:
        path = scope.get("path") or ""
        method = scope.get("method", "")
        if auth.is_unprotected_route(path):
            return True
        if auth._find_fastapi_validator(path, method) is not None:
            return False
        if not _flag(MLFLOW_BASIC_AUTH_FAIL_CLOSED):
            return True
        key = (method, path)
        found = memo.get(key)
        if found is None:
            found = not auth._scope_matches_native_route(native, scope)
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            memo[key] = found
        return found

    return passes


def _flag(variable: Any) -> bool:
    # MLflow's environment variables are untyped; read like MLflow reads them.
    return bool(variable.get())


def _gateway_passes(scope: Scope) -> bool:
    from mlflow.server.handlers import _add_static_prefix

    return not (scope.get("path") or "").startswith(_add_static_prefix("/gateway/"))


def _workspace_passes(scope: Scope) -> bool:
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    if _flag(MLFLOW_ENABLE_WORKSPACES):
        return False
    # A workspace header on a server without workspaces is MLflow's error to answer.
    return not any(
        name == _WORKSPACE_HEADER and value.strip() for name, value in scope.get("headers", ())
    )


def _workspace_around(_scope: Scope) -> Callable[[], None]:
    # What workspace_context_middleware does when workspaces are off: bind "no workspace"
    # for the request, and clear it afterwards.
    from mlflow.utils import workspace_context

    workspace_context.set_server_request_workspace(None)
    return workspace_context.clear_server_request_workspace


def _native_artifact(scope: Scope) -> bool:
    from mlflow.server import auth

    path, method = scope.get("path") or "", scope.get("method", "")
    # Only download and upload; an after-request handler (none today) stays MLflow's.
    return bool(
        auth._is_native_fastapi_proxy_artifact_path(path, method)
        and auth._find_fastapi_after_request_handler(path, method) is None
    )


PERMISSION = "fastapi_permission_middleware"
# MLflow's middleware function name -> when it would only call call_next (given the app), and
# what it does around the call then.
GATES: dict[str, tuple[Callable[[Any], Callable[[Scope], bool]], Callable[[Scope], Any] | None]] = {
    PERMISSION: (permission_gate, None),
    "gateway_timing_middleware": (lambda _app: _gateway_passes, None),
    "workspace_context_middleware": (lambda _app: _workspace_passes, _workspace_around),
}


def install(fastapi_app: Any) -> list[str]:
    """Gate MLflow's "http" middlewares on ``fastapi_app`` (before it serves its first
    request, when Starlette builds the middleware stack); returns the names gated. A Flask
    app (MLflow under another server) has none."""
    if not hasattr(fastapi_app, "user_middleware"):
        return []
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    gated = []
    for index, entry in enumerate(fastapi_app.user_middleware):
        dispatch = entry.kwargs.get("dispatch")
        name = getattr(dispatch, "__name__", "")
        if entry.cls is not BaseHTTPMiddleware or name not in GATES:
            continue
        gate_for, around = GATES[name]
        fast = (_native_artifact, native_artifacts.decide) if name == PERMISSION else None
        fastapi_app.user_middleware[index] = Middleware(
            Gate, dispatch=dispatch, passes=gate_for(fastapi_app), around=around, fast=fast
        )
        gated.append(name)
    if sorted(gated) != sorted(GATES):
        raise StackError(
            f"MLflow's FastAPI middlewares are not the ones mlflow-stack expects "
            f"(found {', '.join(sorted(gated)) or 'none'}); see mlflow_stack/auth/selfcheck.py"
        )
    return gated
