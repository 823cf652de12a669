"""Single sign-on in the auth database: identities bound to MLflow users, browser sessions.

An identity is an OpenID Provider's (issuer, subject). At its first sign-in it gets an MLflow
user of its own, named after the provider's username where that name is free, never a local
user's name: an IdP user called `admin` does not become the profile's admin. The user has no
password (an empty hash, which basic auth always refuses).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from mlflow_stack.auth.auth_db import AuthDatabase, AuthDatabaseUnavailable
from mlflow_stack.auth.schema import identities, sessions, users
from mlflow_stack.auth.token_format import as_utc

SESSION_BYTES = 32
# What MLflow and the project's tasks accept as a username.
_NOT_IN_USERNAME = re.compile(r"[^A-Za-z0-9_.@-]+")
_MAX_NAME_TRIES = 50


@dataclass(frozen=True)
class SessionUser:
    username: str
    is_admin: bool
    id_token: str | None


_SELECT_SESSION = (
    sa.select(users.c.username, users.c.is_admin, sessions.c.expires_at, sessions.c.id_token)
    .join(users, users.c.id == sessions.c.user_id)
    .where(sessions.c.session_hash == sa.bindparam("session_hash"))
)
# An outer join: an identity whose user was deleted is a row with no user.
_SELECT_IDENTITY = (
    sa.select(users.c.id, users.c.username, users.c.is_admin)
    .select_from(identities.outerjoin(users, identities.c.user_id == users.c.id))
    .where(identities.c.issuer == sa.bindparam("issuer"))
    .where(identities.c.subject == sa.bindparam("subject"))
)


class IdentityDeleted(Exception):
    """An admin deleted the MLflow user of this identity: it stays refused."""


def session_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class SsoStore:
    def __init__(self, database: AuthDatabase) -> None:
        self._database = database

    # --- identities --------------------------------------------------------------------

    def bind_identity(
        self,
        issuer: str,
        subject: str,
        preferred_username: str,
        now: datetime,
        *,
        reserved: frozenset[str],
        make_admin: bool | None = None,
    ) -> tuple[str, bool]:
        """The MLflow user (name, is_admin) bound to this identity, made at its first use.

        `make_admin` True/False grants or revokes admin (None leaves it); `reserved` are
        names an identity never gets (the profile's admin).
        """
        if not self._database.tables_ready():
            raise AuthDatabaseUnavailable("the single-sign-on tables are unavailable")
        for _attempt in (1, 2):
            try:
                return self._database.run(
                    lambda conn: self._bind(
                        conn, issuer, subject, preferred_username, now, reserved, make_admin
                    )
                )
            except AuthDatabaseUnavailable as exc:
                # Two workers binding the same new identity at once: one insert loses the
                # race on the unique (issuer, subject); the second try reads the winner's.
                if "unique" not in str(exc).lower() and "duplicate" not in str(exc).lower():
                    raise
        raise AuthDatabaseUnavailable("could not bind the identity")

    def identity_user(self, issuer: str, subject: str) -> tuple[str, bool] | None:
        """(username, is_admin) of the MLflow user bound to this identity, read only."""
        if not self._database.tables_ready():
            return None
        key = {"issuer": issuer, "subject": subject}
        row = self._database.run(lambda conn: conn.execute(_SELECT_IDENTITY, key).first())
        if row is None:
            return None
        if row.id is None:
            raise IdentityDeleted(subject)
        return row.username, bool(row.is_admin)

    def _bind(
        self,
        conn: sa.Connection,
        issuer: str,
        subject: str,
        preferred: str,
        now: datetime,
        reserved: frozenset[str],
        make_admin: bool | None,
    ) -> tuple[str, bool]:
        # The hook's engine autocommits; the user and its identity are made in one transaction.
        level = "READ COMMITTED" if conn.dialect.name == "postgresql" else "SERIALIZABLE"
        conn = conn.execution_options(isolation_level=level)
        with conn.begin():
            row = conn.execute(_SELECT_IDENTITY, {"issuer": issuer, "subject": subject}).first()
            if row is None:
                username = self._free_name(conn, preferred, reserved)
                user_id = conn.execute(
                    users.insert()
                    .values(username=username, password_hash="", is_admin=bool(make_admin))
                    .returning(users.c.id)
                ).scalar_one()
                conn.execute(
                    identities.insert().values(
                        issuer=issuer,
                        subject=subject,
                        user_id=user_id,
                        created_at=now,
                        last_login_at=now,
                    )
                )
                return username, bool(make_admin)
            if row.id is None:
                raise IdentityDeleted(subject)
            user_id, username, is_admin = row.id, row.username, bool(row.is_admin)
            if make_admin is not None and make_admin != is_admin:
                conn.execute(
                    users.update().where(users.c.id == user_id).values(is_admin=make_admin)
                )
                is_admin = make_admin
            conn.execute(
                identities.update()
                .where(identities.c.issuer == issuer, identities.c.subject == subject)
                .values(last_login_at=now)
            )
            return username, is_admin

    @staticmethod
    def _free_name(conn: sa.Connection, preferred: str, reserved: frozenset[str]) -> str:
        base = _NOT_IN_USERNAME.sub("-", preferred).strip("-.")[:48] or "sso-user"
        for number in range(1, _MAX_NAME_TRIES + 1):
            suffix = "" if number == 1 else ("@sso" if number == 2 else f"@sso{number - 1}")
            candidate = base + suffix
            if candidate in reserved:
                continue
            taken = conn.execute(sa.select(users.c.id).where(users.c.username == candidate)).first()
            if taken is None:
                return candidate
        raise AuthDatabaseUnavailable(f"no free username for {preferred!r}")

    # --- sessions ------------------------------------------------------------------------

    def create_session(
        self, username: str, lifetime: timedelta, now: datetime, id_token: str | None
    ) -> str:
        """A new session for `username`; returns the cookie value (only its hash is kept)."""
        if not self._database.tables_ready():
            raise AuthDatabaseUnavailable("the single-sign-on tables are unavailable")
        value = secrets.token_urlsafe(SESSION_BYTES)

        def insert(conn: sa.Connection) -> None:
            user_id = conn.execute(
                sa.select(users.c.id).where(users.c.username == username)
            ).scalar_one()
            conn.execute(
                sessions.insert().values(
                    session_hash=session_hash(value),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + lifetime,
                    id_token=id_token,
                )
            )

        self._database.run(insert)
        return value

    def session_user(self, value: str, now: datetime) -> SessionUser | None:
        """The live session's user, or None (unknown, expired, or its user was deleted)."""
        if not self._database.tables_ready():
            return None
        row = self._database.run(
            lambda conn: conn.execute(
                _SELECT_SESSION, {"session_hash": session_hash(value)}
            ).first()
        )
        if row is None:
            return None
        expires_at = as_utc(row.expires_at)
        if expires_at is None or expires_at <= now:
            return None
        return SessionUser(row.username, bool(row.is_admin), row.id_token)

    def end_session(self, value: str) -> None:
        self._database.run(
            lambda conn: conn.execute(
                sessions.delete().where(sessions.c.session_hash == session_hash(value))
            )
        )

    def user(self, username: str) -> tuple[int, bool] | None:
        """(id, is_admin) of an MLflow user, or None."""
        query = sa.select(users.c.id, users.c.is_admin).where(users.c.username == username)
        row = self._database.run(lambda conn: conn.execute(query).first())
        return None if row is None else (int(row.id), bool(row.is_admin))
