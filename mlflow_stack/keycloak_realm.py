"""The Keycloak realm of a profile with `oidc_provider = "keycloak"` (docker runtime), as the
realm representation Keycloak's `--import-realm` reads.

The realm is built as a dict and serialized by `json.dumps`, never templated as text: every
profile value and secret is escaped by construction, whatever characters it holds.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from mlflow_stack import oidc_profile
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets

# Keycloak's own database in the stack's PostgreSQL (created by postgres-init).
DATABASE = "keycloak"
# Keycloak's default username claim; its service accounts carry service-account-<client id>.
KEYCLOAK_USERNAME_CLAIM = "preferred_username"
# Like the dev provider's users (mlflow_stack/oidc_dev.py): a reserved domain, never mailed.
DEV_USER_EMAIL_DOMAIN = "example.test"
OIDC = "openid-connect"


def groups(profile: Profile) -> list[str]:
    """The login and admin groups and every group a dev user is in, each once, in order."""
    names = [profile.oidc_login_group, profile.oidc_admin_group]
    for user in oidc_profile.dev_users(profile):
        names.extend(user.groups)
    unique = list(dict.fromkeys(name for name in names if name))
    for name in unique:
        if "/" in name:
            # Keycloak names a group by its path: a '/' would make it a subgroup.
            raise StackError(f"profile {profile.name}: Keycloak group {name!r} contains '/'")
    return unique


def redirect_uris(profile: Profile) -> list[str]:
    """The server's callback, and the same on localhost for a browser that uses that name."""
    uri = oidc_profile.redirect_uri(profile)
    return list(dict.fromkeys([uri, uri.replace("://127.0.0.1:", "://localhost:", 1)]))


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _token_claim(claim: str, *, id_token: bool, userinfo: bool) -> dict[str, str]:
    return {
        "claim.name": claim,
        "access.token.claim": "true",
        "id.token.claim": str(id_token).lower(),
        "userinfo.token.claim": str(userinfo).lower(),
        "introspection.token.claim": "true",
    }


def protocol_mappers(profile: Profile) -> list[dict[str, Any]]:
    """The claims MLflow reads, on every client of the realm."""
    mappers: list[dict[str, Any]] = [
        {
            "name": "groups",
            "protocol": OIDC,
            "protocolMapper": "oidc-group-membership-mapper",
            # Names, not paths: the profile's groups are compared by name.
            "config": {
                "full.path": "false",
                **_token_claim(profile.oidc_groups_claim, id_token=True, userinfo=True),
            },
        },
        {
            "name": "api-audience",
            "protocol": OIDC,
            "protocolMapper": "oidc-audience-mapper",
            # Only access tokens: an ID token's audience stays the client alone.
            "config": {
                "included.custom.audience": profile.oidc_api_audience,
                "access.token.claim": "true",
                "id.token.claim": "false",
                "introspection.token.claim": "true",
            },
        },
    ]
    if profile.oidc_username_claim != KEYCLOAK_USERNAME_CLAIM:
        # Keycloak puts the username in preferred_username only; a profile naming another
        # claim gets it there too.
        mappers.append(
            {
                "name": "username",
                "protocol": OIDC,
                "protocolMapper": "oidc-usermodel-property-mapper",
                "config": {
                    "user.attribute": "username",
                    "jsonType.label": "String",
                    **_token_claim(profile.oidc_username_claim, id_token=True, userinfo=True),
                },
            }
        )
    return mappers


def browser_client(profile: Profile, secrets: Secrets) -> dict[str, Any]:
    """The confidential client of the browser login: authorization code with PKCE only."""
    uris = redirect_uris(profile)
    return {
        "clientId": profile.oidc_client_id,
        "name": "MLflow",
        "enabled": True,
        "protocol": OIDC,
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": secrets.oidc_client_secret,
        "standardFlowEnabled": True,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": False,
        "redirectUris": uris,
        "webOrigins": list(dict.fromkeys(_origin(uri) for uri in uris)),
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "post.logout.redirect.uris": oidc_profile.post_logout_redirect_uri(profile),
            "oauth2.device.authorization.grant.enabled": "false",
            "oidc.ciba.grant.enabled": "false",
        },
        "protocolMappers": protocol_mappers(profile),
    }


def machine_client(profile: Profile, secrets: Secrets) -> dict[str, Any]:
    """The client machines use for the client-credentials grant (a service account)."""
    return {
        "clientId": profile.oidc_machine_client_id,
        "name": "MLflow machines",
        "enabled": True,
        "protocol": OIDC,
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": secrets.oidc_machine_secret,
        "standardFlowEnabled": False,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        # Keycloak creates the service account user itself (service-account-<client id>).
        "serviceAccountsEnabled": True,
        "attributes": {
            "oauth2.device.authorization.grant.enabled": "false",
            "oidc.ciba.grant.enabled": "false",
        },
        "protocolMappers": protocol_mappers(profile),
    }


def dev_user(profile: Profile, secrets: Secrets, user: oidc_profile.DevUser) -> dict[str, Any]:
    if user.username != user.username.lower():
        # Keycloak keeps user names in lower case: tokens would name another user.
        raise StackError(
            f"profile {profile.name}: oidc_dev_users name {user.username!r} must be lower case"
        )
    return {
        "username": user.username,
        "enabled": True,
        # Every attribute the default user profile requires: without them Keycloak stops the
        # first login at an "update your account" form.
        # The dev provider's address, but valid for a user name holding an '@'.
        "email": f"{user.username.replace('@', '.')}@{DEV_USER_EMAIL_DOMAIN}",
        "emailVerified": True,
        "firstName": user.username.capitalize(),
        "lastName": "Dev",
        "credentials": [
            {"type": "password", "value": secrets.oidc_dev_user_password, "temporary": False}
        ],
        "groups": [f"/{group}" for group in user.groups],
    }


def realm(profile: Profile, secrets: Secrets) -> dict[str, Any]:
    """The whole realm of the profile (its secrets included)."""
    representation: dict[str, Any] = {
        "realm": oidc_profile.KEYCLOAK_REALM,
        "enabled": True,
        # HTTPS for every address but loopback and private ones (the compose network).
        "sslRequired": "external",
        "registrationAllowed": False,
        "resetPasswordAllowed": False,
        "rememberMe": False,
        "bruteForceProtected": True,
        "accessTokenLifespan": profile.oidc_access_token_seconds,
        "groups": [{"name": name} for name in groups(profile)],
        "clients": [browser_client(profile, secrets), machine_client(profile, secrets)],
    }
    users = [dev_user(profile, secrets, user) for user in oidc_profile.dev_users(profile)]
    if oidc_profile.machine_groups(profile):
        # The machine client's service account, in the login group that gates its tokens too.
        users.append(
            {
                "username": f"service-account-{profile.oidc_machine_client_id}",
                "enabled": True,
                "serviceAccountClientId": profile.oidc_machine_client_id,
                "groups": list(oidc_profile.machine_groups(profile)),
            }
        )
    if users:
        representation["users"] = users
    return representation


def realm_json(profile: Profile, secrets: Secrets) -> str:
    """The realm as the file Keycloak imports; stable bytes for the same profile and secrets."""
    return json.dumps(realm(profile, secrets), indent=2, ensure_ascii=False) + "\n"
