"""Render a profile into .stack/<profile>/: every file a runtime needs, escaped by named filters."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2

from mlflow_stack import paths
from mlflow_stack.errors import StackError
from mlflow_stack.files import (
    PUBLIC_MODE,
    SECRET_MODE,
    format_env_file,
    write_atomic,
)
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets, resolve_secrets, write_secrets

# Inside the MLflow container; the compose file mounts the rendered files and volumes here.
CONTAINER_AUTH_CONFIG = "/mlflow/config/auth_config.ini"
# The image's entry point writes this variable's content to CONTAINER_AUTH_CONFIG
# (mlflow_stack/container/entrypoint.py).
CONTAINER_AUTH_CONFIG_VARIABLE = "MLFLOW_STACK_AUTH_CONFIG_INI"
CONTAINER_ARTIFACTS = "/mlflow/artifacts"
COMPOSE_POSTGRES_HOST = "postgres"
COMPOSE_POSTGRES_PORT = 5432
CONTAINER_UID = 10001  # the MLflow image's user (templates/Dockerfile.j2)

COMPOSE_FILE = "docker-compose.yml"
COMPOSE_ENV_FILE = "compose.env"
AUTH_CONFIG_FILE = "auth_config.ini"
DOCKERFILE = "Dockerfile"
POSTGRES_INIT_SQL = "postgres-init/10-auth-database.sql"
LOCAL_AUTH_CONFIG_FILE = "local/auth_config.ini"
LOCAL_MLFLOW_ENV_FILE = "local/mlflow.env"
LOCAL_POSTGRESQL_CONF = "local/postgresql.conf"
SUPERVISORD_CONF = "local/supervisord.conf"

# The authorization hook the project ships (bearer tokens + basic auth), see mlflow_stack/auth.
AUTHORIZATION_FUNCTION = "mlflow_stack.auth.hook:authenticate"


class RenderError(StackError):
    """A value cannot be written faithfully into one of the rendered formats."""


# --- Escaping filters: the only place any template escapes anything. -------------------------


def ini_value(value: object) -> str:
    """A value for MLflow's configparser: '%' doubled (interpolation); newlines cannot exist."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise RenderError("a value for auth_config.ini contains a newline")
    if text != text.strip():
        raise RenderError("a value for auth_config.ini starts or ends with white space")
    return text.replace("%", "%%")


def compose_value(value: object) -> str:
    """Compose interpolates '$'; '$$' is its literal dollar sign."""
    return str(value).replace("$", "$$")


def yaml_string(value: object) -> str:
    """A double-quoted YAML scalar: JSON's string syntax is a subset of YAML's."""
    import json

    return json.dumps(str(value), ensure_ascii=False)


def urlquote(value: object) -> str:
    """Percent-encode everything outside the unreserved set, for a URI's userinfo."""
    return quote(str(value), safe="")


def supervisor_arg(value: object) -> str:
    """One argument in supervisord's `command=`: shell-quoted, then '%' doubled (its expansion)."""
    return shlex.quote(str(value)).replace("%", "%%")


