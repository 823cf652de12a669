"""Render a profile into .stack/<profile>/: every file a runtime needs, escaped by named filters."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
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
from mlflow_stack.layout import StackLayout
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

# Keycloak, where the profile runs it (oidc_provider = "keycloak", docker runtime). The realm holds
# the clients' secrets and the dev users' password: the compose file hands it over in a variable
# and the entry point writes it into a tmpfs only Keycloak's user can read, the way
# auth_config.ini reaches MLflow. A bind mount of keycloak/realm.json would keep its 0600 root
# owner, unreadable to the container's uid 1000, and loosening it would expose it on the host.
# (The host side of both files: StackLayout.KEYCLOAK_REALM and KEYCLOAK_ENTRYPOINT.)
CONTAINER_KEYCLOAK_ENTRYPOINT = "/opt/mlflow-stack/keycloak-entrypoint.sh"
CONTAINER_KEYCLOAK_IMPORT_DIR = "/opt/keycloak/data/import"  # what --import-realm reads
CONTAINER_KEYCLOAK_REALM_VARIABLE = "MLFLOW_STACK_KEYCLOAK_REALM_JSON"
CONTAINER_KEYCLOAK_KC_SH = "/opt/keycloak/bin/kc.sh"  # the image's own entry point
KEYCLOAK_UID = 1000  # the Keycloak image's user
KEYCLOAK_MANAGEMENT_PORT = 9000  # health endpoints (KC_HEALTH_ENABLED)
# The image has no curl, wget or Python: bash's /dev/tcp sends the GET and reads the status line.
KEYCLOAK_HEALTHCHECK = (
    f"exec 3<>/dev/tcp/127.0.0.1/{KEYCLOAK_MANAGEMENT_PORT}"
    " && printf 'GET /health/ready HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3"
    ' && read -r status <&3 && [[ $status == *" 200 "* ]]'
)

# The authorization hook the project ships (bearer tokens + basic auth), see mlflow_stack/auth.
AUTHORIZATION_FUNCTION = "mlflow_stack.auth.hook:authenticate"
# The project's MLflow app (pyproject.toml, entry point mlflow.app): MLflow's basic-auth app
# plus single sign-on and a users/current that lets the UI offer Logout.
APP_NAME = "mlflow-stack"


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


def shell_word(value: object) -> str:
    """One word for bash: single-quoted where it needs quoting."""
    return shlex.quote(str(value))


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
    "shell": shell_word,
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
        APP_NAME,
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


def oidc_server_settings(profile: Profile, secrets: Secrets, runtime: str) -> dict[str, str]:
    """The [mlflow_stack.oidc] section of auth_config.ini (read by mlflow_stack.auth.oidc_config):
    empty without single sign-on."""
    if not profile.oidc_enabled:
        return {}
    from mlflow_stack import oidc_profile

    return {
        "issuer": oidc_profile.issuer(profile, runtime),
        "discovery_url": oidc_profile.discovery_url(profile, runtime),
        "client_id": profile.oidc_client_id,
        "client_secret": secrets.oidc_client_secret,
        "api_audience": profile.oidc_api_audience,
        "scopes": " ".join(profile.oidc_scopes),
        "username_claim": profile.oidc_username_claim,
        "groups_claim": profile.oidc_groups_claim,
        "login_group": profile.oidc_login_group,
        "admin_group": profile.oidc_admin_group,
        "admin_from_tokens": str(profile.oidc_admin_from_tokens).lower(),
        "passwords": str(profile.oidc_passwords).lower(),
        "session_seconds": str(profile.oidc_session_hours * 3600),
        "redirect_uri": oidc_profile.redirect_uri(profile),
        "post_logout_redirect_uri": oidc_profile.post_logout_redirect_uri(profile),
        "profile_admin": profile.admin_username,
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


@dataclass(frozen=True)
class RenderedFile:
    relative_path: str  # under the profile's folder: one of StackLayout's relative names
    content: str
    mode: int


def _runs_dev_provider(profile: Profile) -> bool:
    from mlflow_stack import oidc_profile

    return oidc_profile.runs_dev_provider(profile, "local")


def dev_provider_command(profile: Profile) -> list[str]:
    """supervisord's oidc-provider program, where the local runtime runs the dev provider."""
    if not _runs_dev_provider(profile):
        return []
    from mlflow_stack import oidc_local

    return oidc_local.supervisor_command(profile)


