import stat

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.secrets import DEV_DEFAULTS, resolve_secrets


def test_dev_uses_the_documented_defaults(stack_home):
    secrets, _ = resolve_secrets(load_profile("dev"), environ={})
    assert secrets.admin_password == "admin_password" == DEV_DEFAULTS["admin_password"]


@pytest.mark.parametrize("name", ["ci", "demo"])
def test_generated_secrets_are_random_private_and_stable(stack_home, name):
    render_profile(load_profile(name))
    secrets_file = stack_home / name / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    first = parse_env_file(secrets_file)
    assert set(first) == {
        "MLFLOW_STACK_ADMIN_PASSWORD",
        "MLFLOW_STACK_DB_PASSWORD",
        "MLFLOW_STACK_SECRET_KEY",
        "MLFLOW_STACK_KEK_PASSPHRASE",
    }
    assert len(set(first.values())) == 4
    assert all(len(value) >= 40 for value in first.values())
    assert not set(first.values()) & set(DEV_DEFAULTS.values())
    render_profile(load_profile(name))
    assert parse_env_file(secrets_file) == first


def test_two_profiles_get_different_secrets(stack_home):
    render_profile(load_profile("ci"))
    render_profile(load_profile("demo"))
    ci = parse_env_file(stack_home / "ci" / "secrets.env")
    demo = parse_env_file(stack_home / "demo" / "secrets.env")
    assert not set(ci.values()) & set(demo.values())


def test_environment_overrides_and_is_remembered(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_ADMIN_PASSWORD", "chosen-by-the-operator")
    render_profile(load_profile("ci"))
    monkeypatch.delenv("MLFLOW_STACK_ADMIN_PASSWORD")
    secrets, changed = resolve_secrets(load_profile("ci"))
    assert secrets.admin_password == "chosen-by-the-operator"
    assert not changed


@pytest.mark.parametrize("password", ["admin_password", "mlflow_password", "password1234"])
def test_demo_refuses_known_default_passwords(stack_home, monkeypatch, password):
    monkeypatch.setenv("MLFLOW_STACK_ADMIN_PASSWORD", password)
    with pytest.raises(StackError, match="refuses a known default password for admin_password"):
        render_profile(load_profile("demo"))
    assert not (stack_home / "demo").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("short", "shorter than 12"),
        ("x" * 10_000, "10000 characters long"),
        ("line one\nline two", "newline"),
        ("  padded-password  ", "white space"),
    ],
)
def test_unusable_passwords_are_refused_before_anything_is_written(
    stack_home, monkeypatch, value, message
):
    monkeypatch.setenv("MLFLOW_STACK_DB_PASSWORD", value)
    with pytest.raises(StackError, match=message):
        render_profile(load_profile("ci"))
    assert not (stack_home / "ci").exists()


def test_an_admin_password_the_sdk_cannot_send_is_refused(stack_home, monkeypatch):
    # requests encodes basic auth as Latin-1: 漢 or 🙂 would fail in every client, later.
    monkeypatch.setenv("MLFLOW_STACK_ADMIN_PASSWORD", "unicode ü漢字🙂 long enough")
    with pytest.raises(StackError, match="MLFLOW_STACK_ADMIN_PASSWORD holds characters beyond"):
        resolve_secrets(load_profile("ci"))
    monkeypatch.setenv("MLFLOW_STACK_ADMIN_PASSWORD", "Latin-1 is fine: ü ß é")
    assert resolve_secrets(load_profile("ci"))[0].admin_password == "Latin-1 is fine: ü ß é"
