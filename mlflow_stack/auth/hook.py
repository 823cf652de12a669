"""MLflow ``authorization_function``: basic auth, the project's access tokens (Bearer mlst_…)
and, where the profile has single sign-on, browser sessions and the provider's JWTs.

auth_config.ini::

    [mlflow]
    authorization_function = mlflow_stack.auth.hook:authenticate

MLflow calls ``authenticate()`` with no arguments inside a Flask request context, on
both of its paths: Flask's ``before_request`` (REST and /ajax-api routes) and the
FastAPI bridge (/gateway, /v1/traces and other native FastAPI routes), which builds a
synthetic Flask request from the ASGI headers. It returns a werkzeug ``Authorization``
whose ``username`` MLflow then applies its permission checks to, or MLflow's 401.

Within a request MLflow asks 2-4 times (before_request, sender_is_admin, after-request
filters), so the answer is memoized per request. Across requests nothing is cached
except "this password matched this stored hash", keyed so it cannot outlive a password
change or a deleted user (see password_cache).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Request, Response, g, make_response, request
from werkzeug.datastructures import Authorization, Headers

from mlflow_stack.auth.audit import REQUEST_IDENTITY
from mlflow_stack.auth.auth_db import AuthDatabase, AuthDatabaseUnavailable
from mlflow_stack.auth.jwt_access import KeysUnavailable
from mlflow_stack.auth.password_cache import VerifiedPasswords
from mlflow_stack.auth.permissions_sql import GrantRow
from mlflow_stack.auth.sso import LOGIN, is_browser_navigation, redirect_to
from mlflow_stack.auth.sso_auth import (
    SingleSignOn,
    authenticate_jwt,
    authenticate_session,
    single_sign_on,
)
from mlflow_stack.auth.token_format import ACTIVE, hash_token, looks_like_token, token_state, utcnow

_logger = logging.getLogger(__name__)

# Mirrors of MLflow internals (mlflow.server.auth), copied rather than imported so that
# importing this module, e.g. in tests, does not initialise MLflow's auth app.
_GATEWAY_PATH_PREFIX = "/gateway/"
_GATEWAY_AUTH_HEADER = "X-MLflow-Authorization"  # mlflow.gateway.constants
_STATIC_PREFIX_ENV = "_MLFLOW_STATIC_PREFIX"  # mlflow.server.handlers.STATIC_PREFIX_ENV_VAR
_INTERNAL_GATEWAY_TOKEN_ENV = "_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"  # noqa: S105 (a name)
# The admin password older MLflow releases shipped (GHSA-gq3w-7jj3-x7gr); MLflow's
# default hook refuses it for admins, so this one does too.
_LEGACY_ADMIN_PASSWORD = "password1234"  # noqa: S105 (public, refused)
_UNAUTHENTICATED_TEXT = (
    "You are not authenticated. Please see "
    "https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow "
    "on how to authenticate."
)

_MEMO_ATTRIBUTE = "_mlflow_stack_authorization"
_METHOD_ATTRIBUTE = "_mlflow_stack_auth_method"
_ADMIN_ATTRIBUTE = "_mlflow_stack_is_admin"
# How a request was authenticated (what users/current and the audit need to know).
METHOD_PASSWORD = "password"  # noqa: S105 - a method's name
METHOD_TOKEN = "token"  # noqa: S105 - a method's name
METHOD_SESSION = "session"
METHOD_JWT = "jwt"

# Process-wide; both are lazy and fork-aware, nothing touches the database at import.
_database = AuthDatabase()
_passwords = VerifiedPasswords()


def authenticate() -> Authorization | Response:
    """The ``authorization_function``: the caller's Authorization, or MLflow's 401."""
    # Flask types `request` as the Request it proxies, so the proxy's own method is unknown.
    current = request._get_current_object()  # type: ignore[attr-defined]
    # g lives as long as the app context, which is normally one request; the request
    # identity check keeps a reused app context from leaking one request's answer
    # into the next.
    memo = getattr(g, _MEMO_ATTRIBUTE, None)
    authorization: Authorization | None
    if memo is not None and memo[0] is current:
        authorization = memo[1]
    else:
        authorization = _authenticate(current)
        setattr(g, _MEMO_ATTRIBUTE, (current, authorization))
    if authorization is not None:
        return authorization
    sso = single_sign_on(_database)
    if sso is not None and is_browser_navigation(current):
        # A page load goes to the login; an API call keeps getting a 401, never HTML.
        path = current.full_path.rstrip("?")
        return redirect_to(f"{LOGIN}?{urlencode({'next': path})}")
    return unauthenticated_response()


def database() -> AuthDatabase:
    """The process's auth database (the project's app shares it)."""
    return _database


def method_of_this_request() -> str | None:
    return getattr(g, _METHOD_ATTRIBUTE, None)


def is_admin_of_this_request() -> bool | None:
    """Whether the user this request authenticated as is an admin, as read by the lookup
    that authenticated it (the same row, the same moment); None where the method read no
    such flag (single sign-on), so callers ask MLflow instead."""
    current = request._get_current_object()  # type: ignore[attr-defined]
    memo = getattr(g, _ADMIN_ATTRIBUTE, None)
    return memo[1] if memo is not None and memo[0] is current else None


def grants_of_this_request(username: str) -> tuple[GrantRow, ...] | None:
    """The grants of `username` read with the credentials of this request (the same
    statement); None where this request read none for that user."""
    current = request._get_current_object()  # type: ignore[attr-defined]
    memo = getattr(g, _ADMIN_ATTRIBUTE, None)
    if memo is None or memo[0] is not current or memo[2] != username:
        return None
    return memo[3]  # type: ignore[no-any-return]


class HeaderRequest:
    """What basic and bearer authentication read of a request (its path and headers), for a
    caller outside any Flask request: the native artifact routes, which otherwise build a
    synthetic Flask request only to authenticate (MLflow's bridge does)."""

    def __init__(self, path: str, headers: Mapping[str, str]) -> None:
        self.path = path
        self.headers = Headers(headers)  # case-insensitive, as a Flask request's
        self.remembered: tuple[Any, bool, str | None, tuple[GrantRow, ...]] | None = None


def authenticate_headers(
    path: str, headers: Mapping[str, str]
) -> tuple[bool, str, tuple[GrantRow, ...]] | None:
    """Basic or bearer authentication of a request given by path and headers, as
    ``authenticate`` decides it: (is_admin, username, grants) as its one statement read them;
    None where it is not theirs to decide (single sign-on, whose sessions and JWTs take
    MLflow's way) or nobody was authenticated. An unavailable database raises MLflow's 503
    exception, as in a Flask request."""
    if single_sign_on(_database) is not None:
        return None
    req = HeaderRequest(path, headers)
    try:
        method, authorization = _identify_credentials(req, None)
    except AuthDatabaseUnavailable as exc:
        raise _unavailable(exc) from None
    if authorization is None or req.remembered is None:
        return None
    _, is_admin, username, grants = req.remembered
    if username is None:
        return None
    _note_identity(authorization, method)
    return is_admin, username, grants


def _remember_admin(
    req: Request | HeaderRequest,
    is_admin: bool,
    username: str | None = None,
    grants: tuple[GrantRow, ...] = (),
) -> None:
    facts = (req, is_admin, username, grants)
    if isinstance(req, HeaderRequest):
        req.remembered = facts
    else:
        setattr(g, _ADMIN_ATTRIBUTE, facts)


def unauthenticated_response() -> Response:
    """Same status, body and challenge as ``mlflow.server.auth.make_basic_auth_response``;
    the Basic challenge keeps browsers prompting for a login."""
    response = make_response(_UNAUTHENTICATED_TEXT)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="mlflow"'
    return response


def _authenticate(req: Request) -> Authorization | None:
    method, authorization = _identify(req)
    if authorization is not None:
        setattr(g, _METHOD_ATTRIBUTE, method)
        _note_identity(authorization, method)
        # MLflow reads the user from request.authorization too, which Werkzeug parses as
        # UTF-8 basic auth only (None for a Latin-1 password, a session or a bearer token).
        req.authorization = authorization
    return authorization


def _note_identity(authorization: Authorization, method: str) -> None:
    identity = REQUEST_IDENTITY.get()
    if identity is not None:  # a request FastAPI may answer itself: audit_native's
        identity.update(
            user=authorization.username, auth=method, token_id=authorization.get("token_id")
        )


def _identify(req: Request) -> tuple[str, Authorization | None]:
    sso = single_sign_on(_database)
    try:
        if sso is not None and not _credentials_header(req):
            return METHOD_SESSION, authenticate_session(req, sso)
        return _identify_credentials(req, sso)
    except AuthDatabaseUnavailable as exc:
        raise _unavailable(exc) from None
    except KeysUnavailable as exc:
        raise _unavailable(AuthDatabaseUnavailable(f"OpenID Provider: {exc}")) from None


def _identify_credentials(
    req: Request | HeaderRequest, sso: SingleSignOn | None
) -> tuple[str, Authorization | None]:
    """The Authorization header's credentials (basic, the project's tokens, with single
    sign-on the provider's JWTs); raises AuthDatabaseUnavailable and KeysUnavailable."""
    header = _credentials_header(req)
    scheme, _, rest = (header or "").partition(" ")
    scheme = scheme.lower()
    if not header:
        return METHOD_SESSION, None
    if scheme == "bearer":
        token = rest.strip(" \t")
        if sso is not None and not looks_like_token(token):
            return METHOD_JWT, authenticate_jwt(token, sso)
        return METHOD_TOKEN, _authenticate_bearer(req, token)
    if scheme == "basic":
        credentials = basic_credentials(rest)
        if (
            sso is not None
            and not sso.config.passwords
            and not _may_use_password(credentials, sso.config.profile_admin)
        ):
            return METHOD_PASSWORD, None
        return METHOD_PASSWORD, _authenticate_basic(req, credentials)
    return METHOD_PASSWORD, None


def _may_use_password(credentials: Authorization | None, profile_admin: str) -> bool:
    """With passwords off for people, the profile's admin keeps one: the way in when the
    provider is down."""
    return credentials is not None and credentials.username == profile_admin


def basic_credentials(encoded: str) -> Authorization | None:
    """RFC 7617 user-pass, decoded as UTF-8, else as Latin-1.

    Browsers send UTF-8; requests (and so the MLflow SDK and CLI) encodes a non-ASCII password
    as Latin-1, which Werkzeug's UTF-8-only parser turns into "no credentials" and a 401.
    """
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    username, colon, password = text.partition(":")
    if not colon:
        return None
    return Authorization("basic", {"username": username, "password": password})


def _authenticate_bearer(req: Request | HeaderRequest, token: str) -> Authorization | None:
    if not looks_like_token(token):
        return None  # not one of ours: no database round trip for junk
    stored = _database.stored_token(hash_token(token))
    if stored is None:
        return None  # unknown, or its user was deleted (the row went with the user)
    now = utcnow()
    if token_state(stored.expires_at, stored.revoked_at, now) != ACTIVE:
        return None
    _database.record_token_use(stored, now)
    _remember_admin(req, stored.is_admin, stored.username, stored.grants)
    # Acts as its owner: MLflow only reads .username from what we return. The token
    # itself is left out so it cannot end up in a log line through this object.
    # `_authenticate` also shows it as request.authorization: a few MLflow handlers (e.g. the
    # ones submitting scorer/evaluation jobs) read its username directly.
    # The token's id (not the token) is there for the audit log.
    authorization = Authorization(
        "bearer", {"username": stored.username, "token_id": str(stored.id)}
    )
    return authorization


def _authenticate_basic(
    req: Request | HeaderRequest, credentials: Authorization | None
) -> Authorization | None:
    """Same decisions as MLflow's ``authenticate_request_basic_auth`` (and, on gateway
    routes, its FastAPI ``_authenticate_fastapi_request``), minus the repeated hash cost."""
    if credentials is None or credentials.username is None or credentials.password is None:
        return None
    username, password = credentials.username, credentials.password

    if _is_internal_gateway_call(req, password):
        # Server-spawned job subprocesses call the gateway as a user with the server's
        # own per-start secret; MLflow trusts the username there if the user exists.
        internal = _database.stored_password(username)
        if internal is None:
            return None
        _remember_admin(req, internal.is_admin, username, internal.grants)
        return credentials

    stored = _database.stored_password(username)
    if stored is None or not stored.password_hash:
        _passwords.burn_equivalent_time(password)
        return None
    if not _passwords.verify(username, stored.password_hash, password):
        return None
    if stored.is_admin and password == _LEGACY_ADMIN_PASSWORD:
        _logger.warning(
            "Rejected a login by admin user %r with the insecure default password older "
            "MLflow versions shipped (GHSA-gq3w-7jj3-x7gr); rotate it.",
            username,
        )
        return None
    _remember_admin(req, stored.is_admin, username, stored.grants)
    return credentials


def _credentials_header(req: Request | HeaderRequest) -> str | None:
    # On gateway routes a coding agent's own provider key occupies Authorization, so
    # MLflow credentials travel in X-MLflow-Authorization there (as in MLflow's own
    # FastAPI authentication); an empty one does not shadow Authorization.
    if _is_gateway_path(req.path):
        header = req.headers.get(_GATEWAY_AUTH_HEADER)
        if header:
            return header
    return req.headers.get("Authorization")


def _is_gateway_path(path: str) -> bool:
    static_prefix = os.environ.get(_STATIC_PREFIX_ENV, "").rstrip("/")
    if static_prefix and path.startswith(static_prefix):
        path = path[len(static_prefix) :]
    return path.startswith(_GATEWAY_PATH_PREFIX)


def _is_internal_gateway_call(req: Request | HeaderRequest, password: str) -> bool:
    internal_token = os.environ.get(_INTERNAL_GATEWAY_TOKEN_ENV)
    if not internal_token or not _is_gateway_path(req.path):
        return False
    try:
        return secrets.compare_digest(password.encode("utf-8"), internal_token.encode("utf-8"))
    except (TypeError, ValueError):
        return False


def _unavailable(exc: AuthDatabaseUnavailable) -> Exception:
    # Fail closed, but as 503 rather than 401: clients must not conclude that their
    # credentials are wrong (and drop them) because the database blinked. MLflow turns
    # an MlflowException into its JSON error response on both the Flask and FastAPI paths.
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    _logger.error("auth database unavailable: %s", exc)
    return MlflowException(
        "Authentication is temporarily unavailable; retry shortly.", TEMPORARILY_UNAVAILABLE
    )
