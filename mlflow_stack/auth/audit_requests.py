"""What the project's app writes to the audit log for each request (mlflow_stack/auth/audit.py).

A line is built and written in `after_request`, once the handler has answered and the status
is known, from fields picked one by one (who, how they authenticated, the route, the resource
ids, the status, the client, the duration). Not later: MLflow serves Flask through Starlette's
WSGI bridge, which never closes a response, so `call_on_close` would never run; and a line
written before the response is sent is one a crash right after cannot lose.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, request

from mlflow_stack.auth import audit, audit_native, hook

_STARTED_ATTRIBUTE = "_mlflow_stack_audit_started"


def install(app: Flask, settings: audit.Settings | None = None) -> audit.AuditFile | None:
    """Register the audit on a Flask app; nothing when no audit file is configured."""
    settings = settings or audit.Settings.from_environment()
    if settings is None:
        return None
    log = audit.AuditFile(settings)

    def started() -> None:
        setattr(g, _STARTED_ATTRIBUTE, time.perf_counter())

    def finished(response: Response) -> Response:
        record = record_for(response)
        if record is not None:
            log.append(record)
        return response

    # Ahead of every other before_request, so the duration covers authentication too.
    app.before_request_funcs.setdefault(None, []).insert(0, started)
    app.after_request(finished)
    return log


def record_for(response: Response) -> dict[str, Any] | None:
    """The audit record of this request, or None when it is neither a change nor a failed
    authentication."""
    # The objects behind Flask's proxies, once: each proxied attribute costs a lookup.
    req = request._get_current_object()  # type: ignore[attr-defined]
    status = response.status_code
    method, path = req.method, req.path
    if status != 401 and not audit.is_state_changing(method, path):
        return None
    began = getattr(g, _STARTED_ATTRIBUTE, None)
    record: dict[str, Any] = {
        "ts": audit.now_iso(),
        "user": None,
        "auth": hook.method_of_this_request(),
        "method": method,
        "route": path,
        "status": status,
        "outcome": audit.outcome_of(status),
        "client": req.remote_addr,
        "duration_ms": round((time.perf_counter() - began) * 1000, 2) if began else None,
    }
    authorization = req.authorization
    if status != 401 and authorization is not None:
        record["user"] = authorization.get("username")
        token_id = authorization.get("token_id")
        if token_id:
            record["token_id"] = token_id
    else:
        record.update(_attempted())
    body = req.get_json(silent=True) if req.is_json else None
    record.update(audit.resource_ids(body, req.args))
    return record


def _attempted() -> dict[str, Any]:
    """Who a refused request claimed to be, without what it proved it with."""
    return audit_native.claimed_identity(request.headers.get("Authorization", ""))
