"""The hook's per-request reads from MLflow's auth database.

One process-local engine, created on first use (never at import: MLflow imports the
hook into every worker, and forked workers must not share connections). Nothing read
here is cached across requests: every request sees the database as it is now, which is
what makes revocation, deletion and password changes take effect at once on all workers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa
from cachetools import LRUCache
from sqlalchemy.engine import Engine

from mlflow_stack.auth import permissions_sql, schema
from mlflow_stack.auth.engine import create_auth_engine
from mlflow_stack.auth.prepared import PreparedSelect
from mlflow_stack.auth.schema import access_tokens, users
from mlflow_stack.auth.token_format import as_utc

_logger = logging.getLogger(__name__)
T = TypeVar("T")

# last_used_at is informational; writing it on every request would turn each read into
# a write. Once a minute per token is precise enough to spot stale tokens.
LAST_USED_WRITE_INTERVAL = timedelta(seconds=60)
# If the token table cannot be created (e.g. read-only database role), bearer tokens
# are treated as unknown and creation is retried at most this often.
SCHEMA_RETRY_SECONDS = 30.0

# Both credential reads bring the user's grants along (permissions_sql.with_grants): a row per
# grant, the credential columns repeated; a non-admin's permission check then reads nothing more.
_SELECT_PASSWORD = PreparedSelect(
    "mlflow_stack_password",
    permissions_sql.with_grants(
        sa.select(users.c.password_hash, users.c.is_admin).select_from(users), users.c.id
    ).where(users.c.username == sa.bindparam("username")),
)
_SELECT_TOKEN = PreparedSelect(
    "mlflow_stack_token",
    permissions_sql.with_grants(
        sa.select(
            access_tokens.c.id,
            users.c.username,
            access_tokens.c.expires_at,
            access_tokens.c.revoked_at,
            access_tokens.c.last_used_at,
            users.c.is_admin,
        ).join(users, users.c.id == access_tokens.c.user_id),
        users.c.id,
    ).where(access_tokens.c.token_hash == sa.bindparam("token_hash")),
)
_TOUCH_TOKEN = (
    access_tokens.update()
    .where(
        access_tokens.c.id == sa.bindparam("token_id"),
        # Only the first worker to get here in a given minute writes; the others'
        # UPDATE matches no row.
        sa.or_(
            access_tokens.c.last_used_at.is_(None),
            access_tokens.c.last_used_at < sa.bindparam("stale_before"),
        ),
    )
    .values(last_used_at=sa.bindparam("now"))
)


class AuthDatabaseUnavailable(Exception):
    """The auth database could not answer; the caller fails closed."""


@dataclass(frozen=True)
class StoredPassword:
    password_hash: str | None
    is_admin: bool
    # The user's grants in the default workspace, read in the same statement.
    grants: tuple[permissions_sql.GrantRow, ...] = ()


@dataclass(frozen=True)
class StoredToken:
    id: int
    username: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    # Read with the token so that MLflow's admin checks need no further lookup.
    is_admin: bool = False
    grants: tuple[permissions_sql.GrantRow, ...] = ()


class AuthDatabase:
    def __init__(self, url: str | None = None) -> None:
        # None: MLflow's auth_config.ini decides, read on first use.
        self._url = url
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._lock = threading.Lock()
        self._schema_ready = False
        self._schema_retry_at = 0.0
        # Process-local damper for last_used_at writes, so a burst of requests with one
        # token does not send a burst of (no-op) UPDATEs before the first one commits.
        self._last_touch: LRUCache[int, float] = LRUCache(maxsize=10_000)

    # --- reads on the request path ---------------------------------------------------

    def stored_password(self, username: str) -> StoredPassword | None:
        rows = self.run(lambda c: _SELECT_PASSWORD.rows(c, {"username": username}))
        if not rows:
            return None
        first = rows[0]
        return StoredPassword(
            first.password_hash, bool(first.is_admin), permissions_sql.grants_of(rows)
        )

    def stored_token(self, token_hash: str) -> StoredToken | None:
        if not self.tables_ready():
            return None
        rows = self.run(lambda c: _SELECT_TOKEN.rows(c, {"token_hash": token_hash}))
        if not rows:
            return None
        row = rows[0]
        return StoredToken(
            id=row.id,
            username=row.username,
            expires_at=as_utc(row.expires_at),
            revoked_at=as_utc(row.revoked_at),
            last_used_at=as_utc(row.last_used_at),
            is_admin=bool(row.is_admin),
            grants=permissions_sql.grants_of(rows),
        )

    def record_token_use(self, token: StoredToken, now: datetime) -> None:
        """Bump last_used_at if it is older than the write interval. Never raises."""
        stale_before = now - LAST_USED_WRITE_INTERVAL
        if token.last_used_at is not None and token.last_used_at >= stale_before:
            return
        interval = LAST_USED_WRITE_INTERVAL.total_seconds()
        moment = time.monotonic()
        with self._lock:
            previous = self._last_touch.get(token.id)
            if previous is not None and moment - previous < interval:
                return
            self._last_touch[token.id] = moment
        params = {"token_id": token.id, "stale_before": stale_before, "now": now}
        try:
            self.run(lambda c: c.execute(_TOUCH_TOKEN, params))
        except AuthDatabaseUnavailable:
            # Bookkeeping only: a failed write must not fail the request it rides on.
            _logger.warning("could not update last_used_at of access token %s", token.id)

    # --- plumbing ----------------------------------------------------------------------

    def engine(self) -> Engine:
        pid = os.getpid()
        if self._engine is not None and self._engine_pid == pid:
            return self._engine
        with self._lock:
            if self._engine is None or self._engine_pid != pid:
                if self._engine is not None:
                    # Inherited across fork: drop the parent's connections without
                    # closing them (they still belong to the parent).
                    self._engine.dispose(close=False)
                self._engine = create_auth_engine(self._database_url(), for_request_path=True)
                self._engine_pid = pid
            return self._engine

    def _database_url(self) -> str:
        if self._url is None:
            # Imported here: mlflow's config module is only needed once per process.
            from mlflow.server.auth.config import read_auth_config

            self._url = read_auth_config().database_uri
        return self._url

    def tables_ready(self) -> bool:
        if self._schema_ready:
            return True
        if time.monotonic() < self._schema_retry_at:
            return False
        try:
            schema.ensure_schema(self.engine())
        except (sa.exc.SQLAlchemyError, schema.MissingUsersTable) as exc:
            self._schema_retry_at = time.monotonic() + SCHEMA_RETRY_SECONDS
            _logger.warning(
                "the tables of access tokens and sessions are unavailable, both refused: %s", exc
            )
            return False
        self._schema_ready = True
        return True

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work(connection)``; retry once if a pooled connection turns out dead.

        Without pre-ping a connection killed by a database restart is only noticed on
        use; SQLAlchemy then invalidates the pool, so one retry gets a fresh connection.
        """
        for attempt in (1, 2):
            try:
                with self.engine().connect() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1:
                    continue
                raise AuthDatabaseUnavailable(_describe(exc)) from exc
            except sa.exc.SQLAlchemyError as exc:  # e.g. pool exhausted (TimeoutError)
                raise AuthDatabaseUnavailable(_describe(exc)) from exc
        raise AssertionError("unreachable")


def _describe(exc: Exception) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__
