"""The server's single-sign-on settings: the [mlflow_stack.oidc] section of auth_config.ini.

Rendered by mlflow-stack next to MLflow's own [mlflow] section (the file is 0600, and in the
container a private tmpfs). Read once per process, on first use, never at import.
"""

from __future__ import annotations

import configparser
import functools
import os
from dataclasses import dataclass

SECTION = "mlflow_stack.oidc"


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    discovery_url: str
    client_id: str
    client_secret: str
    api_audience: str
    scopes: str
    username_claim: str
    groups_claim: str
    login_group: str
    admin_group: str
    admin_from_tokens: bool
    passwords: bool
    session_seconds: int
    redirect_uri: str
    post_logout_redirect_uri: str
    profile_admin: str

    @property
    def secure_cookies(self) -> bool:
        return self.redirect_uri.startswith("https://")


def parse_oidc_config(parser: configparser.ConfigParser) -> OidcConfig | None:
    if not parser.has_section(SECTION):
        return None
    section = parser[SECTION]
    return OidcConfig(
        issuer=section["issuer"],
        discovery_url=section["discovery_url"],
        client_id=section["client_id"],
        client_secret=section["client_secret"],
        api_audience=section["api_audience"],
        scopes=section["scopes"],
        username_claim=section["username_claim"],
        groups_claim=section["groups_claim"],
        login_group=section.get("login_group", ""),
        admin_group=section.get("admin_group", ""),
        admin_from_tokens=section.getboolean("admin_from_tokens", False),
        passwords=section.getboolean("passwords", True),
        session_seconds=section.getint("session_seconds", 8 * 3600),
        redirect_uri=section["redirect_uri"],
        post_logout_redirect_uri=section["post_logout_redirect_uri"],
        profile_admin=section["profile_admin"],
    )


@functools.cache
def oidc_config() -> OidcConfig | None:
    """This server's settings, or None where single sign-on is off."""
    path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if not path:
        return None
    parser = configparser.ConfigParser()
    parser.read(path)
    return parse_oidc_config(parser)
