"""Render a profile into .stack/<profile>/: every file a runtime needs, escaped by named filters."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from mlflow_stack import paths, s3
from mlflow_stack.endpoints import Endpoints
from mlflow_stack.endpoints import database_uri as database_uri
from mlflow_stack.files import (
    PUBLIC_MODE,
    SECRET_MODE,
    format_env_file,
    write_atomic,
)

# The escaping filters live in mlflow_stack.filters; their names stay importable from here.
from mlflow_stack.filters import FILTERS, RenderError
from mlflow_stack.filters import compose_value as compose_value
from mlflow_stack.filters import ini_value as ini_value
from mlflow_stack.filters import postgres_conf_string as postgres_conf_string
from mlflow_stack.filters import shell_word as shell_word
from mlflow_stack.filters import supervisor_arg as supervisor_arg
from mlflow_stack.filters import urlquote as urlquote
from mlflow_stack.filters import yaml_string as yaml_string

# The keycloak service is keycloak_service's; its names stay importable from here.
from mlflow_stack.keycloak_service import (
    CONTAINER_KEYCLOAK_ENTRYPOINT as CONTAINER_KEYCLOAK_ENTRYPOINT,
)
from mlflow_stack.keycloak_service import (
    CONTAINER_KEYCLOAK_IMPORT_DIR as CONTAINER_KEYCLOAK_IMPORT_DIR,
)
from mlflow_stack.keycloak_service import CONTAINER_KEYCLOAK_KC_SH as CONTAINER_KEYCLOAK_KC_SH
from mlflow_stack.keycloak_service import (
    CONTAINER_KEYCLOAK_REALM_VARIABLE as CONTAINER_KEYCLOAK_REALM_VARIABLE,
)
from mlflow_stack.keycloak_service import KEYCLOAK_HEALTHCHECK as KEYCLOAK_HEALTHCHECK
from mlflow_stack.keycloak_service import KEYCLOAK_MANAGEMENT_PORT as KEYCLOAK_MANAGEMENT_PORT
from mlflow_stack.keycloak_service import KEYCLOAK_UID as KEYCLOAK_UID
from mlflow_stack.keycloak_service import keycloak_service
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets, resolve_secrets, write_secrets
from mlflow_stack.sso_settings import dev_provider_command, runs_dev_provider
from mlflow_stack.sso_settings import oidc_server_settings as oidc_server_settings

if TYPE_CHECKING:  # tls imports cryptography, which only TLS profiles need
    from mlflow_stack.tls import TlsFiles

# Inside the MLflow container; the compose file mounts the rendered files and volumes here.
CONTAINER_AUTH_CONFIG = "/mlflow/config/auth_config.ini"
# The image's entry point writes this variable's content to CONTAINER_AUTH_CONFIG
# (mlflow_stack/container/entrypoint.py).
CONTAINER_AUTH_CONFIG_VARIABLE = "MLFLOW_STACK_AUTH_CONFIG_INI"
CONTAINER_ARTIFACTS = "/mlflow/artifacts"
# The audit volume of the compose runtime (mlflow_stack/auth/audit.py writes there).
CONTAINER_AUDIT_DIR = "/mlflow/audit"
# TLS in the container: the PEMs travel like auth_config.ini, into the same private tmpfs.
CONTAINER_TLS_CERT = "/mlflow/config/tls.crt"
CONTAINER_TLS_KEY = "/mlflow/config/tls.key"
CONTAINER_TLS_CERT_VARIABLE = "MLFLOW_STACK_TLS_CERT_PEM"
CONTAINER_TLS_KEY_VARIABLE = "MLFLOW_STACK_TLS_KEY_PEM"
CONTAINER_UID = 10001  # the MLflow image's user (templates/Dockerfile.j2)

# The authorization hook the project ships (bearer tokens + basic auth), see mlflow_stack/auth.
AUTHORIZATION_FUNCTION = "mlflow_stack.auth.hook:authenticate"
# The project's MLflow app (pyproject.toml, entry point mlflow.app): MLflow's basic-auth app
# plus single sign-on and a users/current that lets the UI offer Logout.
APP_NAME = "mlflow-stack"


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


def allowed_host_headers(profile: Profile) -> list[str]:
    headers: list[str] = []
    for host in profile.allowed_hosts:
        for header in (host, f"{host}:{profile.mlflow_port}"):
            if header not in headers:
                headers.append(header)
    return headers


def tls_options(key_file: str, cert_file: str) -> str:
    """uvicorn's TLS options (MLflow splits --uvicorn-opts with shlex)."""
    return f" --ssl-keyfile {shlex.quote(key_file)} --ssl-certfile {shlex.quote(cert_file)}"


