"""Load a profile: base.toml, then <name>.toml, then MLFLOW_STACK_<KEY> variables; validate it."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mlflow_stack import paths, s3
from mlflow_stack.errors import StackError
from mlflow_stack.layout import StackLayout

BASE_FILE = "base.toml"
ENV_PREFIX = "MLFLOW_STACK_"
PROFILE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# MLflow's users table and our CLI accept these; anything else (quotes, spaces, ';') is refused
# early rather than reaching a shell, SQL or a URL.
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
HOST_PATTERN = re.compile(r"[A-Za-z0-9*.:\[\]-]{1,253}")

PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SECRETS_MODES = ("defaults", "generate")
TLS_MODES = ("off", "self-signed", "files")
PORT_KEYS = ("mlflow_port", "postgres_port", "oidc_provider_port")
OIDC_PROVIDERS = ("external", "keycloak", "dev")
# "name:group+group" of oidc_dev_users ("+", not ",": the list itself is comma-separated
# in MLFLOW_STACK_OIDC_DEV_USERS)
DEV_USER = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.@-]{0,63}):([A-Za-z0-9_.+/-]*)")
IDENTIFIER_KEYS = ("db_user", "tracking_database", "auth_database")
SQL_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Profile:
    """One validated profile: its name and every key of base.toml with its effective value.

    The fields are base.toml's keys, one for one (a unit test holds them to it); a list there
    is a tuple here, so the whole object is immutable.
    """

    name: str
    # Network
    bind_address: str
    mlflow_port: int
    postgres_port: int
    publish_postgres: bool
    allowed_hosts: tuple[str, ...]
    tls: str
    tls_cert_file: str
    tls_key_file: str
    # MLflow server
    workers: int
    log_level: str
    audit_log: bool
    audit_max_mb: int
    audit_backups: int
    default_permission: str
    admin_username: str
    job_execution: bool
    kek_version: int
    users_list_admins_only: bool
    # Storage
    artifacts_destination: str
    db_user: str
    tracking_database: str
    auth_database: str
    # Artifacts on S3-compatible storage (mlflow_stack/s3.py)
    artifacts_store: str
    s3_bucket: str
    s3_prefix: str
    s3_endpoint_url: str
    s3_region: str
    s3_credentials_file: str
    k8s_s3_credentials_secret: str
    # Images (compose runtime)
    postgres_image: str
    python_image: str
    mlflow_image: str
    keycloak_image: str
    mlflow_memory_limit: str
    postgres_memory_limit: str
    keycloak_memory_limit: str
    cpu_limit: str
    ca_bundle: str
    compose_project: str
    guide_container_names: bool
    # Local runtime
    postgres_bin_dir: str
    postgres_os_user: str
    # Single sign-on (OpenID Connect)
    oidc_enabled: bool
    oidc_provider: str
    oidc_issuer: str
    oidc_discovery_url: str
    oidc_client_id: str
    oidc_api_audience: str
    oidc_scopes: tuple[str, ...]
    oidc_username_claim: str
    oidc_groups_claim: str
    oidc_login_group: str
    oidc_admin_group: str
    oidc_admin_from_tokens: bool
    oidc_passwords: bool
    oidc_session_hours: int
    oidc_access_token_seconds: int
    oidc_machine_client_id: str
    oidc_provider_port: int
    oidc_dev_users: tuple[str, ...]
    # Kubernetes (render --target kubernetes)
    k8s_namespace: str
    k8s_image: str
    k8s_replicas: int
    k8s_max_replicas: int
    k8s_cpu_request: str
    k8s_ingress_host: str
    k8s_ingress_class: str
    k8s_tls_secret: str
    k8s_ingress_namespace: str
    k8s_postgres_host: str
    k8s_postgres_port: int
    k8s_postgres_sslmode: str
    k8s_artifacts_size: str
    k8s_artifacts_access_mode: str
    k8s_storage_class: str
    # Secrets
    secrets_mode: str
    refuse_default_passwords: bool

    @property
    def compose_project_name(self) -> str:
        """The Compose project of this profile's stack: compose_project, else mlflow-<name>."""
        return self.compose_project or f"mlflow-{self.name}"

    @property
    def state_dir(self) -> Path:
        return paths.profile_dir(self.name)

    @property
    def layout(self) -> StackLayout:
        """Every path under state_dir, by name."""
        return StackLayout.of(self)


# Every key a profile file may set: the fields after `name`.
SETTING_KEYS = tuple(f.name for f in fields(Profile) if f.name != "name")


def available_profiles(profiles_dir: Path | None = None) -> list[str]:
    folder = profiles_dir or paths.profiles_dir()
    return sorted(p.stem for p in folder.glob("*.toml") if p.name != BASE_FILE)


def check_profile_name(name: str, profiles_dir: Path | None = None) -> None:
    if not PROFILE_NAME.fullmatch(name or ""):
        raise StackError(
            f"invalid profile name {name!r}: use lower-case letters, digits, '-' and '_' (no paths)"
        )
    existing = available_profiles(profiles_dir)
    if name not in existing:
        raise StackError(f"unknown profile {name!r}; profiles: {', '.join(existing)}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(f"{path.name}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}") from None


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", str: "a string", list: "a list of strings"}
    return names[type(value)]