def dev_provider_files(profile: Profile, secrets: Secrets) -> list[RenderedFile]:
    """The dev provider's config and its keys (made at the first render, then kept)."""
    if not _runs_dev_provider(profile):
        return []
    from mlflow_stack import oidc_dev, oidc_local

    keys = oidc_local.provider_keys(profile)
    config = oidc_local.provider_config(profile, secrets, keys)
    return [
        RenderedFile(StackLayout.OIDC_PROVIDER_KEYS, oidc_local.format_keys(keys), SECRET_MODE),
        RenderedFile(
            StackLayout.OIDC_PROVIDER_CONFIG, oidc_dev.format_provider_config(config), SECRET_MODE
        ),
    ]


def keycloak_service(profile: Profile, secrets: Secrets) -> dict[str, Any]:
    """What the compose file's keycloak service and its entry point are given; empty where the
    profile runs no Keycloak."""
    from mlflow_stack import keycloak_realm, oidc_profile

    if not oidc_profile.runs_keycloak(profile, "docker"):
        return {}
    if keycloak_realm.DATABASE in (profile.tracking_database, profile.auth_database):
        raise RenderError(
            f"profile {profile.name}: the database name {keycloak_realm.DATABASE} is Keycloak's"
        )
    realm_json = keycloak_realm.realm_json(profile, secrets)
    environment = {
        "KC_DB": "postgres",
        "KC_DB_URL": (
            f"jdbc:postgresql://{COMPOSE_POSTGRES_HOST}:{COMPOSE_POSTGRES_PORT}"
            f"/{keycloak_realm.DATABASE}"
        ),
        "KC_DB_USERNAME": profile.db_user,
        "KC_DB_PASSWORD": secrets.db_password,
        # Production mode over plain HTTP: it is published on loopback only.
        "KC_HTTP_ENABLED": "true",
        "KC_HTTP_PORT": str(oidc_profile.KEYCLOAK_INTERNAL_PORT),
        # Tokens carry the issuer a browser on this machine sees; the MLflow container reaches
        # the same server as keycloak:8080 (backchannel URLs follow the request).
        "KC_HOSTNAME": oidc_profile.provider_url(profile),
        "KC_HOSTNAME_BACKCHANNEL_DYNAMIC": "true",
        "KC_HEALTH_ENABLED": "true",
        # The master realm's admin, created on the first start only: the stack's admin.
        "KC_BOOTSTRAP_ADMIN_USERNAME": profile.admin_username,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": secrets.admin_password,
        CONTAINER_KEYCLOAK_REALM_VARIABLE: realm_json,
    }
    return {
        "realm_json": realm_json,
        "environment": environment,
        "database": keycloak_realm.DATABASE,
        "uid": KEYCLOAK_UID,
        "internal_port": oidc_profile.KEYCLOAK_INTERNAL_PORT,
        "entrypoint": ["/bin/bash", CONTAINER_KEYCLOAK_ENTRYPOINT],
        "command": ["start", "--import-realm"],
        "entrypoint_source": f"./{StackLayout.KEYCLOAK_ENTRYPOINT}",
        "entrypoint_target": CONTAINER_KEYCLOAK_ENTRYPOINT,
        "import_dir": CONTAINER_KEYCLOAK_IMPORT_DIR,
        "realm_path": f"{CONTAINER_KEYCLOAK_IMPORT_DIR}/{oidc_profile.KEYCLOAK_REALM}-realm.json",
        "realm_variable": CONTAINER_KEYCLOAK_REALM_VARIABLE,
        "kc_sh": CONTAINER_KEYCLOAK_KC_SH,
        "healthcheck": ["CMD", "bash", "-c", KEYCLOAK_HEALTHCHECK],
    }


