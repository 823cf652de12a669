"""What a profile's single sign-on means in URLs and names, for the server, the providers the
stack runs itself, and the clients: derived here once, from the profile alone."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_stack.health import mlflow_url
from mlflow_stack.profile import DEV_USER, Profile

KEYCLOAK_REALM = "mlflow"
KEYCLOAK_SERVICE = "keycloak"
KEYCLOAK_INTERNAL_PORT = 8080
CALLBACK_PATH = "/oidc/callback"
LOGGED_OUT_PATH = "/oidc/logged-out"
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class DevUser:
    username: str
    groups: tuple[str, ...]


def dev_users(profile: Profile) -> list[DevUser]:
    users = []
    for entry in profile.oidc_dev_users:
        match = DEV_USER.fullmatch(entry)
        assert match is not None  # noqa: S101 - load_profile validated every entry
        groups = tuple(g for g in match.group(2).split("+") if g)
        users.append(DevUser(match.group(1), groups))
    return users


def provider_url(profile: Profile) -> str:
    """Where a browser on this machine reaches the keycloak or dev provider."""
    return f"http://127.0.0.1:{profile.oidc_provider_port}"


def runs_keycloak(profile: Profile, runtime: str) -> bool:
    return profile.oidc_enabled and profile.oidc_provider == "keycloak" and runtime == "docker"


def runs_dev_provider(profile: Profile, runtime: str) -> bool:
    """The local runtime runs the dev provider for `dev`, and in Keycloak's place (no JVM)."""
    return (
        profile.oidc_enabled and runtime == "local" and profile.oidc_provider in ("dev", "keycloak")
    )


def issuer(profile: Profile, runtime: str) -> str:
    """The issuer as tokens carry it (`iss`), which a browser and the server both accept."""
    if profile.oidc_provider == "external":
        return profile.oidc_issuer.rstrip("/")
    if runs_keycloak(profile, runtime):
        return f"{provider_url(profile)}/realms/{KEYCLOAK_REALM}"
    return provider_url(profile)


def discovery_url(profile: Profile, runtime: str) -> str:
    """Where the MLflow server reads the discovery document (a compose service name inside
    the compose network, where 127.0.0.1 is the container itself)."""
    if profile.oidc_discovery_url:
        return profile.oidc_discovery_url
    if runs_keycloak(profile, runtime):
        return (
            f"http://{KEYCLOAK_SERVICE}:{KEYCLOAK_INTERNAL_PORT}/realms/{KEYCLOAK_REALM}"
            f"{DISCOVERY_SUFFIX}"
        )
    return issuer(profile, runtime) + DISCOVERY_SUFFIX


def redirect_uri(profile: Profile) -> str:
    return mlflow_url(profile) + CALLBACK_PATH


def post_logout_redirect_uri(profile: Profile) -> str:
    return mlflow_url(profile) + LOGGED_OUT_PATH


def machine_groups(profile: Profile) -> tuple[str, ...]:
    """The groups of the machine client's service account in the providers the stack runs: the
    login group, which gates machine tokens as it gates people."""
    return (profile.oidc_login_group,) if profile.oidc_login_group else ()
