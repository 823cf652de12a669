"""users/perms/tokens input checks and the REST client's error mapping: no stack, milliseconds."""

from __future__ import annotations

import io
import json
import socket
from datetime import timedelta

import pytest
import requests

from mlflow_stack.cli import inputs, lifecycle, perms, prompts, users
from mlflow_stack.client import AdminClient, MlflowApiError, error_for
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile
from mlflow_stack.secrets import check_password

# --- --expires ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("45m", timedelta(minutes=45)),
        (" 1d ", timedelta(days=1)),
        ("3650d", timedelta(days=3650)),
        (None, None),
        ("", None),
    ],
)
def test_expires_parses_days_hours_minutes(text, expected):
    assert inputs.parse_expires(text) == expected


@pytest.mark.parametrize("text", ["0d", "30", "d", "1.5h", "2w", "-1d", "1d2h", "30 d", "3651d"])
def test_expires_refuses_anything_else(text):
    with pytest.raises(StackError, match="--expires"):
        inputs.parse_expires(text)


# --- usernames, passwords, levels --------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "a.b-c_d@example.org", "A1", "x" * 64])
def test_usernames_accepted(name):
    assert inputs.check_username(name) == name


@pytest.mark.parametrize("name", ["", "-alice", "al ice", "al'ice", "a;b", "x" * 65, "ä"])
def test_usernames_refused(name):
    with pytest.raises(StackError):
        inputs.check_username(name)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("a" * 11, "at least 12"),
        ("a" * 1025, "at most 1024"),
        ("long-enough\npassword", "newline"),
        ("long-enough\rpassword", "newline"),
        ("long-enough\x00password", "NUL"),
    ],
)
def test_passwords_refused(password, message):
    with pytest.raises(StackError, match=message):
        check_password(password)


def test_passwords_accepted_at_the_limits():
    for password in ("a" * 12, "%$@/:#'\" ${X} ü" + "a" * 10, "a" * 1024):
        assert check_password(password) == password


@pytest.mark.parametrize(
    ("level", "stored"),
    [("READ", "READ"), ("edit", "EDIT"), ("Manage", "MANAGE"), ("NO_PERMISSIONS", "DENY")],
)
def test_levels_map_to_what_mlflow_stores(level, stored):
    assert inputs.parse_level(level) == stored


@pytest.mark.parametrize("level", ["WRITE", "", None, "ADMIN"])
def test_unknown_levels_refused(level):
    with pytest.raises(StackError, match="--level"):
        inputs.parse_level(level)


# --- where a new password comes from -----------------------------------------------------------


def test_password_from_stdin_drops_one_trailing_newline():
    stdin = io.StringIO("a-long-enough-password\n")
    assert prompts.read_new_password(True, stdin=stdin) == ("a-long-enough-password", False)


def test_password_from_stdin_is_checked():
    with pytest.raises(StackError, match="newline"):
        prompts.read_new_password(True, stdin=io.StringIO("two\nlines-of-password\n"))
    with pytest.raises(StackError, match="nothing on stdin"):
        prompts.read_new_password(True, stdin=io.StringIO(""))


def test_password_is_generated_without_a_terminal():
    first, generated = prompts.read_new_password(False, stdin=io.StringIO(""), interactive=False)
    second, _ = prompts.read_new_password(False, stdin=io.StringIO(""), interactive=False)
    assert generated and first != second
    assert check_password(first) == first


def test_password_prompted_twice_must_match(monkeypatch):
    answers = iter(["a-long-enough-password", "another-password!"])
    monkeypatch.setattr(prompts.getpass, "getpass", lambda *a, **k: next(answers))
    with pytest.raises(StackError, match="do not match"):
        prompts.read_new_password(False, interactive=True)


# --- env --token -------------------------------------------------------------------------------