def _check_type(source: str, key: str, value: Any, default: Any) -> None:
    if isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        # bool is an int in Python; a port of `true` must still be refused.
        ok = type(value) is type(default)
    if not ok:
        raise StackError(
            f"{source}: {key} must be {_type_name(default)}, got {type(value).__name__} {value!r}"
        )


def _parse_env_value(var: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise StackError(f"{var} must be true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw.strip())
        except ValueError:
            raise StackError(f"{var} must be an integer, got {raw!r}") from None
    if isinstance(default, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _validate_oidc(name: str, settings: dict[str, Any]) -> None:
    if settings["oidc_provider"] not in OIDC_PROVIDERS:
        raise StackError(
            f"profile {name}: oidc_provider = {settings['oidc_provider']!r}; allowed: "
            f"{', '.join(OIDC_PROVIDERS)}"
        )
    if settings["oidc_api_audience"] == settings["oidc_client_id"]:
        raise StackError(
            f"profile {name}: oidc_api_audience must differ from oidc_client_id (an ID token's "
            "audience is the client: it must never pass for an access token)"
        )
    if not 1 <= settings["oidc_session_hours"] <= 720:
        raise StackError(f"profile {name}: oidc_session_hours must be 1-720")
    # Below 10 s a token can expire between its grant and its first request.
    if not 10 <= settings["oidc_access_token_seconds"] <= 86400:
        raise StackError(f"profile {name}: oidc_access_token_seconds must be 10-86400")
    if settings["oidc_provider_port"] in (settings["mlflow_port"], settings["postgres_port"]):
        raise StackError(f"profile {name}: oidc_provider_port collides with another port")
    for entry in settings["oidc_dev_users"]:
        if not DEV_USER.fullmatch(entry):
            raise StackError(
                f"profile {name}: oidc_dev_users entry {entry!r} is not like 'alice:group+group'"
            )
    if settings["oidc_enabled"] and settings["oidc_provider"] == "external":
        issuer = settings["oidc_issuer"]
        if not re.fullmatch(r"https?://[^\s]+", issuer):
            raise StackError(
                f"profile {name}: oidc_provider external needs oidc_issuer, the provider's "
                "issuer URL (MLFLOW_STACK_OIDC_ISSUER)"
            )
    if settings["oidc_enabled"] and "openid" not in settings["oidc_scopes"]:
        raise StackError(f"profile {name}: oidc_scopes must include openid")


# Kubernetes object names: a DNS-1123 label (namespaces) or subdomain (most other objects).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany")


def _validate_k8s(name: str, settings: dict[str, Any]) -> None:
    for key in ("k8s_namespace", "k8s_ingress_namespace"):
        if not DNS_LABEL.fullmatch(settings[key]):
            raise StackError(f"profile {name}: {key} {settings[key]!r} is not a DNS-1123 label")
    for key in ("k8s_ingress_host", "k8s_ingress_class", "k8s_tls_secret", "k8s_postgres_host"):
        if not DNS_SUBDOMAIN.fullmatch(settings[key]):
            raise StackError(
                f"profile {name}: {key} {settings[key]!r} is not a DNS-1123 name (lower case)"
            )
    if settings["k8s_storage_class"] and not DNS_SUBDOMAIN.fullmatch(settings["k8s_storage_class"]):
        raise StackError(f"profile {name}: k8s_storage_class is not a DNS-1123 name")
    secret = settings["k8s_s3_credentials_secret"]
    if secret and not DNS_SUBDOMAIN.fullmatch(secret):
        raise StackError(
            f"profile {name}: k8s_s3_credentials_secret {secret!r} is not a DNS-1123 name"
        )
    if settings["k8s_image"] and not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", settings["k8s_image"]
    ):
        raise StackError(f"profile {name}: k8s_image {settings['k8s_image']!r} is not an image")
    replicas, most = settings["k8s_replicas"], settings["k8s_max_replicas"]
    if not 1 <= replicas <= 100:
        raise StackError(f"profile {name}: k8s_replicas = {replicas} (allowed: 1-100)")
    if most and not replicas < most <= 100:
        raise StackError(
            f"profile {name}: k8s_max_replicas = {most} must be 0 (no autoscaler) or "
            f"above k8s_replicas ({replicas}) and at most 100"
        )
    if not re.fullmatch(r"[1-9][0-9]*m|[0-9]+(\.[0-9]+)?", settings["k8s_cpu_request"]):
        raise StackError(f"profile {name}: k8s_cpu_request is not like 250m or 0.5")
    if not re.fullmatch(r"[1-9][0-9]*[KMGT]i", settings["k8s_artifacts_size"]):
        raise StackError(f"profile {name}: k8s_artifacts_size is not like 10Gi")
    if not 1 <= settings["k8s_postgres_port"] <= 65535:
        raise StackError(f"profile {name}: k8s_postgres_port is out of range (1-65535)")
    choices = {"k8s_postgres_sslmode": SSLMODES, "k8s_artifacts_access_mode": ACCESS_MODES}
    for key, allowed in choices.items():
        if settings[key] not in allowed:
            raise StackError(
                f"profile {name}: {key} = {settings[key]!r}; allowed: {', '.join(allowed)}"
            )


def _validate(name: str, settings: dict[str, Any]) -> None:
    project = settings["compose_project"]
    if project and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", project):
        raise StackError(
            f"profile {name}: compose_project {project!r} must be lower-case letters, digits, "
            "'-' and '_' (Compose's rule for project names)"
        )
    for key in PORT_KEYS:
        port = settings[key]
        if not 1 <= port <= 65535:
            raise StackError(f"profile {name}: {key} = {port} is out of range (1-65535)")
    if settings["mlflow_port"] == settings["postgres_port"]:
        raise StackError(
            f"profile {name}: mlflow_port and postgres_port are both {settings['mlflow_port']}"
        )
    _validate_oidc(name, settings)
    _validate_k8s(name, settings)
    s3.validate(name, settings)
    if not 1 <= settings["kek_version"] <= 1_000_000:
        raise StackError(f"profile {name}: kek_version must be 1 or more")
    if not 1 <= settings["audit_max_mb"] <= 10_000:
        raise StackError(f"profile {name}: audit_max_mb = {settings['audit_max_mb']} (1-10000)")
    if not 0 <= settings["audit_backups"] <= 1000:
        raise StackError(f"profile {name}: audit_backups = {settings['audit_backups']} (0-1000)")
    if not 1 <= settings["workers"] <= 32:
        raise StackError(f"profile {name}: workers = {settings['workers']} (allowed: 1-32)")
    choices = {
        "default_permission": PERMISSIONS,
        "log_level": LOG_LEVELS,
        "secrets_mode": SECRETS_MODES,
        "tls": TLS_MODES,
    }
    for key, allowed in choices.items():
        if settings[key] not in allowed:
            raise StackError(
                f"profile {name}: {key} = {settings[key]!r}; allowed: {', '.join(allowed)}"
            )
    if not USERNAME.fullmatch(settings["admin_username"]):
        raise StackError(
            f"profile {name}: admin_username {settings['admin_username']!r} may hold only "
            "letters, digits, '_', '.', '@' and '-'"
        )
    for key in IDENTIFIER_KEYS:
        if not SQL_IDENTIFIER.fullmatch(settings[key]):
            raise StackError(
                f"profile {name}: {key} {settings[key]!r} must be a lower-case SQL identifier"
            )
    if settings["tls"] == "files" and not (settings["tls_cert_file"] and settings["tls_key_file"]):
        raise StackError(f'profile {name}: tls = "files" needs tls_cert_file and tls_key_file')
    if not settings["allowed_hosts"]:
        raise StackError(f"profile {name}: allowed_hosts is empty")
    for host in settings["allowed_hosts"]:
        if not HOST_PATTERN.fullmatch(host):
            raise StackError(f"profile {name}: allowed_hosts entry {host!r} is not a host name")
    for key in ("mlflow_memory_limit", "postgres_memory_limit", "keycloak_memory_limit"):
        if not re.fullmatch(r"[1-9][0-9]*[kmg]?", settings[key]):
            raise StackError(f"profile {name}: {key} {settings[key]!r} is not like 512m or 2g")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", settings["cpu_limit"]) or not float(
        settings["cpu_limit"]
    ):
        raise StackError(f"profile {name}: cpu_limit {settings['cpu_limit']!r} is not a number")
    for key in ("bind_address", "postgres_os_user"):
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", settings[key]):
            raise StackError(f"profile {name}: {key} {settings[key]!r} is not valid")


def load_profile(
    name: str,
    environ: Mapping[str, str] | None = None,
    profiles_dir: Path | None = None,
) -> Profile:
    """The merged, validated profile `name`; raises StackError naming the first problem."""
    folder = profiles_dir or paths.profiles_dir()
    environ = os.environ if environ is None else environ
    check_profile_name(name, folder)
    defaults = _read_toml(folder / BASE_FILE)
    _check_base_keys(defaults)
    settings = dict(defaults)
    overrides = _read_toml(folder / f"{name}.toml")
    for key, value in overrides.items():
        if key not in defaults:
            raise StackError(f"{name}.toml: unknown key {key!r} (every key is listed in base.toml)")
        _check_type(f"{name}.toml", key, value, defaults[key])
        settings[key] = value
    for key, default in defaults.items():
        var = ENV_PREFIX + key.upper()
        if var in environ:
            settings[key] = _parse_env_value(var, environ[var], default)
    _validate(name, settings)
    frozen: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()
    }
    return Profile(name=name, **frozen)


def _check_base_keys(defaults: Mapping[str, Any]) -> None:
    # A base.toml (MLFLOW_STACK_PROFILES_DIR may name another) must document exactly the keys
    # Profile has: one missing or extra would otherwise surface as a TypeError.
    missing = [key for key in SETTING_KEYS if key not in defaults]
    extra = [key for key in defaults if key not in SETTING_KEYS]
    if missing or extra:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unknown {', '.join(extra)}"] if extra else []
        raise StackError(f"{BASE_FILE}: {'; '.join(problems)}")