def postgres_conf_string(value: object) -> str:
    """A quoted postgresql.conf string value."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


FILTERS = {
    "ini": ini_value,
    "compose": compose_value,
    "yaml": yaml_string,
    "urlquote": urlquote,
    "supervisor_arg": supervisor_arg,
    "pgconf": postgres_conf_string,
}


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(paths.TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - none of the outputs is HTML; escaping is per format
    )
    env.filters.update(FILTERS)
    return env


# --- What the templates are given. ------------------------------------------------------------


def database_uri(profile: Profile, secrets: Secrets, host: str, port: int, database: str) -> str:
    # psycopg2 explicitly: with SQLAlchemy 2.1 a bare postgresql:// asks for psycopg 3.
    return (
        f"postgresql+psycopg2://{urlquote(profile.db_user)}:{urlquote(secrets.db_password)}"
        f"@{host}:{port}/{database}"
    )


def allowed_host_headers(profile: Profile) -> list[str]:
    headers: list[str] = []
    for host in profile.allowed_hosts:
        for header in (host, f"{host}:{profile.mlflow_port}"):
            if header not in headers:
                headers.append(header)
    return headers


def mlflow_server_args(profile: Profile, host: str, artifacts_destination: str) -> list[str]:
    """`mlflow server` arguments shared by both runtimes; secrets travel in the environment."""
    return [
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        host,
        "--port",
        str(profile.mlflow_port),
        "--workers",
        str(profile.workers),
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination,
        "--allowed-hosts",
        ",".join(allowed_host_headers(profile)),
        "--uvicorn-opts",
        f"--log-level {profile.log_level}",
    ]


def mlflow_environment(
    profile: Profile, secrets: Secrets, backend_store_uri: str, auth_config_path: str
) -> dict[str, str]:
    return {
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
        "MLFLOW_AUTH_CONFIG_PATH": auth_config_path,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.secret_key,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if profile.job_execution else "false",
        "MLFLOW_LOGGING_LEVEL": profile.log_level.upper(),
    }


def extra_ca_bundle(profile: Profile) -> str:
    """The absolute path of the profile's extra CA certificates, or "" when it names none."""
    if not profile.ca_bundle:
        return ""
    path = Path(profile.ca_bundle).expanduser().resolve()
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise RenderError(f"ca_bundle {profile.ca_bundle}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise RenderError(f"ca_bundle {profile.ca_bundle} holds no PEM certificate")
    return str(path)


def local_artifacts_dir(profile: Profile) -> Path:
    if profile.artifacts_destination:
        return Path(profile.artifacts_destination).expanduser().resolve()
    return profile.state_dir / "artifacts"


@dataclass(frozen=True)
class RenderedFile:
    relative_path: str
    content: str
    mode: int


def render_files(profile: Profile, secrets: Secrets) -> list[RenderedFile]:
    """Every file of the profile, in memory: nothing is written unless all of them render."""
    env = template_environment()
    state_dir = profile.state_dir
    project_root_from_state = os.path.relpath(paths.PROJECT_ROOT, state_dir)

    compose_uri = database_uri(
        profile, secrets, COMPOSE_POSTGRES_HOST, COMPOSE_POSTGRES_PORT, profile.tracking_database
    )
    compose_auth_uri = database_uri(
        profile, secrets, COMPOSE_POSTGRES_HOST, COMPOSE_POSTGRES_PORT, profile.auth_database
    )
    local_uri = database_uri(
        profile, secrets, "127.0.0.1", profile.postgres_port, profile.tracking_database
    )
    local_auth_uri = database_uri(
        profile, secrets, "127.0.0.1", profile.postgres_port, profile.auth_database
    )
    local_auth_config = state_dir / LOCAL_AUTH_CONFIG_FILE

    common = {
        "profile": profile,
        "secrets": secrets,
        "authorization_function": AUTHORIZATION_FUNCTION,
        "container_uid": CONTAINER_UID,
    }

    def render(template: str, **extra: object) -> str:
        try:
            return env.get_template(template).render(**common, **extra)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {template}: {exc}") from None

    compose_auth_config = render("auth_config.ini.j2", database_uri=compose_auth_uri)
    compose_mlflow_env = mlflow_environment(profile, secrets, compose_uri, CONTAINER_AUTH_CONFIG)
    compose_mlflow_env[CONTAINER_AUTH_CONFIG_VARIABLE] = compose_auth_config
    local_mlflow_env = mlflow_environment(profile, secrets, local_uri, str(local_auth_config))
    header = f"Rendered by mlflow-stack for profile {profile.name}; do not edit."

    return [
        RenderedFile(
            COMPOSE_FILE,
            render(
                "docker-compose.yml.j2",
                mlflow_environment=compose_mlflow_env,
                mlflow_command=[
                    "mlflow",
                    *mlflow_server_args(profile, "0.0.0.0", CONTAINER_ARTIFACTS),  # noqa: S104
                ],
                project_root=project_root_from_state,
                dockerfile=os.path.relpath(state_dir / DOCKERFILE, paths.PROJECT_ROOT),
                auth_config_dir=os.path.dirname(CONTAINER_AUTH_CONFIG),
                artifacts_mount=CONTAINER_ARTIFACTS,
                ca_bundle=extra_ca_bundle(profile),
            ),
            SECRET_MODE,
        ),
        RenderedFile(COMPOSE_ENV_FILE, render("compose.env.j2"), PUBLIC_MODE),
        RenderedFile(AUTH_CONFIG_FILE, compose_auth_config, SECRET_MODE),
        RenderedFile(DOCKERFILE, render("Dockerfile.j2"), PUBLIC_MODE),
        RenderedFile(POSTGRES_INIT_SQL, render("postgres-init.sql.j2"), PUBLIC_MODE),
        RenderedFile(
            LOCAL_AUTH_CONFIG_FILE,
            render("auth_config.ini.j2", database_uri=local_auth_uri),
            SECRET_MODE,
        ),
        RenderedFile(
            LOCAL_MLFLOW_ENV_FILE,
            format_env_file(local_mlflow_env, header + "\nEnvironment of the MLflow server."),
            SECRET_MODE,
        ),
        RenderedFile(
            LOCAL_POSTGRESQL_CONF,
            render("postgresql.conf.j2", socket_dir=str(state_dir / "pgsocket")),
            PUBLIC_MODE,
        ),
        RenderedFile(
            SUPERVISORD_CONF,
            render(
                "supervisord.conf.j2",
                state_dir=str(state_dir),
                mlflow_command=[
                    sys.executable,
                    "-m",
                    "mlflow_stack.launch",
                    str(state_dir / "run" / "mlflow.pgid"),
                    "--",
                    *mlflow_server_args(
                        profile, profile.bind_address, str(local_artifacts_dir(profile))
                    ),
                ],
            ),
            PUBLIC_MODE,
        ),
    ]


def render_profile(profile: Profile, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Resolve secrets, render every file, then write them; returns the paths written."""
    secrets, secrets_changed = resolve_secrets(profile, environ)
    files = render_files(profile, secrets)
    if secrets_changed:
        write_secrets(profile, secrets)
    written = []
    for item in files:
        target = profile.state_dir / item.relative_path
        write_atomic(target, item.content, item.mode)
        written.append(target)
    return written
