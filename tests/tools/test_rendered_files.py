"""Rendered files as the real tools read them: the Compose binary's `config`, compose-lint,
configparser, hadolint. Hostile secrets come out of each exactly as they went in."""

import configparser
import json

import pytest
from sqlalchemy.engine import make_url

from mlflow_stack import render
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.secrets import sendable_in_basic_auth
from mlflow_stack.validate import run_compose_config, validate_profile
from tests.rendering import HOSTILE_PASSWORDS, compose_literal, render_with


@pytest.mark.parametrize("password", [p for p in HOSTILE_PASSWORDS if sendable_in_basic_auth(p)])
def test_admin_password_round_trips_through_the_ini(stack_home, monkeypatch, password):
    profile = render_with(stack_home, monkeypatch, MLFLOW_STACK_ADMIN_PASSWORD=password)
    for name in (StackLayout.AUTH_CONFIG, StackLayout.LOCAL_AUTH_CONFIG):
        parser = configparser.ConfigParser()  # exactly what MLflow's read_auth_config does
        parser.read(profile.state_dir / name)
        assert parser["mlflow"]["admin_password"] == password
    # The copy the container's entry point writes: compose's escaping, then the INI's.
    config = json.loads(run_compose_config(profile.state_dir, "--format", "json"))
    handed_over = config["services"]["mlflow"]["environment"][render.CONTAINER_AUTH_CONFIG_VARIABLE]
    parser = configparser.ConfigParser()
    parser.read_string(compose_literal(handed_over))
    assert parser["mlflow"]["admin_password"] == password


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_db_password_round_trips_through_every_uri(stack_home, monkeypatch, password):
    profile = render_with(stack_home, monkeypatch, MLFLOW_STACK_DB_PASSWORD=password)
    state = profile.state_dir

    config = json.loads(run_compose_config(state, "--format", "json"))
    postgres_env = config["services"]["postgres"]["environment"]
    mlflow_env = config["services"]["mlflow"]["environment"]
    assert compose_literal(postgres_env["POSTGRES_PASSWORD"]) == password

    uris = [compose_literal(mlflow_env["MLFLOW_BACKEND_STORE_URI"])]
    uris.append(parse_env_file(state / StackLayout.LOCAL_MLFLOW_ENV)["MLFLOW_BACKEND_STORE_URI"])
    for name in (StackLayout.AUTH_CONFIG, StackLayout.LOCAL_AUTH_CONFIG):
        parser = configparser.ConfigParser()
        parser.read(state / name)
        uris.append(parser["mlflow"]["database_uri"])
    assert len(uris) == 4
    for uri in uris:
        url = make_url(uri)
        assert url.password == password
        assert url.username == "mlflow"
        assert url.drivername == "postgresql+psycopg2"


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_secret_key_reaches_compose_and_local_env_exactly(stack_home, monkeypatch, password):
    profile = render_with(stack_home, monkeypatch, MLFLOW_STACK_SECRET_KEY=password)
    config = json.loads(run_compose_config(profile.state_dir, "--format", "json"))
    compose_env = config["services"]["mlflow"]["environment"]
    assert compose_literal(compose_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == password
    local_env = parse_env_file(profile.state_dir / StackLayout.LOCAL_MLFLOW_ENV)
    assert local_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == password


def test_compose_file_says_what_the_stack_needs(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "dev")
    config = json.loads(run_compose_config(profile.state_dir, "--format", "json"))
    assert config["name"] == "mlflow-dev"
    postgres, mlflow = config["services"]["postgres"], config["services"]["mlflow"]
    assert postgres["image"].startswith("postgres:18.")
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    assert postgres["ports"][0]["host_ip"] == "127.0.0.1"
    assert any(v["type"] == "volume" and v["source"] == "pgdata" for v in postgres["volumes"])
    assert any(v["target"] == "/docker-entrypoint-initdb.d" for v in postgres["volumes"])
    assert mlflow["command"][:4] == ["mlflow", "server", "--app-name", "mlflow-stack"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["restart"] == "unless-stopped"
    assert "healthcheck" in mlflow
    # The auth config reaches the container's entry point in a variable, with the same bytes
    # as the rendered auth_config.ini, to be written into a tmpfs only the image's user reads.
    content = mlflow["environment"][render.CONTAINER_AUTH_CONFIG_VARIABLE]
    assert compose_literal(content) == (profile.state_dir / StackLayout.AUTH_CONFIG).read_text()
    private = next(t for t in mlflow["tmpfs"] if t.startswith("/mlflow/config:"))
    assert (
        private == f"/mlflow/config:uid={render.CONTAINER_UID},gid={render.CONTAINER_UID},mode=0700"
    )
    assert "configs" not in mlflow and "configs" not in config
    # dev names its containers as setup guides do; other profiles leave naming to compose.
    assert (mlflow["container_name"], postgres["container_name"]) == (
        "mlflow-server",
        "mlflow-postgres",
    )
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == render.CONTAINER_AUTH_CONFIG
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    # The database password never appears in a command line.
    secrets = parse_env_file(profile.state_dir / "secrets.env")
    assert secrets["MLFLOW_STACK_DB_PASSWORD"] not in " ".join(mlflow["command"])
    assert "--workers" in mlflow["command"]
    sql = (profile.state_dir / StackLayout.POSTGRES_INIT_SQL).read_text()
    assert "CREATE DATABASE mlflow_auth OWNER mlflow;" in sql


def test_postgres_is_published_only_where_the_profile_says(stack_home, monkeypatch):
    for name in ("ci", "demo"):
        profile = render_with(stack_home, monkeypatch, name)
        config = json.loads(run_compose_config(profile.state_dir, "--format", "json"))
        assert "ports" not in config["services"]["postgres"]


def test_validate_catches_a_broken_compose_file(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "dev")
    compose_file = profile.state_dir / StackLayout.COMPOSE_FILE
    compose_file.write_text(compose_file.read_text().replace('"mlflow-dev"', '"${UNSET_VAR}"'))
    with pytest.raises(StackError, match="variable is not set|invalid"):
        validate_profile(profile)


def test_validate_catches_a_bad_ini(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "dev")
    ini = profile.state_dir / StackLayout.AUTH_CONFIG
    ini.write_text(ini.read_text().replace("admin_password = ", "admin_password = 100% "))
    with pytest.raises(StackError, match="auth_config.ini is invalid"):
        validate_profile(profile)


def test_validate_runs_compose_lint(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "dev")
    validate_profile(profile)  # every finding is fixed or justified in config/compose-lint.yml
    compose_file = profile.state_dir / StackLayout.COMPOSE_FILE
    text = compose_file.read_text()
    compose_file.write_text(text.replace('"no-new-privileges:true"', '"no-new-privileges:false"'))
    with pytest.raises(StackError, match="compose-lint: docker-compose.yml: CL-0003"):
        validate_profile(profile)
