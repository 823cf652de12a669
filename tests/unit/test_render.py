import configparser
import json
import stat

import pytest
from sqlalchemy.engine import make_url

from mlflow_stack import render
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.validate import read_auth_config, run_compose_config, validate_profile

HOSTILE_PASSWORDS = [
    "p%a$s@w:o/r#d'\"; ü ${X}",
    "$$dollar$ and %(percent)s and %%",
    "at@sign/slash?query#frag&amp=1+plus",
    "quote'single\"double`back\\slash",
    "${MLFLOW_STACK_DB_PASSWORD:-x} $HOME %",
    "unicode ü漢字🙂 [brackets] {braces} ; semicolon = equals",
]


def compose_literal(canonical: str) -> str:
    """The value a container gets: `config` prints the canonical form, every '$' as '$$'."""
    return canonical.replace("$$", "$")


def render_with(stack_home, monkeypatch, profile_name="ci", **environ):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    profile = load_profile(profile_name)
    render_profile(profile)
    return profile


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_admin_password_round_trips_through_the_ini(stack_home, monkeypatch, password):
    profile = render_with(stack_home, monkeypatch, MLFLOW_STACK_ADMIN_PASSWORD=password)
    for name in (render.AUTH_CONFIG_FILE, render.LOCAL_AUTH_CONFIG_FILE):
        parser = configparser.ConfigParser()  # exactly what MLflow's read_auth_config does
        parser.read(profile.state_dir / name)
        assert parser["mlflow"]["admin_password"] == password
    # The copy compose writes into the container: compose's escaping, then the INI's.
    config = json.loads(run_compose_config(profile.state_dir, "--format", "json"))
    parser = configparser.ConfigParser()
    parser.read_string(compose_literal(config["configs"]["auth_config"]["content"]))
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
    uris.append(parse_env_file(state / render.LOCAL_MLFLOW_ENV_FILE)["MLFLOW_BACKEND_STORE_URI"])
    for name in (render.AUTH_CONFIG_FILE, render.LOCAL_AUTH_CONFIG_FILE):
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
    local_env = parse_env_file(profile.state_dir / render.LOCAL_MLFLOW_ENV_FILE)
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
    assert mlflow["command"][:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["restart"] == "unless-stopped"
    assert "healthcheck" in mlflow
    # The auth config reaches the container as a compose config owned by the image's user,
    # with the same bytes as the rendered auth_config.ini.
    auth_config = next(c for c in mlflow["configs"] if c["target"] == render.CONTAINER_AUTH_CONFIG)
    assert (auth_config["uid"], auth_config["mode"]) == (str(render.CONTAINER_UID), "0400")
    content = config["configs"][auth_config["source"]]["content"]
    assert compose_literal(content) == (profile.state_dir / render.AUTH_CONFIG_FILE).read_text()
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == render.CONTAINER_AUTH_CONFIG
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    # The database password never appears in a command line.
    secrets = parse_env_file(profile.state_dir / "secrets.env")
    assert secrets["MLFLOW_STACK_DB_PASSWORD"] not in " ".join(mlflow["command"])
    assert "--workers" in mlflow["command"]
    sql = (profile.state_dir / render.POSTGRES_INIT_SQL).read_text()
    assert "CREATE DATABASE mlflow_auth OWNER mlflow;" in sql


def test_postgres_is_published_only_where_the_profile_says(stack_home, monkeypatch):
    for name in ("ci", "demo"):
        profile = render_with(stack_home, monkeypatch, name)
        config = json.loads(run_compose_config(profile.state_dir, "--format", "json"))
        assert "ports" not in config["services"]["postgres"]


def test_auth_config_has_every_key_mlflow_reads(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "demo")
    section = read_auth_config(profile.state_dir / render.AUTH_CONFIG_FILE)["mlflow"]
    assert section["default_permission"] == "NO_PERMISSIONS"
    assert section["admin_username"] == "admin"
    assert section["authorization_function"] == render.AUTHORIZATION_FUNCTION
    assert make_url(section["database_uri"]).database == "mlflow_auth"
    assert make_url(section["database_uri"]).host == "postgres"
    local = read_auth_config(profile.state_dir / render.LOCAL_AUTH_CONFIG_FILE)["mlflow"]
    assert make_url(local["database_uri"]).host == "127.0.0.1"
    assert make_url(local["database_uri"]).port == profile.postgres_port
    for key in (
        "auth_cache_ttl_seconds",
        "workspace_cache_ttl_seconds",
        "grant_default_workspace_access",
    ):
        assert key in section


def test_rendering_twice_gives_identical_bytes(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "ci")
    first = {p: p.read_bytes() for p in profile.state_dir.rglob("*") if p.is_file()}
    render_profile(load_profile("ci"))
    second = {p: p.read_bytes() for p in profile.state_dir.rglob("*") if p.is_file()}
    assert first == second


def test_files_with_secrets_are_private(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "ci")
    private = {
        "secrets.env",
        render.COMPOSE_FILE,
        render.AUTH_CONFIG_FILE,
        render.LOCAL_AUTH_CONFIG_FILE,
        render.LOCAL_MLFLOW_ENV_FILE,
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
    assert render.ini_value("100%") == "100%%"
    assert render.compose_value("a$b$$") == "a$$b$$$$"
    assert render.urlquote("p@s/s:w%rd") == "p%40s%2Fs%3Aw%25rd"
    assert render.yaml_string('q"u\\o') == '"q\\"u\\\\o"'
    assert render.supervisor_arg("a b%") == "'a b%%'"
    assert render.postgres_conf_string("it's") == "'it''s'"
    with pytest.raises(StackError):
        render.ini_value(" padded ")


def test_validate_catches_a_broken_compose_file(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "dev")
    compose_file = profile.state_dir / render.COMPOSE_FILE
    compose_file.write_text(compose_file.read_text().replace('"mlflow-dev"', '"${UNSET_VAR}"'))
    with pytest.raises(StackError, match="variable is not set|invalid"):
        validate_profile(profile)


def test_validate_catches_a_bad_ini(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "dev")
    ini = profile.state_dir / render.AUTH_CONFIG_FILE
    ini.write_text(ini.read_text().replace("admin_password = ", "admin_password = 100% "))
    with pytest.raises(StackError, match="auth_config.ini is invalid"):
        validate_profile(profile)


def test_validate_runs_compose_lint(stack_home, monkeypatch):
    profile = render_with(stack_home, monkeypatch, "dev")
    validate_profile(profile)  # every finding is fixed or justified in config/compose-lint.yml
    compose_file = profile.state_dir / render.COMPOSE_FILE
    text = compose_file.read_text()
    compose_file.write_text(text.replace('"no-new-privileges:true"', '"no-new-privileges:false"'))
    with pytest.raises(StackError, match="compose-lint: docker-compose.yml: CL-0003"):
        validate_profile(profile)