def mlflow_server_args(
    profile: Profile, host: str, artifacts_destination: str, tls: str = ""
) -> list[str]:
    """`mlflow server` arguments shared by both runtimes; secrets travel in the environment.
    `tls` is tls_options() where the server speaks HTTPS."""
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
        # httptools (in the lock): uvicorn's C HTTP parser; named so a missing one fails loudly.
        f"--log-level {profile.log_level} --http httptools{tls}",
    ]


def audit_environment(profile: Profile, audit_file: str, to_stdout: bool) -> dict[str, str]:
    """The MLFLOW_STACK_AUDIT_* variables of the server (mlflow_stack/auth/audit.py)."""
    if not profile.audit_log:
        return {}
    from mlflow_stack.auth import audit

    return {
        audit.FILE_VARIABLE: audit_file,
        audit.MAX_BYTES_VARIABLE: str(profile.audit_max_mb * 1024 * 1024),
        audit.BACKUPS_VARIABLE: str(profile.audit_backups),
        audit.STDOUT_VARIABLE: "1" if to_stdout else "0",
    }


def mlflow_environment(
    profile: Profile, secrets: Secrets, backend_store_uri: str, auth_config_path: str
) -> dict[str, str]:
    return {
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
        # mlflow_stack/container/migrate.py: the schemas to head, behind a lock, before start.
        "MLFLOW_STACK_MIGRATE_ON_START": "1",
        "MLFLOW_AUTH_CONFIG_PATH": auth_config_path,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.secret_key,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if profile.job_execution else "false",
        "MLFLOW_LOGGING_LEVEL": profile.log_level.upper(),
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": secrets.kek_passphrase,
        "MLFLOW_CRYPTO_KEK_VERSION": str(profile.kek_version),
        # Read by mlflow_stack.auth.features (USERS_LIST_VARIABLE).
        "MLFLOW_STACK_SERVER_USERS_LIST_ADMINS_ONLY": str(profile.users_list_admins_only).lower(),
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


def dev_provider_files(profile: Profile, secrets: Secrets) -> list[RenderedFile]:
    """The dev provider's config and its keys (made at the first render, then kept)."""
    if not runs_dev_provider(profile):
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


def render_files(profile: Profile, secrets: Secrets) -> list[RenderedFile]:
    """Every file of the profile, in memory: nothing is written unless all of them render."""
    env = template_environment()
    layout = profile.layout
    project_root_from_state = os.path.relpath(paths.PROJECT_ROOT, layout.root)

    endpoints = Endpoints.of(profile)
    compose_uri = endpoints.tracking_uri(secrets, endpoints.compose_database)
    compose_auth_uri = endpoints.auth_database_uri(secrets, endpoints.compose_database)
    local_uri = endpoints.tracking_uri(secrets, endpoints.local_database)
    local_auth_uri = endpoints.auth_database_uri(secrets, endpoints.local_database)
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
    compose_mlflow_env |= audit_environment(
        profile, f"{CONTAINER_AUDIT_DIR}/{StackLayout.AUDIT_FILE}", True
    )
    # S3 credentials by reference: the user's file, mounted as a compose secret (local: its path).
    s3_credentials = s3.credentials_path(profile) if s3.enabled(profile) else None
    compose_mlflow_env |= s3.server_environment(
        profile, s3.COMPOSE_CREDENTIALS if s3_credentials else ""
    )
    server_tls = tls_server_files(profile)
    compose_tls = local_tls = ""
    if server_tls is not None:
        # Like auth_config.ini: the entry point writes them into the server's private tmpfs.
        compose_mlflow_env[CONTAINER_TLS_CERT_VARIABLE] = server_tls.certificate.read_text()
        compose_mlflow_env[CONTAINER_TLS_KEY_VARIABLE] = server_tls.key.read_text()
        compose_tls = tls_options(CONTAINER_TLS_KEY, CONTAINER_TLS_CERT)
        local_tls = tls_options(str(server_tls.key), str(server_tls.certificate))
    local_mlflow_env = mlflow_environment(
        profile, secrets, local_uri, str(layout.local_auth_config)
    ) | audit_environment(profile, str(layout.audit_log), False)
    local_mlflow_env |= s3.server_environment(profile, str(s3_credentials or ""))
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
                    *mlflow_server_args(
                        profile,
                        "0.0.0.0",  # noqa: S104 - inside the container's network only
                        s3.artifacts_destination(profile, CONTAINER_ARTIFACTS),
                        compose_tls,
                    ),
                ],
                project_root=project_root_from_state,
                dockerfile=os.path.relpath(layout.dockerfile, paths.PROJECT_ROOT),
                postgres_init_source=f"./{layout.POSTGRES_INIT_DIR}",
                auth_config_dir=os.path.dirname(CONTAINER_AUTH_CONFIG),
                artifacts_mount=CONTAINER_ARTIFACTS,
                s3_credentials=str(s3_credentials or ""),
                s3_secret=s3.COMPOSE_SECRET,
                audit_mount=CONTAINER_AUDIT_DIR if profile.audit_log else "",
                health_scheme="https" if server_tls is not None else "http",
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
                    *mlflow_server_args(
                        profile,
                        profile.bind_address,
                        s3.artifacts_destination(profile, str(layout.artifacts)),
                        local_tls,
                    ),
                ],
                oidc_provider_command=dev_provider_command(profile),
            ),
            PUBLIC_MODE,
        ),
        *dev_provider_files(profile, secrets),
        *keycloak_files,
    ]


