"""The fast path's reads: a user's role grants (read with the credentials, through
``with_grants``, or alone in one statement), and a run's experiment.

MLflow resolves a permission with ``store.get_user`` and ``store.list_grants``, each in its own
session (pre-ping, BEGIN, SELECT, ROLLBACK), and learns a run's experiment by loading the whole
run (seven statements). Here each is one indexed SELECT on an AUTOCOMMIT connection without
pre-ping; ``AuthDatabase.run`` retries once on a dead pooled connection and otherwise raises
``AuthDatabaseUnavailable``, which the caller turns into a 503 (fail closed).

Direct user grants are rows of a per-user synthetic role in MLflow's schema, so "user grant,
role grants" are both ``role_permissions`` rows reached through ``user_role_assignments``; the
default permission is applied by the caller, from MLflow's own fold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:  # auth_db reads the grants with the credentials, through with_grants
    from mlflow_stack.auth.auth_db import AuthDatabase

# mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME (selfcheck compares them): the workspace
# whose grants count while workspaces are off, the only case the fast path answers.
DEFAULT_WORKSPACE = "default"

_meta = sa.MetaData()
# Read-only views of MLflow's tables (mlflow/server/auth/db/models.py, mlflow/store/db).
_users = sa.Table("users", _meta, sa.Column("id"), sa.Column("username"))
_roles = sa.Table("roles", _meta, sa.Column("id"), sa.Column("workspace"))
_assignments = sa.Table("user_role_assignments", _meta, sa.Column("user_id"), sa.Column("role_id"))
_grants = sa.Table(
    "role_permissions",
    _meta,
    sa.Column("role_id"),
    sa.Column("resource_type"),
    sa.Column("resource_pattern"),
    sa.Column("permission"),
)
_runs = sa.Table("runs", sa.MetaData(), sa.Column("run_uuid"), sa.Column("experiment_id"))

# Outer joins keep the user's row when it has no grant, so "no such user" (no row at all) and
# "no grants" (one row of NULLs) are told apart in the same round trip. Every resource type is
# loaded: MLflow's fold filters by type itself, so a superset gives the same answer.
_SELECT_GRANTS = (
    sa.select(
        _users.c.id,
        _grants.c.resource_type,
        _grants.c.resource_pattern,
        _grants.c.permission,
    )
    .select_from(_users)
    .outerjoin(_assignments, _assignments.c.user_id == _users.c.id)
    .outerjoin(
        _roles,
        sa.and_(_roles.c.id == _assignments.c.role_id, _roles.c.workspace == sa.bindparam("ws")),
    )
    .outerjoin(_grants, _grants.c.role_id == _roles.c.id)
    .where(_users.c.username == sa.bindparam("username"))
)
_SELECT_RUN_EXPERIMENT = sa.select(_runs.c.experiment_id).where(
    _runs.c.run_uuid == sa.bindparam("run_id")
)


@dataclass(frozen=True)
class GrantRow:
    """Duck-typed like MLflow's ``RoleGrantRow``, which its pure fold functions read."""

    resource_type: str
    resource_pattern: str
    permission: str


def with_grants(query: sa.Select[Any], user_id: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """``query`` (over the users table) joined to that user's grants in the default workspace:
    one row per grant, or one row of NULL grant columns without any. The hook reads a user's
    credentials this way, so that a non-admin's permission check needs no statement of its own."""
    return (
        query.add_columns(_grants.c.resource_type, _grants.c.resource_pattern, _grants.c.permission)
        .outerjoin(_assignments, _assignments.c.user_id == user_id)
        .outerjoin(
            _roles,
            sa.and_(_roles.c.id == _assignments.c.role_id, _roles.c.workspace == DEFAULT_WORKSPACE),
        )
        .outerjoin(_grants, _grants.c.role_id == _roles.c.id)
    )


def grants_of(rows: Iterable[Any]) -> tuple[GrantRow, ...]:
    """The grants among rows read through ``with_grants`` (or ``_SELECT_GRANTS``)."""
    return tuple(
        GrantRow(row.resource_type, row.resource_pattern, row.permission)
        for row in rows
        if row.resource_type is not None
    )


def user_grants(
    database: AuthDatabase,
    username: str,
    workspace: str,
    read: tuple[GrantRow, ...] | None = None,
) -> list[GrantRow] | None:
    """The user's grants in ``workspace`` (direct and through roles); None: no such user.
    ``read``: the grants this request's credential read already brought
    (``hook.grants_of_this_request``), taken instead of a statement."""
    if read is not None:
        return list(read)
    rows = database.run(
        lambda c: c.execute(_SELECT_GRANTS, {"username": username, "ws": workspace}).all()
    )
    if not rows:
        return None
    return list(grants_of(rows))


def run_experiment_id(database: AuthDatabase, run_id: str) -> str | None:
    """The experiment a run belongs to (the primary-key index), or None for an unknown run."""
    row = database.run(lambda c: c.execute(_SELECT_RUN_EXPERIMENT, {"run_id": run_id}).first())
    return None if row is None else str(row.experiment_id)
