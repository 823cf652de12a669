"""Audit lines for the requests FastAPI answers itself (artifact uploads and deletes, OTLP
traces, jobs, the gateway, MCP servers): Flask's after_request (audit_requests.py) never sees
them, since they never reach Flask.

ASGI middleware around the whole app. A request is written once its response has started, if
it is a change or a failed authentication and it matched one of FastAPI's own routes (a path
left to the mounted Flask app is audit_requests' to write, so no line is written twice). Who
made it comes from the project's hook, which records the identity it authenticated in
``audit.REQUEST_IDENTITY`` (a holder set here, shared with the worker thread the hook runs in);
a refused request names the user its header claimed, never what it proved it with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlflow_stack.auth import audit
from mlflow_stack.auth.token_format import looks_like_token

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

MEMO_SIZE = 4096


class NativeRouteAudit:
    """ASGI middleware writing the audit line of each audited request FastAPI serves."""

    def __init__(self, app: ASGIApp, fastapi_app: Any, log: audit.AuditFile) -> None:
        from starlette.routing import Match, Mount

        self.app = app
        self.log = log
        self._full = Match.FULL
        # FastAPI's own routes; the Mount is the Flask app, whose requests Flask audits.
        self._native = [r for r in fastapi_app.routes if not isinstance(r, Mount)]
        self._memo: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []
        identity: dict[str, Any] = {}
        token = audit.REQUEST_IDENTITY.set(identity)

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            audit.REQUEST_IDENTITY.reset(token)
            if status and self._audited(scope, status[0]):
                self.log.append(record_of(scope, status[0], identity, started))

    def _audited(self, scope: Scope, status: int) -> bool:
        method, path = scope.get("method", ""), scope.get("path") or ""
        if status != 401 and not audit.is_state_changing(method, path):
            return False
        key = (method, path)
        native = self._memo.get(key)
        if native is None:
            native = any(route.matches(scope)[0] == self._full for route in self._native)
            with self._lock:
                if len(self._memo) >= MEMO_SIZE:
                    self._memo.clear()
                self._memo[key] = native
        return native


def record_of(
    scope: Scope, status: int, identity: dict[str, Any], started: float
) -> dict[str, Any]:
    """The audit line of one answered request, from its scope and who the hook said it was."""
    client = scope.get("client")
    record: dict[str, Any] = {
        "ts": audit.now_iso(),
        "user": None,
        "auth": identity.get("auth"),
        "method": scope.get("method"),
        "route": scope.get("path"),
        "status": status,
        "outcome": audit.outcome_of(status),
        "client": client[0] if client else None,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if status != 401 and identity.get("user"):
        record["user"] = identity["user"]
        if identity.get("token_id"):
            record["token_id"] = identity["token_id"]
    else:
        record.update(claimed(scope))
    record.update(audit.resource_ids(scope.get("path_params")))
    return record


def claimed(scope: Scope) -> dict[str, Any]:
    """Who a refused ASGI request claimed to be, from its credentials header."""
    headers = dict(scope.get("headers") or [])
    header = headers.get(b"x-mlflow-authorization") or headers.get(b"authorization") or b""
    return claimed_identity(header.decode("latin-1"))


def claimed_identity(header: str) -> dict[str, Any]:
    """Who an Authorization header claims to be (a basic-auth username) and by which method,
    without what it proves it with (shared with audit_requests, Flask's side)."""
    from mlflow_stack.auth import hook

    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        offered = hook.basic_credentials(value.strip())
        return {"auth": hook.METHOD_PASSWORD, "user": offered.username if offered else None}
    if scheme == "bearer":
        return {"auth": hook.METHOD_TOKEN if looks_like_token(value.strip()) else hook.METHOD_JWT}
    return {"auth": None}
