"""The dev OpenID Provider of the local runtime, as render writes it for the sso profile: its
config (clients, users, groups, lifetimes), its keys (made once), its supervisord program."""

from __future__ import annotations

import json
import stat

import pytest

from mlflow_stack import oidc_profile
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.runtime import check_service
from mlflow_stack.runtime.local import LocalRuntime
from mlflow_stack.secrets import load_secrets


@pytest.fixture
def sso(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_OIDC_ACCESS_TOKEN_SECONDS", "42")
    monkeypatch.setenv("MLFLOW_STACK_OIDC_PROVIDER_PORT", "15480")
    profile = load_profile("sso")
    render_profile(profile)
    return profile


def read_json(path):
    return json.loads(path.read_text())


def test_the_config_has_the_profiles_clients_users_and_lifetimes(sso):
    config = read_json(sso.state_dir / StackLayout.OIDC_PROVIDER_CONFIG)
    secrets = load_secrets(sso)
    assert config["issuer"] == oidc_profile.issuer(sso, "local") == "http://127.0.0.1:15480"
    assert (config["host"], config["port"]) == ("127.0.0.1", 15480)
    assert config["api"] == {
        "audience": sso.oidc_api_audience,
        "scope": "mlflow",
        "access_token_ttl": 42,
    }
    assert config["session_ttl"] == sso.oidc_session_hours * 3600

    browser = config["browser_client"]
    assert browser["client_id"] == sso.oidc_client_id
    assert browser["client_secret"] == secrets.oidc_client_secret
    callback = oidc_profile.redirect_uri(sso)
    assert browser["redirect_uris"] == [
        callback,
        callback.replace("//127.0.0.1:", "//localhost:"),
    ]
    assert oidc_profile.post_logout_redirect_uri(sso) in browser["post_logout_redirect_uris"]

    assert config["service_clients"] == [
        {
            "client_id": sso.oidc_machine_client_id,
            "client_secret": secrets.oidc_machine_secret,
            "username": "service-account-mlflow-machine",
            "groups": ["mlflow-users"],  # the login group gates machine tokens too
        }
    ]
    users = {user["username"]: user for user in config["users"]}
    assert {name: user["groups"] for name, user in users.items()} == {
        "alice": ["mlflow-users", "mlflow-admins"],
        "bob": ["mlflow-users"],
        "carol": [],
        "admin": ["mlflow-users"],
    }
    assert {user["password"] for user in users.values()} == {secrets.oidc_dev_user_password}


def test_config_and_keys_are_private_and_the_keys_outlive_a_render(sso):
    config_path = sso.state_dir / StackLayout.OIDC_PROVIDER_CONFIG
    keys_path = sso.state_dir / StackLayout.OIDC_PROVIDER_KEYS
    for path in (config_path, keys_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    kid = read_json(config_path)["jwks"]["keys"][0]["kid"]
    keys_before = keys_path.read_bytes()

    config_path.unlink()
    render_profile(load_profile("sso"))
    assert keys_path.read_bytes() == keys_before
    assert read_json(config_path)["jwks"]["keys"][0]["kid"] == kid

    keys_path.unlink()  # the documented way to rotate them
    render_profile(load_profile("sso"))
    assert read_json(config_path)["jwks"]["keys"][0]["kid"] != kid


def test_a_damaged_key_file_is_refused_not_replaced(sso):
    keys_path = sso.state_dir / StackLayout.OIDC_PROVIDER_KEYS
    keys_path.write_text("{}")
    with pytest.raises(StackError, match="delete it"):
        render_profile(load_profile("sso"))
    assert keys_path.read_text() == "{}"


def test_supervisord_runs_it_without_a_secret_on_its_command_line(sso):
    conf = (sso.state_dir / StackLayout.SUPERVISORD_CONF).read_text()
    assert "[program:oidc-provider]" in conf
    program = conf.split("[program:oidc-provider]")[1]
    command = program.split("command=", 1)[1].splitlines()[0]
    assert command.startswith("/usr/bin/env -i PATH=")
    assert command.endswith(str(sso.state_dir / StackLayout.OIDC_PROVIDER_CONFIG))
    assert f"{sso.state_dir}/logs/oidc-provider.log" in program
    assert "autorestart=true" in program

    secrets = list(parse_env_file(sso.state_dir / "secrets.env").values())
    keys = read_json(sso.layout.oidc_provider_keys)
    secrets += [keys["jwks"]["keys"][0]["d"], *keys["cookie_keys"]]
    assert not any(secret in conf for secret in secrets)


def test_profiles_without_the_dev_provider_have_neither_program_nor_files(stack_home):
    profile = load_profile("ci")
    render_profile(profile)
    assert "oidc-provider" not in (profile.state_dir / StackLayout.SUPERVISORD_CONF).read_text()
    assert not (profile.state_dir / StackLayout.OIDC_PROVIDER_CONFIG).exists()
    assert not (profile.state_dir / StackLayout.OIDC_PROVIDER_KEYS).exists()


def test_only_the_local_runtime_of_the_sso_profile_knows_the_service(sso):
    with pytest.raises(StackError, match="unknown service 'oidc-provider'"):
        check_service("oidc-provider")  # what compose checks against
    local = LocalRuntime(sso, load_secrets(sso))
    assert local.services() == ("postgres", "mlflow", "oidc-provider")
    assert local.log_files("oidc-provider") == [sso.state_dir / "logs" / "oidc-provider.log"]
    profile = load_profile("ci")
    render_profile(profile)
    with pytest.raises(StackError, match="unknown service"):
        LocalRuntime(profile, load_secrets(profile)).log_files("oidc-provider")


def test_a_token_lifetime_below_ten_seconds_is_refused(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_OIDC_ACCESS_TOKEN_SECONDS", "9")
    with pytest.raises(StackError, match="oidc_access_token_seconds must be 10-86400"):
        load_profile("sso")