def render_files(profile: Profile, secrets: Secrets) -> list[RenderedFile]:
    """Every file of the profile, in memory: nothing is written unless all of them render."""
    env = template_environment()
    layout = profile.layout
    project_root_from_state = os.path.relpath(paths.PROJECT_ROOT, layout.root)

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

    compose_auth_config = render(
        "auth_config.ini.j2",
        database_uri=compose_auth_uri,
        oidc=oidc_server_settings(profile, secrets, "docker"),
    )
    compose_mlflow_env = mlflow_environment(profile, secrets, compose_uri, CONTAINER_AUTH_CONFIG)
    compose_mlflow_env[CONTAINER_AUTH_CONFIG_VARIABLE] = compose_auth_config
    local_mlflow_env = mlflow_environment(
        profile, secrets, local_uri, str(layout.local_auth_config)
    )
    keycloak = keycloak_service(profile, secrets)
    keycloak_files = (
        [
            RenderedFile(layout.KEYCLOAK_REALM, keycloak["realm_json"], SECRET_MODE),
            RenderedFile(
                layout.KEYCLOAK_ENTRYPOINT,
                render("keycloak-entrypoint.sh.j2", keycloak=keycloak),
                PUBLIC_MODE,
            ),
        ]
        if keycloak
        else []
    )
    header = f"Rendered by mlflow-stack for profile {profile.name}; do not edit."

    return [
        RenderedFile(
            layout.COMPOSE_FILE,
            render(
                "docker-compose.yml.j2",
                mlflow_environment=compose_mlflow_env,
                mlflow_command=[
                    "mlflow",
                    *mlflow_server_args(profile, "0.0.0.0", CONTAINER_ARTIFACTS),  # noqa: S104
                ],
                project_root=project_root_from_state,
                dockerfile=os.path.relpath(layout.dockerfile, paths.PROJECT_ROOT),
                postgres_init_source=f"./{layout.POSTGRES_INIT_DIR}",
                auth_config_dir=os.path.dirname(CONTAINER_AUTH_CONFIG),
                artifacts_mount=CONTAINER_ARTIFACTS,
                ca_bundle=extra_ca_bundle(profile),
                keycloak=keycloak,
            ),
            SECRET_MODE,
        ),
        RenderedFile(layout.COMPOSE_ENV_FILE, render("compose.env.j2"), PUBLIC_MODE),
        RenderedFile(layout.AUTH_CONFIG, compose_auth_config, SECRET_MODE),
        RenderedFile(layout.DOCKERFILE, render("Dockerfile.j2"), PUBLIC_MODE),
        RenderedFile(
            layout.POSTGRES_INIT_SQL,
            render("postgres-init.sql.j2", keycloak_database=keycloak.get("database", "")),
            PUBLIC_MODE,
        ),
        RenderedFile(
            layout.LOCAL_AUTH_CONFIG,
            render(
                "auth_config.ini.j2",
                database_uri=local_auth_uri,
                oidc=oidc_server_settings(profile, secrets, "local"),
            ),
            SECRET_MODE,
        ),
        RenderedFile(
            layout.LOCAL_MLFLOW_ENV,
            format_env_file(local_mlflow_env, header + "\nEnvironment of the MLflow server."),
            SECRET_MODE,
        ),
        RenderedFile(
            layout.LOCAL_POSTGRESQL_CONF,
            render("postgresql.conf.j2", socket_dir=str(layout.pgsocket)),
            PUBLIC_MODE,
        ),
        RenderedFile(
            layout.SUPERVISORD_CONF,
            render(
                "supervisord.conf.j2",
                layout=layout,
                mlflow_command=[
                    sys.executable,
                    "-m",
                    "mlflow_stack.launch",
                    str(layout.mlflow_pgid),
                    "--",
                    *mlflow_server_args(profile, profile.bind_address, str(layout.artifacts)),
                ],
                oidc_provider_command=dev_provider_command(profile),
            ),
            PUBLIC_MODE,
        ),
        *dev_provider_files(profile, secrets),
        *keycloak_files,
    ]


def render_profile(profile: Profile, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Resolve secrets, render every file, then write them; returns the paths written."""
    secrets, secrets_changed = resolve_secrets(profile, environ)
    files = render_files(profile, secrets)
    if secrets_changed:
        write_secrets(profile, secrets)
    written = []
    for item in files:
        target = profile.layout.root / item.relative_path
        write_atomic(target, item.content, item.mode)
        written.append(target)
    return written
