"""MLflow's auth tables the project's hook reads, for tests that build an auth database by
hand (SQLite or a bare PostgreSQL) instead of letting MLflow migrate one: `users`, and the
three tables the credential reads join for a user's grants (auth/permissions_sql.py)."""

from __future__ import annotations

import sqlalchemy as sa

from mlflow_stack.auth.schema import users

_grant_tables = sa.MetaData()
sa.Table(
    "roles",
    _grant_tables,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("workspace", sa.String(63)),
)
sa.Table(
    "user_role_assignments",
    _grant_tables,
    sa.Column("user_id", sa.Integer, index=True),
    sa.Column("role_id", sa.Integer),
)
sa.Table(
    "role_permissions",
    _grant_tables,
    sa.Column("role_id", sa.Integer, index=True),
    sa.Column("resource_type", sa.String(64)),
    sa.Column("resource_pattern", sa.String(255)),
    sa.Column("permission", sa.String(32)),
)


def create_auth_tables(engine: sa.Engine) -> None:
    """Create `users` and the grant tables (as MLflow names them) where they are missing."""
    users.create(engine, checkfirst=True)
    _grant_tables.create_all(engine)
