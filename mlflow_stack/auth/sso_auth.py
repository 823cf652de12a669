"""The hook's single-sign-on paths: a browser session cookie, or a provider's JWT access token.

Each costs one indexed query when the identity is known (a JWT adds one signature check); an
identity's first use, or an admin change its groups ask for, writes once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Request
from werkzeug.datastructures import Authorization

from mlflow_stack.auth.auth_db import AuthDatabase
from mlflow_stack.auth.idp import Provider
from mlflow_stack.auth.jwt_access import TokenRefused, verify_access_token
from mlflow_stack.auth.oidc_config import OidcConfig, oidc_config
from mlflow_stack.auth.sso import SESSION_COOKIE, is_logout_mark
from mlflow_stack.auth.sso_store import IdentityDeleted, SsoStore
from mlflow_stack.auth.token_format import utcnow


@dataclass(frozen=True)
class SingleSignOn:
    config: OidcConfig
    provider: Provider
    store: SsoStore


_lock = threading.Lock()
_context: list[SingleSignOn | None] = []


def single_sign_on(database: AuthDatabase) -> SingleSignOn | None:
    """This process's single sign-on, or None where the profile has none (decided once)."""
    if not _context:
        with _lock:
            if not _context:
                config = oidc_config()
                _context.append(
                    None
                    if config is None
                    else SingleSignOn(config, Provider(config), SsoStore(database))
                )
    return _context[0]


def authenticate_session(req: Request, sso: SingleSignOn) -> Authorization | None:
    value = req.cookies.get(SESSION_COOKIE)
    if not value or is_logout_mark(value):
        return None
    user = sso.store.session_user(value, utcnow())
    if user is None:
        return None
    return Authorization("bearer", {"username": user.username})


def authenticate_jwt(token: str, sso: SingleSignOn) -> Authorization | None:
    """The MLflow user of a valid access token; KeysUnavailable propagates (a 503)."""
    try:
        verified = verify_access_token(token, sso.provider.settings, sso.provider.keys())
    except TokenRefused:
        return None
    config = sso.config
    if config.login_group and config.login_group not in verified.groups:
        return None
    make_admin = None
    if config.admin_from_tokens and config.admin_group:
        make_admin = config.admin_group in verified.groups
    try:
        known = sso.store.identity_user(verified.issuer, verified.subject)
        if known is not None and (make_admin is None or make_admin == known[1]):
            return Authorization("bearer", {"username": known[0]})
        username, _ = sso.store.bind_identity(
            verified.issuer,
            verified.subject,
            verified.username,
            utcnow(),
            reserved=frozenset({config.profile_admin}),
            make_admin=make_admin,
        )
    except IdentityDeleted:
        return None
    return Authorization("bearer", {"username": username})