def test_env_token_prints_uri_token_its_owner_and_no_password(stack_home, monkeypatch, capsys):
    token = "mlst_" + "A" * 43
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    monkeypatch.setattr(
        "mlflow_stack.cli.tokens.token_owner", lambda profile, t: asked.append(t) or "al ice"
    )
    lifecycle.env("dev", token=True)
    lines = capsys.readouterr().out.splitlines()
    assert asked == [token]
    assert lines == [
        "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000",
        f"export MLFLOW_TRACKING_TOKEN={token}",
        "export MLFLOW_TRACKING_USERNAME='al ice'",
        "unset MLFLOW_TRACKING_PASSWORD",
    ]


@pytest.mark.parametrize("stdin", ["", "not-a-token\n", "mlst_a b\n", "mlst_\n"])
def test_env_token_refuses_what_is_not_a_token(stack_home, monkeypatch, stdin):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(StackError, match="no access token on stdin"):
        lifecycle.env("dev", token=True)


def test_env_token_and_user_exclude_each_other(stack_home):
    with pytest.raises(StackError, match="exclude each other"):
        lifecycle.env("dev", user="alice", token=True)


# --- refusals that need no server --------------------------------------------------------------


def test_the_profiles_admin_is_neither_deleted_nor_demoted(stack_home):
    with pytest.raises(StackError, match="it is the admin of profile dev"):
        users.delete("dev", "admin", yes=True)
    with pytest.raises(StackError, match="need it to stay admin"):
        users.admin("dev", "admin", grant=False, revoke=True)
    with pytest.raises(StackError, match="exactly one of --grant and --revoke"):
        users.admin("dev", "bob", grant=True, revoke=True)


def test_grant_needs_exactly_one_resource(stack_home):
    with pytest.raises(StackError, match="exactly one of --experiment"):
        perms.grant("dev", "bob", "READ")
    with pytest.raises(StackError, match="exactly one of --experiment"):
        perms.grant("dev", "bob", "READ", experiment="e", model="m")


# --- the client's error mapping ----------------------------------------------------------------


def _response(status: int, body: str | dict, method: str = "POST") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.url = "http://127.0.0.1:5000/api/2.0/mlflow/users/create?x=1"
    response._content = (json.dumps(body) if isinstance(body, dict) else body).encode()
    response.request = requests.Request(method, response.url).prepare()
    return response


def _mapped(status, body, **kwargs) -> StackError:
    return error_for(_response(status, body), profile_name="dev", username="admin", **kwargs)


def test_401_names_the_admin_and_where_the_password_comes_from():
    error = _mapped(401, "You are not authenticated.", credentials_hint="check secrets.env")
    assert str(error) == (
        "wrong admin credentials for admin at http://127.0.0.1:5000: check secrets.env"
    )


def test_403_says_the_tasks_need_an_admin():
    error = _mapped(403, "Permission denied")
    assert "refused admin (403 permission denied) for POST /api/2.0/mlflow/users/create" in str(
        error
    )
    assert isinstance(error, MlflowApiError) and error.status == 403


def test_mlflow_errors_keep_their_code_and_only_the_first_line():
    body = {
        "error_code": "RESOURCE_ALREADY_EXISTS",
        "message": "User (username=a) already exists. Error: (psycopg2...)\n[SQL: INSERT ...]",
    }
    error = _mapped(400, body)
    assert isinstance(error, MlflowApiError)
    assert error.error_code == "RESOURCE_ALREADY_EXISTS"
    assert "\n" not in str(error) and "SQL" not in str(error)
    assert "RESOURCE_ALREADY_EXISTS: User (username=a) already exists." in str(error)


def test_plain_text_errors_are_one_line():
    error = _mapped(500, "<html>\n<h1>Internal Server Error</h1>\n</html>")
    assert "\n" not in str(error) and "500" in str(error)


def test_connection_refused_names_invoke_up(stack_home, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Bound but never listening: a connection is refused at once.
    monkeypatch.setenv("MLFLOW_STACK_MLFLOW_PORT", str(port))
    profile = load_profile("dev")
    with (
        AdminClient(profile, "admin", "admin_password") as client,
        pytest.raises(StackError, match=r"not running at http://127\.0\.0\.1:\d+: run `invoke up"),
    ):
        client.list_users()
