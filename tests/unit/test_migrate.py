"""Where the schema step finds its databases: the environment alone, never argv."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from mlflow_stack.container import migrate
from mlflow_stack.errors import StackError
from tests.rendering import HOSTILE_PASSWORDS, render_with


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_auth_uri_comes_from_the_rendered_ini_with_hostile_passwords_intact(
    stack_home, monkeypatch, password
):
    profile = render_with(stack_home, monkeypatch, "ci", MLFLOW_STACK_DB_PASSWORD=password)
    ini = profile.layout.auth_config.read_text()
    uri = migrate.auth_database_uri({migrate.AUTH_CONFIG_TEXT_VARIABLE: ini})
    assert make_url(uri).password == password


def test_auth_uri_from_a_path_and_the_errors(tmp_path):
    ini = tmp_path / "auth_config.ini"
    ini.write_text("[mlflow]\ndatabase_uri = sqlite:///auth.db\n")
    assert migrate.auth_database_uri({migrate.AUTH_CONFIG_PATH_VARIABLE: str(ini)}) == (
        "sqlite:///auth.db"
    )
    with pytest.raises(StackError, match="set MLFLOW_AUTH_CONFIG_PATH"):
        migrate.auth_database_uri({})
    with pytest.raises(StackError, match="cannot read .*: No such file"):
        migrate.auth_database_uri({migrate.AUTH_CONFIG_PATH_VARIABLE: str(tmp_path / "no")})
    ini.write_text("[mlflow]\nadmin_username = admin\n")
    with pytest.raises(StackError, match="no \\[mlflow\\] database_uri"):
        migrate.auth_database_uri({migrate.AUTH_CONFIG_PATH_VARIABLE: str(ini)})
    with pytest.raises(StackError, match="set MLFLOW_BACKEND_STORE_URI"):
        migrate.tracking_database_uri({})


def test_main_reports_an_error_in_one_line(capsys):
    assert migrate.main({}) == 1
    err = capsys.readouterr().err
    assert err.startswith("migrate: error: set MLFLOW_BACKEND_STORE_URI") and err.count("\n") == 1
