"""The hook's credential reads as prepared statements, on a real (throwaway) PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from mlflow_stack.auth import prepared, tokens
from mlflow_stack.auth.auth_db import _SELECT_PASSWORD, AuthDatabase
from mlflow_stack.auth.engine import HOOK_APPLICATION_NAME, create_auth_engine
from mlflow_stack.auth.prepared import PreparedSelect
from mlflow_stack.auth.schema import ensure_schema, users
from mlflow_stack.auth.token_format import hash_token
from tests.auth_tables import create_auth_tables
from tests.throwaway_postgres import Postgres

PREPARED = sa.text("SELECT name FROM pg_prepared_statements ORDER BY name")


@pytest.fixture(scope="module")
def auth_url(postgres: Postgres) -> str:
    postgres.create_database("prepared")
    url = postgres.url("prepared")
    setup = create_auth_engine(url)
    create_auth_tables(setup)
    ensure_schema(setup)
    with setup.begin() as conn:
        conn.execute(
            users.insert().values(id=1, username="alice", password_hash="hash-a", is_admin=False)
        )
        conn.exec_driver_sql("INSERT INTO roles (id, workspace) VALUES (1, 'default')")
        conn.exec_driver_sql("INSERT INTO user_role_assignments VALUES (1, 1)")
        conn.exec_driver_sql(
            "INSERT INTO role_permissions VALUES (1, 'experiment', '7', 'EDIT'),"
            " (1, 'registered_model', 'm', 'READ')"
        )
    setup.dispose()
    return url


@pytest.fixture
def database(auth_url: str) -> Iterator[AuthDatabase]:
    database = AuthDatabase(auth_url)
    yield database
    PreparedSelect.enabled = True
    database.engine().dispose()


def _prepared_on_pooled_connection(database: AuthDatabase) -> list[str]:
    # The pool holds one idle connection after a read; this checks that one out again.
    return list(database.run(lambda c: c.execute(PREPARED).scalars().all()))


def test_credential_read_is_prepared_once_per_connection(database):
    first = database.stored_password("alice")
    assert first is not None and first.password_hash == "hash-a" and not first.is_admin
    assert sorted((g.resource_type, g.resource_pattern, g.permission) for g in first.grants) == [
        ("experiment", "7", "EDIT"),
        ("registered_model", "m", "READ"),
    ]
    assert _prepared_on_pooled_connection(database) == ["mlflow_stack_password"]
    assert database.stored_password("alice") == first
    assert database.stored_password("nobody") is None
    assert _prepared_on_pooled_connection(database) == ["mlflow_stack_password"]


def test_a_new_connection_prepares_again(database):
    assert database.stored_password("alice") is not None
    database.engine().dispose()  # every pooled connection closed, as after a restart
    again = database.stored_password("alice")
    assert again is not None and len(again.grants) == 2
    assert _prepared_on_pooled_connection(database) == ["mlflow_stack_password"]


def test_token_read_is_prepared_and_reads_the_same(database, auth_url):
    _, token = tokens.create_token(auth_url, "alice", name="t", expires_at=timedelta(hours=1))
    stored = database.stored_token(hash_token(token))
    assert stored is not None and stored.username == "alice"
    assert stored.expires_at is not None and stored.expires_at.tzinfo is not None
    assert len(stored.grants) == 2
    assert "mlflow_stack_token" in _prepared_on_pooled_connection(database)
    assert database.stored_token(hash_token(token + "x")) is None


def test_a_statement_missing_from_its_connection_turns_preparing_off(database, caplog):
    # What a pooler in transaction mode does: the next EXECUTE lands where nothing was
    # prepared. The read still answers, as text, and says why once.
    assert database.stored_password("alice") is not None
    database.run(lambda c: c.exec_driver_sql("DEALLOCATE ALL"))
    with caplog.at_level(logging.WARNING, logger="mlflow_stack.auth.prepared"):
        answer = database.stored_password("alice")
    assert answer is not None and len(answer.grants) == 2
    assert PreparedSelect.enabled is False
    assert "unprepared" in caplog.text
    assert _prepared_on_pooled_connection(database) == []
    assert database.stored_password("alice") == answer


def test_four_requests_at_once_keep_their_connections(database):
    """A worker serving four requests at once reads with four pooled connections and keeps
    them: an overflow connection is closed when returned, so a smaller pool would open (start a
    backend, authenticate, prepare again) a connection for most requests under that load."""
    engine = database.engine()
    opened: list[object] = []
    sa.event.listen(engine.pool, "connect", lambda *_: opened.append(object()))
    together = threading.Barrier(4)

    def read_while_the_others_hold_theirs(conn: sa.Connection) -> object:
        together.wait(timeout=10)
        return conn.execute(sa.text("SELECT 1")).scalar()

    def four_at_once() -> None:
        readers = [
            threading.Thread(target=database.run, args=(read_while_the_others_hold_theirs,))
            for _ in range(4)
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout=20)

    four_at_once()
    assert len(opened) == 4
    for _ in range(5):
        four_at_once()
    assert len(opened) == 4, f"{len(opened) - 4} connections opened after the first four"


def test_a_read_on_a_prepared_connection_goes_past_sqlalchemy_with_the_same_answer(database):
    """Once prepared on its connection, the credential read is the driver's EXECUTE alone:
    SQLAlchemy executes nothing (its events see no statement) and the rows are the same."""
    first = database.stored_password("alice")  # prepares it on the pooled connection
    executed: list[str] = []
    direct: list[sa.Engine] = []
    engine = database.engine()
    sa.event.listen(engine, "before_cursor_execute", lambda *a: executed.append(a[2]))
    prepared.DIRECT_EXECUTE_OBSERVERS.append(direct.append)
    try:
        again = database.stored_password("alice")
        assert database.stored_password("nobody") is None
    finally:
        prepared.DIRECT_EXECUTE_OBSERVERS.remove(direct.append)
    assert executed == []
    assert direct == [engine, engine]
    assert again == first
    through_sqlalchemy = database.run(
        lambda c: _SELECT_PASSWORD.execute(c, {"username": "alice"}).all()
    )
    direct_rows = database.run(lambda c: _SELECT_PASSWORD.rows(c, {"username": "alice"}))
    assert [tuple(r) for r in direct_rows] == [tuple(r) for r in through_sqlalchemy]
    assert direct_rows[0].password_hash == "hash-a" and direct_rows[0].is_admin is False


def test_a_connection_killed_under_the_direct_read_is_replaced_once(database, auth_url):
    """A backend that died (a restart, an idle timeout) fails the direct EXECUTE; SQLAlchemy
    then sees the dead connection, invalidates it, and the read is retried on a new one."""
    assert database.stored_password("alice") is not None
    killer = create_auth_engine(auth_url)
    with killer.connect() as conn:
        ended = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name LIKE :name AND pid <> pg_backend_pid()"
            ),
            {"name": f"{HOOK_APPLICATION_NAME}%"},
        ).scalar()
    killer.dispose()
    assert ended >= 1
    answer = database.stored_password("alice")
    assert answer is not None and answer.password_hash == "hash-a" and len(answer.grants) == 2
