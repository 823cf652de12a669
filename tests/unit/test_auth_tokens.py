"""The token store API against an SQLite auth database in a temp dir."""

from __future__ import annotations

import threading
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from mlflow_stack.auth import tokens
from mlflow_stack.auth.engine import create_auth_engine
from mlflow_stack.auth.schema import TOKENS_TABLE_NAME, access_tokens, ensure_schema, users
from mlflow_stack.auth.token_format import EXPIRED, REVOKED, hash_token
from mlflow_stack.auth.tokens import TokenError
from mlflow_stack.errors import StackError
from tests.auth_tables import create_auth_tables


def _make_auth_db(path) -> str:
    """An auth database shaped like MLflow's as far as we depend on it: a users table."""
    url = f"sqlite:///{path}"
    engine = create_auth_engine(url)
    create_auth_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            users.insert(),
            [
                {"username": "alice", "password_hash": "x", "is_admin": False},
                {"username": "bob", "password_hash": "x", "is_admin": False},
            ],
        )
    engine.dispose()
    return url


@pytest.fixture
def db_url(tmp_path) -> str:
    return _make_auth_db(tmp_path / "auth.db")


@pytest.fixture
def engine(db_url):
    engine = create_auth_engine(db_url)
    yield engine
    engine.dispose()


def _rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(access_tokens))]


def test_create_returns_plaintext_once_and_stores_only_its_hash(engine):
    record, plaintext = tokens.create_token(engine, "alice", name="laptop")

    assert plaintext.startswith("mlst_")
    assert record.username == "alice"
    assert record.name == "laptop"
    assert record.is_active
    assert record.created_at.tzinfo is not None
    [row] = _rows(engine)
    assert row["token_hash"] == hash_token(plaintext)
    assert all(plaintext not in str(value) for value in row.values())


def test_record_type_cannot_carry_a_secret():
    assert {f.name for f in fields(tokens.AccessToken)} == {
        "id",
        "username",
        "name",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }


def test_accepts_a_url_as_well_as_an_engine(db_url):
    record, _ = tokens.create_token(db_url, "bob")
    assert [t.id for t in tokens.list_tokens(db_url)] == [record.id]


def test_unknown_user_is_refused(engine):
    with pytest.raises(TokenError, match="no MLflow user named 'carol'"):
        tokens.create_token(engine, "carol")
    assert _rows(engine) == []


def test_token_error_is_a_stack_error_for_the_cli():
    assert issubclass(TokenError, StackError)


@pytest.mark.parametrize("username", ["", None])
def test_username_is_required(engine, username):
    with pytest.raises(TokenError, match="username is required"):
        tokens.create_token(engine, username)


def test_name_length_is_bounded(engine):
    with pytest.raises(TokenError, match="longer than 255"):
        tokens.create_token(engine, "alice", name="n" * 256)


def test_expiry_as_instant_lifetime_or_naive_utc(engine):
    soon = datetime.now(UTC) + timedelta(hours=1)
    by_instant, _ = tokens.create_token(engine, "alice", expires_at=soon)
    by_lifetime, _ = tokens.create_token(engine, "alice", expires_at=timedelta(days=30))
    naive, _ = tokens.create_token(engine, "alice", expires_at=soon.replace(tzinfo=None))

    assert by_instant.expires_at == soon
    assert naive.expires_at == soon
    assert (
        timedelta(days=29) < by_lifetime.expires_at - by_lifetime.created_at <= timedelta(days=30)
    )
    stored = {t.id: t.expires_at for t in tokens.list_tokens(engine)}
    assert stored[by_instant.id] == soon  # round-trips through SQLite as UTC


@pytest.mark.parametrize(
    "expires_at",
    [datetime.now(UTC) - timedelta(seconds=1), timedelta(seconds=-5), timedelta(0)],
)
def test_expiry_in_the_past_is_refused(engine, expires_at):
    with pytest.raises(TokenError, match="not in the future"):
        tokens.create_token(engine, "alice", expires_at=expires_at)


