"""The dev OpenID Provider of a profile's local runtime: its config file, its keys, where it is
installed and how supervisord runs it.

It runs where ``oidc_profile.runs_dev_provider(profile, "local")``: for ``oidc_provider = dev``,
and in Keycloak's place (the local runtime has no JVM) with the clients, users and groups the
realm would have. Render writes its two files (the layout's oidc_provider_config and
oidc_provider_keys); the local runtime installs it (oidc_provider_install) and runs it.
"""

from __future__ import annotations

import fcntl
import json
import secrets as random_source
from typing import Any

from mlflow_stack import oidc_dev, oidc_profile
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets

PROGRAM = "oidc-provider"  # supervisord's program, the service of status/logs/restart
# The resource scope the provider grants on the API audience (oidc_dev's default).
API_SCOPE = "mlflow"
# Keycloak names a client's service account like this; the dev provider does the same, so a
# machine is the same MLflow user whichever of the two issued its token.
SERVICE_ACCOUNT_PREFIX = "service-account-"
ENV_BINARY = "/usr/bin/env"


def service_account_username(profile: Profile) -> str:
    return SERVICE_ACCOUNT_PREFIX + profile.oidc_machine_client_id


def _keys_are_valid(stored: Any) -> bool:
    return (
        isinstance(stored, dict)
        and isinstance(stored.get("jwks"), dict)
        and isinstance(stored["jwks"].get("keys"), list)
        and bool(stored["jwks"]["keys"])
        and isinstance(stored.get("cookie_keys"), list)
        and bool(stored["cookie_keys"])
    )


def provider_keys(profile: Profile) -> dict[str, Any]:
    """The stored keys, else new ones; for render alone (the only step that makes secrets)."""
    path = profile.layout.oidc_provider_keys
    if not path.exists():
        return {
            "jwks": oidc_dev.generate_provider_keys(),
            "cookie_keys": [random_source.token_urlsafe(32)],
        }
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = None
    if not _keys_are_valid(stored):
        # Silently replacing them would invalidate every token out there without a word.
        raise StackError(f"{path} is not a key file of the dev OpenID Provider: delete it")
    result: dict[str, Any] = stored
    return result


def format_keys(keys: dict[str, Any]) -> str:
    return json.dumps(keys, indent=2, sort_keys=True) + "\n"


def _with_localhost(url: str) -> list[str]:
    """The URL and its twin on the other loopback name: a browser may use either."""
    variants = [url]
    for one, other in (("//127.0.0.1:", "//localhost:"), ("//localhost:", "//127.0.0.1:")):
        if one in url:
            variants.append(url.replace(one, other, 1))
    return variants


def provider_config(profile: Profile, secrets: Secrets, keys: dict[str, Any]) -> dict[str, Any]:
    """The provider's config file (see oidc_dev's docstring for its shape)."""
    issuer = oidc_profile.issuer(profile, "local")
    return {
        "issuer": issuer,
        "host": "127.0.0.1",
        "port": profile.oidc_provider_port,
        "jwks": keys["jwks"],
        "cookie_keys": keys["cookie_keys"],
        "api": {
            "audience": profile.oidc_api_audience,
            "scope": API_SCOPE,
            "access_token_ttl": profile.oidc_access_token_seconds,
        },
        "id_token_ttl": profile.oidc_access_token_seconds,
        "session_ttl": profile.oidc_session_hours * 3600,
        "browser_client": {
            "client_id": profile.oidc_client_id,
            "client_secret": secrets.oidc_client_secret,
            "redirect_uris": _with_localhost(oidc_profile.redirect_uri(profile)),
            "post_logout_redirect_uris": _with_localhost(
                oidc_profile.post_logout_redirect_uri(profile)
            ),
        },
        "service_clients": [
            {
                "client_id": profile.oidc_machine_client_id,
                "client_secret": secrets.oidc_machine_secret,
                "username": service_account_username(profile),
                "groups": list(oidc_profile.machine_groups(profile)),
            }
        ],
        "users": [
            {
                "username": user.username,
                "password": secrets.oidc_dev_user_password,
                "groups": list(user.groups),
                # As the Keycloak realm has them (keycloak_realm.dev_user): the same people.
                "email": f"{user.username.replace('@', '.')}@example.test",
                "name": f"{user.username.capitalize()} Dev",
            }
            for user in oidc_profile.dev_users(profile)
        ],
    }


def supervisor_command(profile: Profile) -> list[str]:
    """argv of supervisord's program: `env -i` first, so that the provider gets none of the
    secrets in supervisord's environment (MLflow's), only PATH and NODE_ENV."""
    environment = [f"{key}={value}" for key, value in oidc_dev.provider_environment().items()]
    return [
        ENV_BINARY,
        "-i",
        *environment,
        *oidc_dev.provider_command(
            profile.layout.oidc_provider_install, profile.layout.oidc_provider_config
        ),
    ]


def install(profile: Profile) -> bool:
    """Install (or check) the shared npm tree; whether npm ran. A lock keeps two profiles
    started at once from running `npm ci` in the same folder."""
    target = profile.layout.oidc_provider_install
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return oidc_dev.install_provider(target)


def discovery_url(profile: Profile) -> str:
    return oidc_profile.issuer(profile, "local") + oidc_profile.DISCOVERY_SUFFIX


def is_healthy(profile: Profile, timeout: float = 2) -> bool:
    """The discovery document answers and names this profile's issuer."""
    import requests

    try:
        response = requests.get(discovery_url(profile), timeout=timeout)
        document = response.json() if response.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return False
    return isinstance(document, dict) and document.get("issuer") == oidc_profile.issuer(
        profile, "local"
    )
