"""The endpoints object: one derivation of a profile's URLs and database connections, used by
render, the health probes, the psycopg2 connections and the auth database URL."""

from __future__ import annotations

import configparser
import io
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import make_url

from mlflow_stack import health
from mlflow_stack.cli import stack
from mlflow_stack.endpoints import DatabaseEndpoint, Endpoints, database_uri
from mlflow_stack.files import parse_env_file
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.runtime import postgres
from mlflow_stack.secrets import load_secrets

HOSTILE = "p@ss:w/rd%?#&=+ é"


@pytest.fixture
def ci(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_DB_PASSWORD", HOSTILE)
    monkeypatch.setenv("MLFLOW_STACK_MLFLOW_PORT", "5111")
    monkeypatch.setenv("MLFLOW_STACK_POSTGRES_PORT", "5222")
    profile = load_profile("ci")
    render_profile(profile)
    return profile, load_secrets(profile)


def test_the_profiles_addresses(ci):
    profile, _ = ci
    endpoints = Endpoints.of(profile)
    assert endpoints.mlflow_url == f"http://{profile.bind_address}:5111"
    assert endpoints.local_database == DatabaseEndpoint("127.0.0.1", 5222)
    assert endpoints.compose_database == DatabaseEndpoint("postgres", 5432)
    assert str(endpoints.local_database) == "127.0.0.1:5222"
    assert health.mlflow_url(profile) == endpoints.mlflow_url


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])  # noqa: S104
def test_a_wildcard_bind_is_reached_through_loopback(stack_home, monkeypatch, wildcard):
    monkeypatch.setenv("MLFLOW_STACK_BIND_ADDRESS", wildcard)
    monkeypatch.setenv("MLFLOW_STACK_MLFLOW_PORT", "5111")
    assert Endpoints.of(load_profile("ci")).mlflow_url == "http://127.0.0.1:5111"


def test_database_urls_keep_a_hostile_password_intact(ci):
    profile, secrets = ci
    endpoints = Endpoints.of(profile)
    relay = DatabaseEndpoint("127.0.0.1", 40001)
    url = make_url(endpoints.auth_database_uri(secrets, relay))
    assert (url.drivername, url.username, url.password) == (
        "postgresql+psycopg2",
        profile.db_user,
        HOSTILE,
    )
    assert (url.host, url.port, url.database) == ("127.0.0.1", 40001, profile.auth_database)
    assert make_url(endpoints.tracking_uri(secrets, relay)).database == profile.tracking_database
    legacy = database_uri(profile, secrets, "127.0.0.1", 40001, profile.auth_database)
    assert legacy == endpoints.auth_database_uri(secrets, relay)


def test_rendered_files_carry_the_endpoints_urls(ci):
    profile, secrets = ci
    endpoints = Endpoints.of(profile)
    layout = profile.layout
    compose_ini = configparser.ConfigParser()  # as MLflow reads it: %% is %
    compose_ini.read(layout.auth_config)
    assert compose_ini["mlflow"]["database_uri"] == endpoints.auth_database_uri(
        secrets, endpoints.compose_database
    )
    local_ini = configparser.ConfigParser()
    local_ini.read(layout.local_auth_config)
    assert local_ini["mlflow"]["database_uri"] == endpoints.auth_database_uri(
        secrets, endpoints.local_database
    )
    local_env = parse_env_file(layout.local_mlflow_env)
    assert local_env["MLFLOW_BACKEND_STORE_URI"] == endpoints.tracking_uri(
        secrets, endpoints.local_database
    )


def test_psycopg2_connects_with_the_endpoints_parameters(ci, monkeypatch):
    profile, secrets = ci
    seen = {}
    monkeypatch.setattr(postgres.psycopg2, "connect", lambda **kwargs: seen.update(kwargs))
    relay = DatabaseEndpoint("10.0.0.9", 40002)
    postgres.connect(profile, secrets, relay, "mlflow", timeout=3)
    assert seen == {
        "host": "10.0.0.9",
        "port": 40002,
        "user": profile.db_user,
        "password": HOSTILE,
        "dbname": "mlflow",
        "connect_timeout": 3,
    }
    assert seen == Endpoints.of(profile).connection_parameters(secrets, relay, "mlflow", 3)


class RelayRuntime:
    """A running stack whose database is reached through `relay`."""

    def __init__(self, relay: DatabaseEndpoint) -> None:
        self.relay = relay

    @contextmanager
    def database_endpoint(self):
        yield self.relay


def test_the_auth_database_of_a_running_stack_is_the_endpoints_url(ci, monkeypatch):
    profile, secrets = ci
    relay = DatabaseEndpoint("127.0.0.1", 40003)
    monkeypatch.setattr(stack, "existing_runtime", lambda p: RelayRuntime(relay))
    monkeypatch.setattr(stack.socket, "create_connection", lambda *a, **k: io.StringIO())
    with stack.auth_database(profile) as url:
        assert url == Endpoints.of(profile).auth_database_uri(secrets, relay)


def test_an_unreachable_auth_database_names_the_command_to_run(ci, monkeypatch):
    profile, _ = ci

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError

    relay = DatabaseEndpoint("127.0.0.1", 40004)
    monkeypatch.setattr(stack, "existing_runtime", lambda p: RelayRuntime(relay))
    monkeypatch.setattr(stack.socket, "create_connection", refuse)
    with pytest.raises(stack.StackError) as error, stack.auth_database(profile):
        pass
    assert str(error.value) == (
        "the auth database of profile ci is not reachable on 127.0.0.1:40004: run `invoke up -p ci`"
    )
