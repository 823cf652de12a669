"""Personal access token store: create, list and revoke tokens in MLflow's auth database.

Every function takes an SQLAlchemy ``Engine`` or a database URL (the ``database_uri`` of
auth_config.ini). Only the sha256 of a token is stored: ``create_token`` returns the
plaintext exactly once, and nothing here can return it again. Failures a user can act on
raise ``TokenError`` with a one-line message, never a database traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from mlflow_stack.auth import schema
from mlflow_stack.auth.engine import create_auth_engine
from mlflow_stack.auth.schema import access_tokens, users
from mlflow_stack.auth.token_format import (
    ACTIVE,
    as_utc,
    generate_token,
    hash_token,
    token_state,
    utcnow,
)
from mlflow_stack.errors import StackError

MAX_NAME_LENGTH = 255

EngineOrUrl = Engine | str | URL


class TokenError(StackError):
    """A token operation could not be done; the message says why, for the user."""


@dataclass(frozen=True)
class AccessToken:
    """A stored token as the user may see it: no plaintext, no hash."""

    id: int
    username: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def state(self) -> str:
        """``active``, ``revoked`` or ``expired``, as of now."""
        return token_state(self.expires_at, self.revoked_at)

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE


def ensure_schema(engine: EngineOrUrl) -> None:
    """Create the token table if it is missing. Idempotent; safe with concurrent workers."""
    with _engine(engine) as eng:
        _ensure_schema(eng)


def create_token(
    engine: EngineOrUrl,
    username: str,
    name: str | None = None,
    expires_at: datetime | timedelta | None = None,
) -> tuple[AccessToken, str]:
    """Create a token acting as ``username``; returns ``(record, plaintext_token)``.

    ``expires_at`` is an instant (naive datetimes are taken as UTC) or a lifetime from
    now; ``None`` means the token does not expire. The plaintext is not recoverable later.
    """
    if not isinstance(username, str) or not username:
        raise TokenError("a username is required to create an access token")
    if name is not None and len(name) > MAX_NAME_LENGTH:
        raise TokenError(f"token name is longer than {MAX_NAME_LENGTH} characters")
    now = utcnow()
    expires_at = _resolve_expiry(expires_at, now)

    plaintext = generate_token()
    with _engine(engine) as eng:
        _ensure_schema(eng)
        with _database_errors(eng), eng.begin() as conn:
            user_id = conn.execute(
                sa.select(users.c.id).where(users.c.username == username)
            ).scalar_one_or_none()
            if user_id is None:
                raise TokenError(f"no MLflow user named {username!r}")
            inserted = conn.execute(
                access_tokens.insert().values(
                    user_id=user_id,
                    name=name,
                    token_hash=hash_token(plaintext),
                    created_at=now,
                    expires_at=expires_at,
                )
            ).inserted_primary_key
            # Always set after an INSERT of one row with an autoincrement key.
            if inserted is None:
                raise TokenError("the auth database returned no id for the new token")
            token_id = int(inserted[0])
    record = AccessToken(
        id=token_id,
        username=username,
        name=name,
        created_at=now,
        expires_at=expires_at,
        last_used_at=None,
        revoked_at=None,
    )
    return record, plaintext


def list_tokens(engine: EngineOrUrl, username: str | None = None) -> list[AccessToken]:
    """All tokens (revoked and expired included), oldest first; only ``username``'s if given."""
    with _engine(engine) as eng:
        _ensure_schema(eng)
        with _database_errors(eng), eng.connect() as conn:
            query = _select_records().order_by(access_tokens.c.id)
            if username is not None:
                if _user_id(conn, username) is None:
                    raise TokenError(f"no MLflow user named {username!r}")
                query = query.where(users.c.username == username)
            return [_record(row) for row in conn.execute(query)]


def revoke_token(engine: EngineOrUrl, token_id: int, *, username: str | None = None) -> AccessToken:
    """Revoke a token; it is refused by every server worker from the next request on.

    Revoking an already revoked token is a no-op that returns it unchanged. With
    ``username``, only that user's token may be revoked (for self-service callers).
    """
    try:
        token_id = int(token_id)
    except (TypeError, ValueError):
        raise TokenError(f"access token id must be a number, got {token_id!r}") from None
    with _engine(engine) as eng:
        _ensure_schema(eng)
        with _database_errors(eng), eng.begin() as conn:
            row = conn.execute(_select_records().where(access_tokens.c.id == token_id)).first()
            if row is None or (username is not None and row.username != username):
                raise TokenError(f"no access token with id {token_id}")
            if row.revoked_at is None:
                # The IS NULL guard keeps the first revocation time if two callers race.
                conn.execute(
                    access_tokens.update()
                    .where(access_tokens.c.id == token_id, access_tokens.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
                row = conn.execute(_select_records().where(access_tokens.c.id == token_id)).one()
            return _record(row)


def delete_token(engine: EngineOrUrl, token_id: int) -> None:
    """Remove a token's row for good (revoke keeps it for the record); unknown ids are ignored.

    For tokens that only ever existed for a test run, such as the smoke suite's.
    """
    with _engine(engine) as eng:
        _ensure_schema(eng)
        with _database_errors(eng), eng.begin() as conn:
            conn.execute(access_tokens.delete().where(access_tokens.c.id == int(token_id)))


# --- helpers -------------------------------------------------------------------------


def _resolve_expiry(expires_at: datetime | timedelta | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if isinstance(expires_at, timedelta):
        expires_at = now + expires_at
    elif not isinstance(expires_at, datetime):
        raise TokenError("expires_at must be a datetime, a timedelta or None")
    expires_at = as_utc(expires_at)
    if expires_at <= now:
        raise TokenError(f"expiry {expires_at.isoformat()} is not in the future")
    return expires_at


def _select_records() -> sa.Select[Any]:
    return sa.select(
        access_tokens.c.id,
        users.c.username,
        access_tokens.c.name,
        access_tokens.c.created_at,
        access_tokens.c.expires_at,
        access_tokens.c.last_used_at,
        access_tokens.c.revoked_at,
    ).join(users, users.c.id == access_tokens.c.user_id)


def _record(row: sa.Row[Any]) -> AccessToken:
    return AccessToken(
        id=row.id,
        username=row.username,
        name=row.name,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        last_used_at=as_utc(row.last_used_at),
        revoked_at=as_utc(row.revoked_at),
    )


def _user_id(conn: sa.Connection, username: str) -> int | None:
    return conn.execute(
        sa.select(users.c.id).where(users.c.username == username)
    ).scalar_one_or_none()


def _ensure_schema(engine: Engine) -> None:
    with _database_errors(engine):
        try:
            schema.ensure_schema(engine)
        except schema.MissingUsersTable as exc:
            raise TokenError(f"{_where(engine)}: {exc}") from None


@contextmanager
def _engine(engine_or_url: EngineOrUrl) -> Iterator[Engine]:
    """Use the caller's engine as is; an engine we build from a URL is ours to dispose."""
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    try:
        engine = create_auth_engine(engine_or_url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError) as exc:
        raise TokenError(f"invalid auth database URL: {exc}") from None
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _database_errors(engine: Engine) -> Iterator[None]:
    """Turn driver errors into a TokenError naming the database (password hidden)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise TokenError(f"{_where(engine)}: database error: {detail}") from None


def _where(engine: Engine) -> str:
    return f"auth database {engine.url.render_as_string(hide_password=True)}"