def test_expiry_of_wrong_type_is_refused(engine):
    with pytest.raises(TokenError, match="datetime, a timedelta or None"):
        tokens.create_token(engine, "alice", expires_at="tomorrow")


def test_list_all_or_per_user_oldest_first(engine):
    a1, _ = tokens.create_token(engine, "alice", name="one")
    b1, _ = tokens.create_token(engine, "bob")
    a2, _ = tokens.create_token(engine, "alice", name="two")

    assert [t.id for t in tokens.list_tokens(engine)] == [a1.id, b1.id, a2.id]
    assert [t.name for t in tokens.list_tokens(engine, "alice")] == ["one", "two"]
    assert tokens.list_tokens(engine, "bob") == [b1]


def test_list_for_unknown_user_is_an_error_not_an_empty_list(engine):
    with pytest.raises(TokenError, match="no MLflow user named 'nobody'"):
        tokens.list_tokens(engine, "nobody")


def test_list_shows_expired_and_revoked_tokens_with_their_state(engine):
    record, _ = tokens.create_token(engine, "alice")
    with engine.begin() as conn:
        conn.execute(access_tokens.update().values(expires_at=datetime(2000, 1, 1, tzinfo=UTC)))
    revoked, _ = tokens.create_token(engine, "alice")
    tokens.revoke_token(engine, revoked.id)

    states = {t.id: t.state for t in tokens.list_tokens(engine)}
    assert states == {record.id: EXPIRED, revoked.id: REVOKED}


def test_revoke_sets_revoked_at_once(engine):
    record, _ = tokens.create_token(engine, "alice")
    first = tokens.revoke_token(engine, record.id)
    again = tokens.revoke_token(engine, record.id)

    assert first.revoked_at is not None
    assert first.state == REVOKED
    assert again.revoked_at == first.revoked_at


def test_revoke_unknown_or_malformed_id(engine):
    with pytest.raises(TokenError, match="no access token with id 42"):
        tokens.revoke_token(engine, 42)
    with pytest.raises(TokenError, match="must be a number"):
        tokens.revoke_token(engine, "abc")


def test_revoke_restricted_to_an_owner(engine):
    record, _ = tokens.create_token(engine, "alice")
    with pytest.raises(TokenError, match=f"no access token with id {record.id}"):
        tokens.revoke_token(engine, record.id, username="bob")
    assert tokens.revoke_token(engine, record.id, username="alice").state == REVOKED


def test_deleting_the_user_deletes_its_tokens(engine):
    tokens.create_token(engine, "alice")
    kept, _ = tokens.create_token(engine, "bob")
    with engine.begin() as conn:
        conn.execute(users.delete().where(users.c.username == "alice"))
    assert [t.id for t in tokens.list_tokens(engine)] == [kept.id]
    assert len(_rows(engine)) == 1


def test_ensure_schema_is_idempotent_and_creates_the_indexes(engine):
    tokens.ensure_schema(engine)
    tokens.ensure_schema(engine)
    inspector = sa.inspect(engine)
    assert inspector.has_table(TOKENS_TABLE_NAME)
    indexed = {tuple(i["column_names"]) for i in inspector.get_indexes(TOKENS_TABLE_NAME)}
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(TOKENS_TABLE_NAME)}
    assert ("user_id",) in indexed
    assert ("token_hash",) in unique | indexed


def test_ensure_schema_from_concurrent_processes_is_safe(db_url):
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker():
        engine = create_auth_engine(db_url)
        try:
            start.wait()
            ensure_schema(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_database_without_mlflow_users_table(tmp_path):
    with pytest.raises(TokenError, match="no 'users' table"):
        tokens.list_tokens(f"sqlite:///{tmp_path / 'empty.db'}")


def test_bad_url_is_a_token_error():
    with pytest.raises(TokenError, match="invalid auth database URL"):
        tokens.list_tokens("nosuchdialect://x")


def test_unreachable_database_message_hides_the_password():
    with pytest.raises(TokenError) as excinfo:
        tokens.list_tokens("postgresql+psycopg2://mlflow:s3cret-pw@127.0.0.1:1/auth")
    message = str(excinfo.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1" in message
    assert "\n" not in message
