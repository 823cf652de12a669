import dataclasses
import shutil
import tomllib
import typing

import pytest

from mlflow_stack import paths
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile, available_profiles, load_profile


@pytest.fixture
def profiles(tmp_path):
    """A copy of config/profiles that a test may change."""
    folder = tmp_path / "profiles"
    shutil.copytree(paths.PROFILES_DIR, folder)
    return folder


def test_every_shipped_profile_loads(stack_home):
    assert available_profiles() == ["ci", "demo", "dev", "sso"]
    for name in available_profiles():
        profile = load_profile(name, environ={})
        assert profile.name == name
        assert 1 <= profile.mlflow_port <= 65535


def test_profiles_override_base_and_do_not_clash():
    dev, ci, demo = (load_profile(n, environ={}) for n in ("dev", "ci", "demo"))
    assert dev.secrets_mode == "defaults"
    assert ci.secrets_mode == demo.secrets_mode == "generate"
    assert demo.default_permission == "NO_PERMISSIONS"
    ports = {(p.mlflow_port, p.postgres_port) for p in (dev, ci, demo)}
    assert len({port for pair in ports for port in pair}) == 6


def test_unknown_profile_lists_the_existing_ones():
    with pytest.raises(StackError, match=r"unknown profile 'prod'; profiles: ci, demo, dev, sso"):
        load_profile("prod", environ={})


@pytest.mark.parametrize(
    "name", ["../etc", "../../x", "dev/../ci", "/etc/passwd", "Dev", "", "a b"]
)
def test_profile_name_must_be_a_plain_identifier(name):
    with pytest.raises(StackError, match="invalid profile name"):
        load_profile(name, environ={})


def test_malformed_toml_names_the_file(profiles):
    (profiles / "dev.toml").write_text("mlflow_port = \n")
    with pytest.raises(StackError, match=r"dev\.toml: malformed TOML"):
        load_profile("dev", environ={}, profiles_dir=profiles)


def test_unknown_key_is_refused(profiles):
    (profiles / "ci.toml").write_text("mlflow_prot = 5000\n")
    with pytest.raises(StackError, match=r"ci\.toml: unknown key 'mlflow_prot'"):
        load_profile("ci", environ={}, profiles_dir=profiles)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('mlflow_port = "5000"', "mlflow_port must be an integer"),
        ("workers = true", "workers must be an integer"),
        ("publish_postgres = 1", "publish_postgres must be a boolean"),
        ("allowed_hosts = [1]", "allowed_hosts must be a list of strings"),
    ],
)
def test_wrong_types_are_refused(profiles, line, message):
    (profiles / "ci.toml").write_text(line + "\n")
    with pytest.raises(StackError, match=message):
        load_profile("ci", environ={}, profiles_dir=profiles)


def test_port_out_of_range_from_file_and_environment(profiles):
    (profiles / "ci.toml").write_text("mlflow_port = 70000\n")
    with pytest.raises(StackError, match=r"mlflow_port = 70000 is out of range"):
        load_profile("ci", environ={}, profiles_dir=profiles)
    with pytest.raises(StackError, match=r"postgres_port = 0 is out of range"):
        load_profile("dev", environ={"MLFLOW_STACK_POSTGRES_PORT": "0"})


def test_environment_overrides_with_types():
    profile = load_profile(
        "dev",
        environ={
            "MLFLOW_STACK_MLFLOW_PORT": "5999",
            "MLFLOW_STACK_ALLOWED_HOSTS": "mlflow.example.com, localhost",
            "MLFLOW_STACK_PUBLISH_POSTGRES": "false",
        },
    )
    assert profile.mlflow_port == 5999
    assert profile.allowed_hosts == ("mlflow.example.com", "localhost")
    assert profile.publish_postgres is False


def test_environment_value_of_wrong_type_is_a_clear_error():
    with pytest.raises(StackError, match="MLFLOW_STACK_WORKERS must be an integer"):
        load_profile("dev", environ={"MLFLOW_STACK_WORKERS": "four"})


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("MLFLOW_STACK_DEFAULT_PERMISSION", "ALL", "default_permission = 'ALL'"),
        ("MLFLOW_STACK_ADMIN_USERNAME", "admin'; DROP TABLE users;--", "admin_username"),
        ("MLFLOW_STACK_AUTH_DATABASE", "auth db", "auth_database"),
        ("MLFLOW_STACK_WORKERS", "0", "workers = 0"),
        ("MLFLOW_STACK_POSTGRES_PORT", "5000", "both 5000"),
    ],
)
def test_invalid_values_are_refused(var, value, message):
    with pytest.raises(StackError, match=message.replace("(", r"\(")):
        load_profile("dev", environ={var: value})


def test_profile_is_frozen():
    profile = load_profile("dev", environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.mlflow_port = 1  # type: ignore[misc]
    assert isinstance(profile.allowed_hosts, tuple)


def test_profile_fields_are_exactly_the_keys_of_base_toml():
    # A key added to base.toml without a typed field (or the other way round) fails here.
    with (paths.PROFILES_DIR / "base.toml").open("rb") as fh:
        defaults = tomllib.load(fh)
    hints = typing.get_type_hints(Profile)
    assert sorted(f.name for f in dataclasses.fields(Profile)) == sorted(["name", *defaults])
    for key, default in defaults.items():
        expected = tuple[str, ...] if isinstance(default, list) else type(default)
        assert hints[key] == expected, key


def test_a_base_toml_that_lacks_a_key_is_a_clear_error(profiles):
    base = profiles / "base.toml"
    base.write_text(base.read_text().replace('ca_bundle = ""', ""))
    with pytest.raises(StackError, match=r"base\.toml: missing ca_bundle"):
        load_profile("ci", environ={}, profiles_dir=profiles)


def test_the_compose_project_is_mlflow_profile_unless_the_profile_names_one(
    stack_home, monkeypatch
):
    assert load_profile("ci").compose_project_name == "mlflow-ci"
    monkeypatch.setenv("MLFLOW_STACK_COMPOSE_PROJECT", "mlflow-test-ci-1a2b3c")
    assert load_profile("ci").compose_project_name == "mlflow-test-ci-1a2b3c"
    monkeypatch.setenv("MLFLOW_STACK_COMPOSE_PROJECT", "Not Valid!")
    with pytest.raises(StackError, match="compose_project 'Not Valid!' must be lower-case"):
        load_profile("ci")
