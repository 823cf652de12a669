"""The tables we add to MLflow's auth database, and their idempotent creation.

Access tokens, single-sign-on identities and browser sessions live next to MLflow's own
``users`` table and reference it: when MLflow deletes a user, the database deletes that user's
tokens and sessions in the same statement (``ON DELETE CASCADE``) and marks its identity as
deleted (``ON DELETE SET NULL``), so nothing of ours can keep a deleted user alive (and MLflow's
delete is never blocked by our keys).
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

TOKENS_TABLE_NAME = "mlflow_stack_access_tokens"

metadata = sa.MetaData()

# A read-only view of MLflow's own table (mlflow/server/auth/db/models.py). Declared
# here only so the foreign key resolves and the queries can join; never created by us.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(255), unique=True),
    sa.Column("password_hash", sa.String(255)),
    sa.Column("is_admin", sa.Boolean),
)

access_tokens = sa.Table(
    TOKENS_TABLE_NAME,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(255), nullable=True),
    # sha256 hex of the token; the plaintext is never stored. The unique constraint is
    # also the index every authenticated request looks tokens up by.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

IDENTITIES_TABLE_NAME = "mlflow_stack_identities"
SESSIONS_TABLE_NAME = "mlflow_stack_sessions"

# An OpenID Provider's user, bound to the MLflow user made for it at first sign-in: by
# (issuer, subject), never by name, so an IdP user called like a local one gets a user of its
# own. When an admin deletes that MLflow user the row stays, its user_id NULL: the identity is
# refused from then on (browser and bearer tokens alike) instead of getting a new user.
identities = sa.Table(
    IDENTITIES_TABLE_NAME,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("issuer", sa.String(512), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("issuer", "subject", name="uq_mlflow_stack_identities_issuer_subject"),
)

# Browser sessions, server-side so that a logout, a deleted user or an expiry holds on every
# worker at once; the cookie carries a random value whose sha256 is the key.
sessions = sa.Table(
    SESSIONS_TABLE_NAME,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_hash", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    # The provider's ID token, sent back as id_token_hint when the user logs out.
    sa.Column("id_token", sa.Text, nullable=True),
)

OUR_TABLES = (access_tokens, identities, sessions)
SQLITE_ATTEMPTS = 5

# Any fixed bigint works; derived from the table name so it is stable and
# unlikely to collide with another application's advisory lock.
_SCHEMA_LOCK_KEY = zlib.crc32(TOKENS_TABLE_NAME.encode()) & 0x7FFFFFFF


class MissingUsersTable(RuntimeError):
    """The database is not (yet) an MLflow auth database."""


def ensure_schema(engine: Engine) -> None:
    """Create our tables and their indexes if missing.

    Idempotent, and safe when several server workers (or the CLI) run it at once: on
    PostgreSQL a session advisory lock serialises the check-then-create; elsewhere a
    lost race ("already exists") is detected by looking again.
    """
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(users.name):
            raise MissingUsersTable(
                "the auth database has no 'users' table; start MLflow with "
                "--app-name basic-auth once so it creates its schema"
            )
        if conn.dialect.name == "postgresql":
            # Session-level lock (not xact): the hook's engine runs in AUTOCOMMIT mode.
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            try:
                _create_missing(conn)
                conn.commit()
            except BaseException:
                # Leave the failed transaction first, or the unlock below would fail too
                # and the lock would stay held on a pooled connection.
                conn.rollback()
                raise
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK_KEY})
                conn.commit()
        else:
            # Another process may be creating the same tables (SQLite has no advisory lock):
            # a lost race ("already exists") is retried, and checkfirst then skips its work.
            for attempt in range(1, SQLITE_ATTEMPTS + 1):
                try:
                    _create_missing(conn)
                    conn.commit()
                    return
                except sa.exc.DBAPIError:
                    conn.rollback()
                    if attempt == SQLITE_ATTEMPTS:
                        raise


def _create_missing(conn: Connection) -> None:
    for table in OUR_TABLES:
        table.create(conn, checkfirst=True)
        # The table may predate an index (non-transactional DDL interrupted midway).
        for index in table.indexes:
            index.create(conn, checkfirst=True)
