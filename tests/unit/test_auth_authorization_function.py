"""The authorization_function, in a bare Flask request context over an SQLite auth DB."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import flask
import pytest
import sqlalchemy as sa
from werkzeug.datastructures import Authorization
from werkzeug.security import generate_password_hash

from mlflow_stack.auth import auth_db, hook, password_cache, tokens
from mlflow_stack.auth.auth_db import AuthDatabase
from mlflow_stack.auth.engine import create_auth_engine
from mlflow_stack.auth.password_cache import VerifiedPasswords
from mlflow_stack.auth.schema import TOKENS_TABLE_NAME, access_tokens, users
from tests.auth_tables import create_auth_tables

FAST = "pbkdf2:sha256:1000"
SEARCH = "/api/2.0/mlflow/experiments/search"


class Harness:
    """A Flask app plus direct access to the auth database behind the hook."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_auth_engine(url)
        self.app = flask.Flask("hook-test")
        self.statements: list[str] = []
        self.hash_checks: list[str] = []

    def add_user(self, username: str, password: str, is_admin: bool = False) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                users.insert().values(
                    username=username,
                    password_hash=generate_password_hash(password, method=FAST),
                    is_admin=is_admin,
                )
            )

    def set_password(self, username: str, password: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                users.update()
                .where(users.c.username == username)
                .values(password_hash=generate_password_hash(password, method=FAST))
            )

    def delete_user(self, username: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(users.delete().where(users.c.username == username))

    def call(self, headers: dict | None = None, path: str = SEARCH, times: int = 1):
        """Call the hook ``times`` times within one request, as MLflow does."""
        with self.app.test_request_context(path, headers=headers or {}):
            results = [hook.authenticate() for _ in range(times)]
            return results[-1], flask.request.authorization


def basic(username: str, password: str) -> dict:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_401(result) -> None:
    assert isinstance(result, flask.Response), result
    assert result.status_code == 401
    assert result.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'


@pytest.fixture
def harness(tmp_path, monkeypatch) -> Harness:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    h = Harness(url)
    create_auth_tables(h.engine)
    h.add_user("alice", "alice-password")
    h.add_user("admin", "admin-password", is_admin=True)

    database = AuthDatabase(url)
    monkeypatch.setattr(hook, "_database", database)
    monkeypatch.setattr(hook, "_passwords", VerifiedPasswords())
    # An unknown user's equivalent time is spent on a hash of the users' method (FAST here, as
    # werkzeug's default is in production): test_auth_password_cache times it for real.
    monkeypatch.setattr(
        password_cache,
        "generate_password_hash",
        lambda password: generate_password_hash(password, method=FAST),
    )

    # Count what the hook itself sends to the database, and its slow hash checks.
    sa.event.listen(
        database.engine(),
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: h.statements.append(statement),
    )
    real_check = password_cache.check_password_hash

    def counting_check(stored_hash, password):
        h.hash_checks.append(password)
        return real_check(stored_hash, password)

    monkeypatch.setattr(password_cache, "check_password_hash", counting_check)
    yield h
    database.engine().dispose()
    h.engine.dispose()


# --- bearer tokens -----------------------------------------------------------------------


def test_bearer_token_acts_as_its_owner(harness):
    _, token = tokens.create_token(harness.engine, "alice")
    result, request_authorization = harness.call(bearer(token))

    assert isinstance(result, Authorization)
    assert result.username == "alice"
    assert result.password is None
    assert token not in repr(vars(result))
    # MLflow handlers that read request.authorization directly see the owner too.
    assert request_authorization.username == "alice"


def test_bearer_scheme_is_case_insensitive(harness):
    _, token = tokens.create_token(harness.engine, "alice")
    result, _ = harness.call({"Authorization": f"bearer {token}"})
    assert result.username == "alice"


def test_one_lookup_per_request_however_often_mlflow_asks(harness):
    _, token = tokens.create_token(harness.engine, "alice")
    harness.call(bearer(token))  # first use: creates nothing, bumps last_used_at
    harness.statements.clear()

    result, _ = harness.call(bearer(token), times=4)
    assert result.username == "alice"
    assert len(harness.statements) == 1
    assert harness.statements[0].lstrip().upper().startswith("SELECT")


def test_each_request_is_authenticated_afresh(harness):
    _, token = tokens.create_token(harness.engine, "alice")
    with harness.app.app_context():  # one app context (one g) shared by two requests
        with harness.app.test_request_context(SEARCH, headers=bearer(token)):
            assert hook.authenticate().username == "alice"
        with harness.app.test_request_context(SEARCH):
            assert_401(hook.authenticate())


@pytest.mark.parametrize(
    "value",
    ["", "mlst_", "mlst_unknown-token", "ghp_foreign", "mlst_" + "a" * 200, "two words"],
)
def test_unknown_or_foreign_bearer_is_401(harness, value):
    tokens.create_token(harness.engine, "alice")
    result, _ = harness.call({"Authorization": f"Bearer {value}"})
    assert_401(result)


def test_revoked_token_is_refused_from_the_next_request(harness):
    record, token = tokens.create_token(harness.engine, "alice")
    assert harness.call(bearer(token))[0].username == "alice"
    tokens.revoke_token(harness.url, record.id)
    assert_401(harness.call(bearer(token))[0])


def test_expired_token_is_refused(harness):
    record, token = tokens.create_token(harness.engine, "alice", expires_at=timedelta(hours=1))
    assert harness.call(bearer(token))[0].username == "alice"
    with harness.engine.begin() as conn:
        conn.execute(
            access_tokens.update()
            .where(access_tokens.c.id == record.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert_401(harness.call(bearer(token))[0])


def test_deleted_user_tokens_stop_working(harness):
    _, token = tokens.create_token(harness.engine, "alice")
    harness.delete_user("alice")
    assert_401(harness.call(bearer(token))[0])


def test_password_change_does_not_invalidate_tokens(harness):
    _, token = tokens.create_token(harness.engine, "alice")
    harness.set_password("alice", "a-new-password")
    assert harness.call(bearer(token))[0].username == "alice"


def test_last_used_at_is_written_at_most_once_per_interval(harness, monkeypatch):
    _, token = tokens.create_token(harness.engine, "alice")
    harness.statements.clear()
    for _ in range(5):
        harness.call(bearer(token))
    updates = [s for s in harness.statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1
    [listed] = tokens.list_tokens(harness.engine)
    assert listed.last_used_at is not None

    # Once the interval has passed, the next use writes again.
    monkeypatch.setattr(auth_db, "LAST_USED_WRITE_INTERVAL", timedelta(0))
    harness.statements.clear()
    harness.call(bearer(token))
    assert any(s.lstrip().upper().startswith("UPDATE") for s in harness.statements)


def test_token_table_is_created_on_first_bearer_request(harness):
    assert not sa.inspect(harness.engine).has_table(TOKENS_TABLE_NAME)
    assert_401(harness.call(bearer("mlst_not-created-yet"))[0])
    assert sa.inspect(harness.engine).has_table(TOKENS_TABLE_NAME)


# --- basic auth ----------------------------------------------------------------------------


def test_basic_auth_returns_the_presented_credentials(harness):
    result, _ = harness.call(basic("alice", "alice-password"))
    assert result.type == "basic"
    assert result.username == "alice"
    assert result.password == "alice-password"


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_a_non_ascii_password_works_as_browsers_and_as_the_sdk_send_it(harness, encoding):
    # Browsers send UTF-8; requests (the MLflow SDK) sends Latin-1.
    password = "p%a$s@w:o/r#d'\"; ü ${X}"
    harness.add_user("carol", password)
    encoded = base64.b64encode(f"carol:{password}".encode(encoding)).decode()
    result, seen_by_mlflow = harness.call({"Authorization": f"Basic {encoded}"})
    assert (result.username, result.password) == ("carol", password)
    assert seen_by_mlflow.username == "carol"
    assert_401(harness.call(basic("carol", "p%a$s@w:o/r#d'\"; u ${X}"))[0])


@pytest.mark.parametrize("encoded", ["not base64!", base64.b64encode(b"no-colon").decode(), ""])
def test_malformed_basic_credentials_are_401(harness, encoded):
    assert_401(harness.call({"Authorization": f"Basic {encoded}"})[0])


def test_basic_auth_hashes_once_per_credential_not_per_request(harness):
    for _ in range(3):
        assert harness.call(basic("alice", "alice-password"), times=3)[0].username == "alice"
    assert harness.hash_checks == ["alice-password"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("alice", "wrong"),
        basic("", ""),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": 'Digest username="alice"'},
    ],
)
def test_bad_basic_credentials_are_401(harness, headers):
    assert_401(harness.call(headers)[0])


def test_changed_password_refuses_the_old_one_at_once(harness):
    assert harness.call(basic("alice", "alice-password"))[0].username == "alice"
    harness.set_password("alice", "a-new-password")
    assert_401(harness.call(basic("alice", "alice-password"))[0])
    assert harness.call(basic("alice", "a-new-password"))[0].username == "alice"


def test_deleted_user_basic_auth_is_refused_at_once(harness):
    assert harness.call(basic("alice", "alice-password"))[0].username == "alice"
    harness.delete_user("alice")
    assert_401(harness.call(basic("alice", "alice-password"))[0])


def test_unknown_user_still_pays_for_a_hash_check(harness, monkeypatch):
    burned: list[str] = []
    monkeypatch.setattr(hook._passwords, "burn_equivalent_time", burned.append)
    assert_401(harness.call(basic("nobody", "some-password"))[0])
    assert burned == ["some-password"]


def test_legacy_default_admin_password_is_refused_for_admins_only(harness):
    harness.set_password("admin", "password1234")
    harness.add_user("carol", "password1234")
    assert_401(harness.call(basic("admin", "password1234"))[0])
    assert harness.call(basic("carol", "password1234"))[0].username == "carol"


# --- gateway routes ------------------------------------------------------------------------


def test_gateway_routes_prefer_the_mlflow_header(harness):
    _, token = tokens.create_token(harness.engine, "alice")
    headers = {"X-MLflow-Authorization": f"Bearer {token}", "Authorization": "Bearer sk-provider"}
    result, _ = harness.call(headers, path="/gateway/mlflow/v1/chat/completions")
    assert result.username == "alice"
    # Elsewhere the gateway header means nothing.
    assert_401(harness.call(headers, path=SEARCH)[0])


def test_gateway_falls_back_to_authorization_when_mlflow_header_is_empty(harness):
    headers = {"X-MLflow-Authorization": "", **basic("alice", "alice-password")}
    result, _ = harness.call(headers, path="/gateway/x/mlflow/invocations")
    assert result.username == "alice"


def test_internal_gateway_token_only_on_gateway_routes_for_existing_users(harness, monkeypatch):
    monkeypatch.setenv("_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN", "per-start-secret")
    gateway = "/gateway/x/mlflow/invocations"
    assert harness.call(basic("alice", "per-start-secret"), path=gateway)[0].username == "alice"
    assert_401(harness.call(basic("nobody", "per-start-secret"), path=gateway)[0])
    assert_401(harness.call(basic("alice", "per-start-secret"), path=SEARCH)[0])


def test_static_prefix_is_ignored_when_recognising_gateway_routes(harness, monkeypatch):
    monkeypatch.setenv("_MLFLOW_STATIC_PREFIX", "/mlflow")
    _, token = tokens.create_token(harness.engine, "alice")
    headers = {"X-MLflow-Authorization": f"Bearer {token}", "Authorization": "Bearer sk-x"}
    result, _ = harness.call(headers, path="/mlflow/gateway/x/mlflow/invocations")
    assert result.username == "alice"


# --- failure of the database itself ---------------------------------------------------------


def test_unreachable_database_fails_closed_with_503(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    missing = tmp_path / "no-such-dir" / "auth.db"
    monkeypatch.setattr(hook, "_database", AuthDatabase(f"sqlite:///{missing}"))
    app = flask.Flask("hook-test")
    with (
        app.test_request_context(SEARCH, headers=basic("alice", "pw")),
        pytest.raises(MlflowException) as excinfo,
    ):
        hook.authenticate()
    assert excinfo.value.get_http_status_code() == 503
