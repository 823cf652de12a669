"""Database round trips per request, counted in-process (SQLAlchemy events, and a hook of the
credential reads that go past them).

``python -m mlflow_stack.bench.roundtrips SPEC.json`` builds the project's MLflow app in this
process as uvicorn gets it (the FastAPI app, with MLflow's middlewares and the Flask app
mounted), on the running stack's own databases and auth_config.ini, sends each request of the
spec to it over ASGI and prints, as JSON, the round trips each one made: statements (those
SQLAlchemy executes, and the credential reads sent past it, prepared.DIRECT_EXECUTE_OBSERVERS),
plus BEGIN/COMMIT/ROLLBACK on connections that are not in autocommit, plus one pre-ping per
connection checkout of a pool that pings. They are split into ``auth`` (the auth database, and
the fast path's run lookup) and ``handler`` (MLflow's tracking store): ``auth`` is what
authentication and authorization add, since the handler's share is the same without them.

The same process then times the audit log's own hooks (mlflow_stack/auth/audit_requests.py)
on audited requests (log-metric, each written to the stack's audit file): their cost per
request, what the audit adds, without the noise of an A/B over HTTP.

A fresh interpreter per run: MLflow's auth module reads its configuration at import.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

# One count per request; a few warm-up requests first so pools and caches are in steady state.
WARM_UP = 3
MEASURED = 5
AUDITED = 300


class Counting:
    """Round trips per engine group, from events on every engine and pool of this process."""

    def __init__(self) -> None:
        self.trips: Counter[str] = Counter()
        self.groups: dict[int, str] = {}
        self.pools: dict[int, str] = {}
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._statement)
        for name in ("begin", "commit", "rollback"):
            sa.event.listen(sa.engine.Engine, name, self._transaction)
        sa.event.listen(sa.pool.Pool, "checkout", self._checkout)
        # The credential reads' EXECUTE goes past SQLAlchemy's events (prepared.rows).
        from mlflow_stack.auth import prepared

        prepared.DIRECT_EXECUTE_OBSERVERS.append(self._direct)

    def group(self, engine: sa.Engine, name: str) -> None:
        self.groups[id(engine)] = name
        if getattr(engine.pool, "_pre_ping", False):
            self.pools[id(engine.pool)] = name

    def _statement(self, conn: sa.Connection, *_args: Any) -> None:
        self.trips[self.groups.get(id(conn.engine), "other")] += 1

    def _direct(self, engine: sa.Engine) -> None:
        self.trips[self.groups.get(id(engine), "other")] += 1

    def _transaction(self, conn: sa.Connection, *_args: Any) -> None:
        # Asking the connection would itself be a round trip; the engine's setting is enough.
        if conn.engine.dialect._on_connect_isolation_level != "AUTOCOMMIT":
            self.trips[self.groups.get(id(conn.engine), "other")] += 1

    def _checkout(self, _dbapi: Any, _record: Any, proxy: Any) -> None:
        name = self.pools.get(id(proxy._pool))
        if name is not None:
            self.trips[name] += 1


async def send_asgi(app: Any, request: dict[str, Any], headers: dict[str, str]) -> int:
    """One request to the ASGI app, as uvicorn would hand it over; its status."""
    body = json.dumps(request["json"]).encode() if request.get("json") is not None else b""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if body:
        raw_headers.append((b"content-type", b"application/json"))
    raw_headers += [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": request["path"],
        "raw_path": request["path"].encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw_headers,
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.sleep(3600)  # a client that keeps the connection open
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))

    await app(scope, receive, send)
    return statuses[0]


def _timed(function: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            spent[-1] += time.perf_counter() - started

    return timed


def audit_cost(flask_app: Any, served: Any, request: dict[str, Any]) -> dict[str, Any] | None:
    """Milliseconds per request spent in the audit's hooks, over AUDITED audited requests;
    None when the stack runs without an audit log."""
    from mlflow_stack.auth import audit_requests

    spent: list[float] = []
    found = 0
    for hooks in (flask_app.before_request_funcs, flask_app.after_request_funcs):
        functions = hooks.get(None, [])
        for index, function in enumerate(functions):
            if getattr(function, "__module__", "") == audit_requests.__name__:
                functions[index] = _timed(function, spent)
                found += 1
    if not found:
        return None
    for _ in range(AUDITED):
        spent.append(0.0)
        status = asyncio.run(send_asgi(served, request, request["headers"]))
        if status != 200:
            raise SystemExit(f"audit timing, {request['name']}: HTTP {status}")
    per_request = sorted(seconds * 1000 for seconds in spent)
    return {
        "requests": len(per_request),
        "hooks": found,
        "mean_ms": round(statistics.fmean(per_request), 4),
        "p50_ms": round(per_request[len(per_request) // 2], 4),
        "p99_ms": round(per_request[int(len(per_request) * 0.99)], 4),
    }


def main(argv: list[str]) -> int:
    with open(argv[0]) as spec_file:
        spec = json.load(spec_file)
    os.environ.update(spec["environment"])
    os.environ["_MLFLOW_SGI_NAME"] = "uvicorn"  # what `mlflow server` sets: the FastAPI app
    counting = Counting()
    from mlflow.server import app as flask_app
    from mlflow.server import auth as mlflow_auth
    from mlflow.server import handlers

    from mlflow_stack.auth import app as stack_app
    from mlflow_stack.auth import fastpath, hook

    served = stack_app.create_app(flask_app)
    fast = flask_app.extensions[fastpath.EXTENSION]
    counts: dict[str, dict[str, float]] = {}
    for request in spec["requests"]:
        headers = request["headers"]
        for index in range(WARM_UP + MEASURED):
            if index == WARM_UP:
                # Engines made lazily by the warm-up are known by now.
                counting.group(hook.database().engine(), "auth")
                counting.group(mlflow_auth.store.engine, "auth")
                tracking = fast._tracking_database()
                if tracking is not None:
                    counting.group(tracking.engine(), "auth")
                tracking_store: Any = handlers._get_tracking_store()
                counting.group(tracking_store.engine, "handler")
                counting.trips.clear()
            status = asyncio.run(send_asgi(served, request, headers))
            if status != 200:
                raise SystemExit(f"{request['name']}: HTTP {status}")
        counts[request["name"]] = {
            group: round(counting.trips[group] / MEASURED, 2) for group in ("auth", "handler")
        }
    cost = None
    if spec.get("time_audit"):
        audited = next(r for r in spec["requests"] if r["path"].endswith("/runs/log-metric"))
        cost = audit_cost(flask_app, served, audited)
    print(json.dumps({"round_trips": counts, "audit": cost}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