def tls_server_files(profile: Profile) -> TlsFiles | None:
    """The server's certificate and key (made by render_profile for self-signed)."""
    if profile.tls == "off":
        return None
    from mlflow_stack import tls

    if profile.tls == "files":
        return tls.user_files(profile.tls_cert_file, profile.tls_key_file)
    folder = profile.layout.tls_dir
    files = tls.TlsFiles(folder / "server.crt", folder / "server.key", folder / "ca.crt")
    if not (files.certificate.exists() and files.key.exists()):
        raise RenderError(f"profile {profile.name} has no TLS certificate yet: run `invoke render`")
    return files


def render_profile(profile: Profile, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Resolve secrets, render every file, then write them; returns the paths written."""
    secrets, secrets_changed = resolve_secrets(profile, environ)
    if profile.tls == "self-signed":
        from mlflow_stack import tls

        # Kept across renders; issued again only when allowed_hosts change or it nears its end.
        tls.ensure_self_signed(profile.layout.tls_dir, profile.name, profile.allowed_hosts)
    files = render_files(profile, secrets)
    if secrets_changed:
        write_secrets(profile, secrets)
    return write_rendered(profile, files)


def write_rendered(profile: Profile, files: list[RenderedFile]) -> list[Path]:
    """Write `files` under the profile's folder, each atomically at its mode; the paths."""
    written = []
    for item in files:
        target = profile.layout.root / item.relative_path
        write_atomic(target, item.content, item.mode)
        written.append(target)
    return written
