"""Rendering in-process: escaping filters, secrets handling, atomic and deterministic writes."""

import stat

import pytest
from sqlalchemy.engine import make_url

from mlflow_stack import filters, render
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.validate import read_auth_config
from tests.rendering import render_with


def test_auth_config_has_every_key_mlflow_reads(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "demo")
    section = read_auth_config(profile.state_dir / StackLayout.AUTH_CONFIG)["mlflow"]
    assert section["default_permission"] == "NO_PERMISSIONS"
    assert section["admin_username"] == "admin"
    assert section["authorization_function"] == render.AUTHORIZATION_FUNCTION
    assert make_url(section["database_uri"]).database == "mlflow_auth"
    assert make_url(section["database_uri"]).host == "postgres"
    local = read_auth_config(profile.state_dir / StackLayout.LOCAL_AUTH_CONFIG)["mlflow"]
    assert make_url(local["database_uri"]).host == "127.0.0.1"
    assert make_url(local["database_uri"]).port == profile.postgres_port
    for key in (
        "auth_cache_ttl_seconds",
        "workspace_cache_ttl_seconds",
        "grant_default_workspace_access",
    ):
        assert key in section


@pytest.mark.parametrize("name", ["dev", "ci", "demo", "sso"])
def test_rendering_twice_gives_identical_bytes(stack_home, monkeypatch, name):
    # The first render makes the secrets and the sso provider's keys; the second reads them.
    profile = render_with(stack_home, monkeypatch, name)
    first = {p: p.read_bytes() for p in profile.state_dir.rglob("*") if p.is_file()}
    render_profile(load_profile(name))
    second = {p: p.read_bytes() for p in profile.state_dir.rglob("*") if p.is_file()}
    assert first == second


def test_files_with_secrets_are_private(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "ci")
    private = {
        "secrets.env",
        StackLayout.COMPOSE_FILE,
        StackLayout.AUTH_CONFIG,
        StackLayout.LOCAL_AUTH_CONFIG,
        StackLayout.LOCAL_MLFLOW_ENV,
    }
    secrets = parse_env_file(profile.state_dir / "secrets.env").values()
    for path in profile.state_dir.rglob("*"):
        if not path.is_file():
            continue
        relative = str(path.relative_to(profile.state_dir))
        mode = stat.S_IMODE(path.stat().st_mode)
        if relative in private:
            assert mode == 0o600, relative
        else:
            text = path.read_text()
            assert not any(secret in text for secret in secrets), relative


def test_a_failed_render_leaves_the_previous_files_intact(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "ci")
    before = {p: p.read_bytes() for p in profile.state_dir.rglob("*") if p.is_file()}
    monkeypatch.setenv("MLFLOW_STACK_ADMIN_PASSWORD", "two\nlines-password")
    with pytest.raises(StackError, match="newline"):
        render_profile(load_profile("ci"))
    after = {p: p.read_bytes() for p in profile.state_dir.rglob("*") if p.is_file()}
    assert before == after


def test_a_failing_template_writes_nothing(stack_home, monkeypatch):
    monkeypatch.setattr(render, "AUTHORIZATION_FUNCTION", "bad\nvalue")
    with pytest.raises(StackError, match="newline"):
        render_profile(load_profile("dev"))
    assert not stack_home.exists()


def test_filters_escape_for_their_format():
    assert filters.ini_value("100%") == "100%%"
    assert filters.compose_value("a$b$$") == "a$$b$$$$"
    assert filters.urlquote("p@s/s:w%rd") == "p%40s%2Fs%3Aw%25rd"
    assert filters.yaml_string('q"u\\o') == '"q\\"u\\\\o"'
    assert filters.supervisor_arg("a b%") == "'a b%%'"
    assert filters.postgres_conf_string("it's") == "'it''s'"
    assert filters.shell_word("a'b") == "'a'\"'\"'b'"
    with pytest.raises(filters.RenderError):
        filters.ini_value(" padded ")


def test_the_templates_use_the_filters_module_and_the_old_names_still_work():
    environment = render.template_environment()
    for name, function in filters.FILTERS.items():
        assert environment.filters[name] is function
    assert render.ini_value is filters.ini_value and render.RenderError is filters.RenderError
    assert issubclass(filters.RenderError, StackError)
