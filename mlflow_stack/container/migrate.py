"""Bring every schema the MLflow server needs to head, safely when several run at once.

usage: python -m mlflow_stack.container.migrate

The tracking database comes from MLFLOW_BACKEND_STORE_URI; the auth database from
MLFLOW_STACK_AUTH_DATABASE_URI (the Kubernetes Job), else from the auth_config.ini that
MLFLOW_AUTH_CONFIG_PATH names, or from its text in MLFLOW_STACK_AUTH_CONFIG_INI (compose).
Neither URI is ever an argument, and what is printed names schemas and revisions, never a URI.

Why a step of its own: MLflow's start-up lock for the tracking schema is a file in each host's
/tmp, and the auth schema's migration has no lock at all, so servers (or pods) starting
together on empty databases die with duplicate keys. Here one PostgreSQL advisory lock, held
on the tracking database's server, makes every run after the first find the schemas at head.
Runs by `invoke up` on both runtimes, and as the Kubernetes migration Job.
"""

from __future__ import annotations

import configparser
import os
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from mlflow_stack.errors import StackError

STORE_URI_VARIABLE = "MLFLOW_BACKEND_STORE_URI"
AUTH_CONFIG_PATH_VARIABLE = "MLFLOW_AUTH_CONFIG_PATH"
AUTH_CONFIG_TEXT_VARIABLE = "MLFLOW_STACK_AUTH_CONFIG_INI"
AUTH_URI_VARIABLE = "MLFLOW_STACK_AUTH_DATABASE_URI"
LOCK_KEY = zlib.crc32(b"mlflow-stack-migrate") & 0x7FFFFFFF
# Set by render for the server: migrate before it starts (the container's entry point and the
# local runtime's launcher do), so that `invoke up` brings the schemas to head on both runtimes.
ON_START_VARIABLE = "MLFLOW_STACK_MIGRATE_ON_START"


def auth_database_uri(environ: dict[str, str]) -> str:
    """The auth database's URI: given as such (the Kubernetes Job's Secret), else from the
    auth config the server itself will read."""
    if environ.get(AUTH_URI_VARIABLE):
        return environ[AUTH_URI_VARIABLE]
    text = environ.get(AUTH_CONFIG_TEXT_VARIABLE)
    if not text:
        path = environ.get(AUTH_CONFIG_PATH_VARIABLE)
        if not path:
            raise StackError(
                f"set {AUTH_CONFIG_PATH_VARIABLE} (or {AUTH_CONFIG_TEXT_VARIABLE}) to the "
                "auth_config.ini of the server"
            )
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise StackError(f"cannot read {path}: {exc.strerror}") from None
    # No interpolation: MLflow reads the file with its own parser, and the rendered file
    # escapes a '%' as '%%' for exactly that parser.
    parser = configparser.ConfigParser()
    parser.read_string(text)
    uri = parser.get("mlflow", "database_uri", fallback="")
    if not uri:
        raise StackError("the auth config has no [mlflow] database_uri")
    return uri


def tracking_database_uri(environ: dict[str, str]) -> str:
    uri = environ.get(STORE_URI_VARIABLE, "")
    if not uri:
        raise StackError(f"set {STORE_URI_VARIABLE} to the tracking database's URI")
    return uri


@contextmanager
def _exclusive(engine: sa.Engine) -> Iterator[None]:
    """One migration at a time per database server (nothing to hold on SQLite files)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})


def _tracking_to_head(engine: sa.Engine) -> str:
    from mlflow.store.db import utils

    head = utils._get_latest_schema_revision()  # type: ignore[no-untyped-call]
    if utils._is_empty_database(engine):  # type: ignore[no-untyped-call]
        utils._initialize_tables(engine)  # type: ignore[no-untyped-call]
        return f"tracking schema created at {head}"
    found = utils._get_schema_version(engine)  # type: ignore[no-untyped-call]
    if found == head:
        return f"tracking schema already at {head}"
    utils._upgrade_db(engine)  # type: ignore[no-untyped-call]
    return f"tracking schema upgraded from {found} to {head}"


def _auth_to_head(engine: sa.Engine) -> str:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db import utils

    script = ScriptDirectory.from_config(
        utils._get_alembic_config(engine.url.render_as_string(hide_password=False))
    )
    head = script.get_current_head()
    with engine.connect() as conn:
        found = MigrationContext.configure(
            conn, opts={"version_table": "alembic_version_auth"}
        ).get_current_revision()
    if found == head:
        return f"auth schema already at {head}"
    utils.migrate(engine, "head")
    return f"auth schema {'created' if found is None else f'upgraded from {found}'} at {head}"


def migrate(tracking_uri: str, auth_uri: str) -> list[str]:
    """Tracking schema, auth schema, then the project's tables: each brought to head."""
    from mlflow_stack.auth import schema

    tracking = sa.create_engine(tracking_uri, poolclass=NullPool)
    auth = sa.create_engine(auth_uri, poolclass=NullPool)
    try:
        with _exclusive(tracking):
            done = [_tracking_to_head(tracking), _auth_to_head(auth)]
            schema.ensure_schema(auth)
            done.append("project tables present")
            return done
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "no connection"
        raise StackError(f"cannot reach the database to migrate it: {reason}") from None
    finally:
        tracking.dispose()
        auth.dispose()


def main(environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    try:
        for line in migrate(tracking_database_uri(environ), auth_database_uri(environ)):
            print(f"migrate: {line}", flush=True)
    except StackError as exc:
        print(f"migrate: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def migrate_on_start() -> None:
    """Before the server starts, where render asked for it; a failure stops the start."""
    if os.environ.get(ON_START_VARIABLE) == "1" and main() != 0:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
