"""SQLAlchemy engines for the auth database, configured for how we use them."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

# The hook runs one short indexed query per request on each worker thread that is
# serving a request. The pool keeps as many connections as a worker commonly serves requests
# at once: SQLAlchemy closes an overflow connection when it is returned, so a pool smaller
# than the load opens and closes a PostgreSQL connection (a backend started, authenticated,
# the statement prepared again) for most requests. With 2 kept, 4 clients on one worker spent
# about 4% of the worker's samples in connect, and the server 1.3 ms more CPU per search than
# without auth (py-spy and psutil, the ci stack). The overflow, up to the same 10 as before,
# absorbs rarer bursts.
HOOK_POOL_SIZE = 4
HOOK_POOL_MAX_OVERFLOW = 6
HOOK_POOL_TIMEOUT_SECONDS = 10
HOOK_APPLICATION_NAME = "mlflow-stack-auth-hook"


def create_auth_engine(url: str | URL, *, for_request_path: bool = False) -> Engine:
    """An engine on MLflow's auth database.

    ``for_request_path`` tunes it for the per-request lookups: AUTOCOMMIT so a lookup
    is a single round trip (no BEGIN/ROLLBACK around it), no pre-ping (that would be a
    second round trip; a dead connection is retried once by the caller instead).
    """
    url = _with_available_postgres_driver(sa.make_url(url))
    kwargs: dict[str, Any] = {"pool_pre_ping": False}
    if for_request_path:
        kwargs["isolation_level"] = "AUTOCOMMIT"
        if url.get_backend_name() != "sqlite":
            kwargs.update(
                pool_size=HOOK_POOL_SIZE,
                max_overflow=HOOK_POOL_MAX_OVERFLOW,
                pool_timeout=HOOK_POOL_TIMEOUT_SECONDS,
            )
        if url.get_backend_name() == "postgresql":
            # Tells a DBA (and our tests) which server worker holds which connection.
            kwargs["connect_args"] = {"application_name": f"{HOOK_APPLICATION_NAME} {os.getpid()}"}
    engine = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


def _with_available_postgres_driver(url: URL) -> URL:
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the stack installs
    # psycopg2-binary. Pick psycopg2 only when the URL names no driver and psycopg 3 is
    # absent, so an explicit choice is always respected.
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
        return url.set(drivername="postgresql+psycopg2")
    return url


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _connection_record: Any) -> None:
    # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked per
    # connection; MLflow's own sessions ask too.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 20000")
    finally:
        cursor.close()
