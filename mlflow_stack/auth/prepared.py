"""The hook's per-request reads as PostgreSQL prepared statements, planned once per connection.

PostgreSQL plans a statement sent as text every time. The credential read joins four tables
(users, role assignments, roles, grants) and its planning costs about as much as running it:
on a loopback connection the read took 0.73-0.83 ms as text and 0.49-0.50 ms as EXECUTE of a
statement prepared on that connection (1,000 reads each, one process, the dev stack). A
statement is PREPAREd on a pooled connection the first time it is used there; the pool clears
what it knows about a connection when it replaces it, so a new connection prepares again.

A connection pooler in transaction mode (PgBouncer) hands each statement to any server
connection, where the prepared statement may be missing or already exist: the first such
error turns preparing off for the process (a warning says so) and that request, like every
later one, runs the statement as text.

``rows`` sends the EXECUTE of a statement already prepared on the connection through the
driver's cursor directly: SQLAlchemy's execution (its statement cache, execution context,
result and Row objects) cost about 40 µs of every read (177 µs a read through it, 139 µs
past it, on the ci stack). Any driver error there runs the statement once more through
SQLAlchemy on the same connection, which sorts it out as before: a dead connection is
invalidated (with its pool) and raised for ``AuthDatabase.run``'s retry, a missing statement
turns preparing off.
"""

from __future__ import annotations

import logging
import re
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

_logger = logging.getLogger(__name__)

# The connection's info key: the names of the statements prepared on it.
_INFO_KEY = "mlflow_stack_prepared"
# SQLSTATEs of a prepared statement that is not where it was made: invalid_sql_statement_name
# (26000, missing) and duplicate_prepared_statement (42P05, already there).
_POOLER_SQLSTATES = frozenset({"26000", "42P05"})
# Called with the engine after each EXECUTE sent past SQLAlchemy, which therefore sees no
# statement: the bench's round-trip count (mlflow_stack/bench/roundtrips.py) listens here.
DIRECT_EXECUTE_OBSERVERS: list[Callable[[sa.Engine], None]] = []


class PreparedSelect:
    """``select`` with named bind parameters; ``execute`` runs it as EXECUTE on PostgreSQL
    (preparing it on the connection first if needed) and as itself elsewhere."""

    enabled = True  # process-wide: False once a pooler was detected

    def __init__(self, name: str, select: sa.Select[Any]) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain SQL name: {name!r}")
        self.name = name
        self.select = select
        self._prepare_sql: str | None = None
        self._constants: dict[str, Any] = {}
        self._execute: Any = None
        self._execute_driver_sql = ""
        # Attribute access by column name, as on SQLAlchemy's Row.
        self._row = namedtuple("Row", [c.key for c in select.selected_columns])  # type: ignore[misc]

    def rows(self, connection: sa.Connection, parameters: dict[str, Any]) -> list[Any]:
        """Every row of the statement, read as cheaply as the connection allows (above)."""
        prepared = connection.connection.info.get(_INFO_KEY)
        if (
            connection.dialect.name != "postgresql"
            or not PreparedSelect.enabled
            or prepared is None
            or self.name not in prepared
            or connection.dialect.paramstyle != "pyformat"
        ):
            return list(self.execute(connection, parameters).all())
        driver_connection = connection.connection.dbapi_connection
        try:
            cursor = driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(self._execute_driver_sql, parameters)
                found = cursor.fetchall()
            finally:
                cursor.close()
        except connection.dialect.loaded_dbapi.Error:
            return list(self.execute(connection, parameters).all())
        for observe in DIRECT_EXECUTE_OBSERVERS:
            observe(connection.engine)
        return [self._row(*values) for values in found]

    def execute(self, connection: sa.Connection, parameters: dict[str, Any]) -> sa.Result[Any]:
        if connection.dialect.name != "postgresql" or not PreparedSelect.enabled:
            return connection.execute(self.select, parameters)
        prepared = connection.connection.info.setdefault(_INFO_KEY, set())
        try:
            if self.name not in prepared:
                connection.exec_driver_sql(self._prepare_text(connection), self._constants)
                prepared.add(self.name)
            return connection.execute(self._execute, parameters)
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) not in _POOLER_SQLSTATES:
                raise
            PreparedSelect.enabled = False
            _logger.warning(
                "prepared statements do not stay on their connection (a pooler in transaction "
                "mode?); the auth lookups run unprepared from now on: %s",
                str(exc.orig).strip().splitlines()[0],
            )
            return connection.execute(self.select, parameters)

    def _prepare_text(self, connection: sa.Connection) -> str:
        if self._prepare_sql is None:
            compiled = self.select.compile(dialect=connection.dialect)
            runtime = [name for name, value in compiled.params.items() if value is None]
            self._constants = {k: v for k, v in compiled.params.items() if k not in runtime}
            text = compiled.string
            for position, name in enumerate(runtime, start=1):
                # The driver's pyformat placeholder becomes PREPARE's positional one; the
                # constants stay placeholders that exec_driver_sql fills in.
                text = text.replace(f"%({name})s", f"${position}")
            self._prepare_sql = f"PREPARE {self.name} AS {text}"
            arguments = ", ".join(f":{name}" for name in runtime)
            self._execute = sa.text(f"EXECUTE {self.name}({arguments})").columns(
                *self.select.selected_columns
            )
            placeholders = ", ".join(f"%({name})s" for name in runtime)
            self._execute_driver_sql = f"EXECUTE {self.name}({placeholders})"
        return self._prepare_sql
