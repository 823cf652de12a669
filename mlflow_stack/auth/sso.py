"""The browser login: authorization code with PKCE (S256), state and nonce checked, a session
stored server-side; logout that also ends the provider's session.

Routes (all under /oidc/, answered before MLflow's own authentication runs):
  /oidc/login?next=/path   sends the browser to the provider
  /oidc/callback           the provider's answer: checks it, binds the identity, starts a session
  /oidc/logout             ends the session here, then at the provider
  /oidc/logged-out         where the provider sends the browser back
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import secrets
from datetime import timedelta
from typing import Any

from flask import Request, Response, current_app, make_response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from mlflow_stack.auth.auth_db import AuthDatabaseUnavailable
from mlflow_stack.auth.idp import Provider, ProviderUnavailable
from mlflow_stack.auth.jwt_access import KeysUnavailable, TokenRefused, verify_id_token
from mlflow_stack.auth.oidc_config import OidcConfig
from mlflow_stack.auth.sso_store import IdentityDeleted, SsoStore
from mlflow_stack.auth.token_format import utcnow

_logger = logging.getLogger(__name__)

PREFIX = "/oidc/"
LOGIN = "/oidc/login"
CALLBACK = "/oidc/callback"
LOGOUT = "/oidc/logout"
LOGGED_OUT = "/oidc/logged-out"
# One cookie per response: MLflow's WSGI-to-ASGI bridge passes a single Set-Cookie header on.
# So the session cookie also carries the UI's Logout (see `end_after_ui_logout`): a value
# starting with LOGOUT_MARK says "the next page load goes to the provider's logout".
SESSION_COOKIE = "mlflow_stack_session"
LOGOUT_MARK = "logout."
LOGIN_COOKIE = "mlflow_stack_login"
LOGIN_SECONDS = 600
LOGOUT_SECONDS = 60
# The MLflow UI logs out by asking users/current with a made-up user of this prefix, so that
# the browser forgets cached basic-auth credentials (mlflow/server/js, account logout).
UI_LOGOUT_USER_PREFIX = "mlflow-logged-out-"


def _signer(purpose: str) -> URLSafeTimedSerializer:
    # The Flask secret key is the same on every worker (MLflow needs that for CSRF too).
    return URLSafeTimedSerializer(current_app.secret_key or "", salt=f"mlflow-stack-{purpose}")


def _cookie(
    response: Response, name: str, value: str, config: OidcConfig, max_age: int, path: str = "/"
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="Lax",
        secure=config.secure_cookies,
        path=path,
    )


def is_logout_mark(value: str | None) -> bool:
    return bool(value) and str(value).startswith(LOGOUT_MARK)


def _page(status: int, title: str, text: str, link: tuple[str, str] | None = None) -> Response:
    extra = f'<p><a href="{html.escape(link[0])}">{html.escape(link[1])}</a></p>' if link else ""
    body = (
        f"<!doctype html><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{extra}"
    )
    response = make_response(body, status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect_to(url: str) -> Response:
    """A 302 to `url` (a Flask response, as MLflow's hooks expect)."""
    response = make_response("", 302)
    response.headers["Location"] = url
    response.headers["Cache-Control"] = "no-store"
    return response


def _safe_next(value: str | None) -> str:
    """Only a path of this server: never an absolute or scheme-relative URL (open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class BrowserLogin:
    def __init__(self, config: OidcConfig, provider: Provider, store: SsoStore) -> None:
        self.config = config
        self.provider = provider
        self.store = store

    def handle(self, req: Request) -> Response | None:
        """The response for an /oidc/ route, or None for any other path."""
        routes = {LOGIN: self.login, CALLBACK: self.callback, LOGOUT: self.logout}
        if req.path == LOGGED_OUT:
            return _page(200, "Logged out", "You are logged out of MLflow.", (LOGIN, "Log in"))
        view = routes.get(req.path)
        if view is None or req.method != "GET":
            return None
        try:
            return view(req)
        except (ProviderUnavailable, KeysUnavailable) as exc:
            _logger.warning("single sign-on: the provider is unavailable: %s", exc)
            return _page(503, "Login unavailable", "The identity provider does not answer.")
        except AuthDatabaseUnavailable as exc:
            _logger.error("single sign-on: the auth database is unavailable: %s", exc)
            return _page(503, "Login unavailable", "Try again in a moment.")

    def login(self, req: Request) -> Response:
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        flow = {"state": state, "nonce": nonce, "verifier": verifier}
        flow["next"] = _safe_next(req.args.get("next"))
        response = redirect_to(self.provider.authorization_url(state, nonce, challenge))
        # Only the /oidc/ routes see it; it expires by itself (never deleted: one cookie per
        # response, and the callback's is the session's).
        flow_cookie = _signer("login").dumps(flow)
        _cookie(response, LOGIN_COOKIE, flow_cookie, self.config, LOGIN_SECONDS, path=PREFIX)
        return response

    def callback(self, req: Request) -> Response:
        try:
            flow: dict[str, str] = _signer("login").loads(
                req.cookies.get(LOGIN_COOKIE, ""), max_age=LOGIN_SECONDS
            )
        except BadSignature:
            return _page(400, "Login expired", "Start the login again.", (LOGIN, "Log in"))
        if req.args.get("error"):
            return _page(401, "Login refused", str(req.args.get("error")), (LOGIN, "Try again"))
        if not hmac.compare_digest(req.args.get("state", ""), flow["state"]):
            return _page(400, "Login refused", "The login's state does not match.")
        try:
            tokens = self.provider.exchange_code(req.args.get("code", ""), flow["verifier"])
            identity = verify_id_token(
                tokens["id_token"],
                self.provider.settings,
                self.provider.keys(),
                nonce=flow["nonce"],
            )
        except (PermissionError, TokenRefused) as exc:
            _logger.warning("single sign-on: login refused: %s", exc)
            return _page(401, "Login refused", "The provider's answer was not accepted.")
        if self.config.login_group and self.config.login_group not in identity.groups:
            return _page(
                403,
                "Not allowed",
                f"Your account is not a member of {self.config.login_group}.",
                (LOGOUT, "Log out"),
            )
        make_admin = None
        if self.config.admin_group:
            make_admin = self.config.admin_group in identity.groups
        now = utcnow()
        try:
            username, _ = self.store.bind_identity(
                identity.issuer,
                identity.subject,
                identity.username,
                now,
                reserved=frozenset({self.config.profile_admin}),
                make_admin=make_admin,
            )
        except IdentityDeleted:
            return _page(403, "Not allowed", "An MLflow admin removed your account here.")
        session = self.store.create_session(
            username, timedelta(seconds=self.config.session_seconds), now, tokens["id_token"]
        )
        response = redirect_to(flow["next"])
        _cookie(response, SESSION_COOKIE, session, self.config, self.config.session_seconds)
        return response

    def logout(self, req: Request) -> Response:
        value = req.cookies.get(SESSION_COOKIE, "")
        id_token = self._hint(value) if is_logout_mark(value) else self._end_session(value)
        response = redirect_to(self.provider.logout_url(id_token) or LOGGED_OUT)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def end_after_ui_logout(self, req: Request, response: Response) -> Response:
        """The UI's Logout asked users/current as a made-up user: end the session now, and
        mark the cookie so that the page load that follows goes to the provider's logout."""
        value = req.cookies.get(SESSION_COOKIE, "")
        if not value or is_logout_mark(value):
            return response
        id_token = self._end_session(value)
        mark = LOGOUT_MARK + _signer("logout").dumps({"id_token": id_token})
        _cookie(response, SESSION_COOKIE, mark, self.config, LOGOUT_SECONDS)
        return response

    def _end_session(self, value: str) -> str | None:
        if not value:
            return None
        user = self.store.session_user(value, utcnow())
        self.store.end_session(value)
        return user.id_token if user is not None else None

    def _hint(self, mark: str) -> str | None:
        try:
            hint: dict[str, Any] = _signer("logout").loads(
                mark.removeprefix(LOGOUT_MARK), max_age=LOGOUT_SECONDS
            )
        except BadSignature:
            return None
        token = hint.get("id_token")
        return token if isinstance(token, str) else None


def is_browser_navigation(req: Request) -> bool:
    """A page load in a browser (which can follow a redirect to a login page), as opposed to
    an API call, which must keep getting a 401 and never an HTML page."""
    if req.method != "GET":
        return False
    if req.path.startswith(("/api/", "/ajax-api/", "/gateway/", "/v1/")):
        return False
    mode = req.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in req.headers.get("Accept", "")
