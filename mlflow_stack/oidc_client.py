"""Machine clients of the stack's OpenID Provider: the one client-credentials grant, used by
`invoke env --oidc` and by the MLflow SDK's request auth provider `mlflow-stack-oidc`.

Client side only (the server verifies tokens in mlflow_stack.auth), and nothing of MLflow is
imported here: the class MLflow's entry point loads lives in oidc_auth_provider, so that
`invoke env --oidc` does not pay for importing MLflow.

The auth provider is configured by the environment alone (``MLFLOW_TRACKING_AUTH=
mlflow-stack-oidc``, then the variables below). They are not called MLFLOW_STACK_OIDC_*:
MLFLOW_STACK_OIDC_CLIENT_ID and MLFLOW_STACK_OIDC_CLIENT_SECRET already set the profile's
browser client, so a shell that ran the job would reconfigure the next `invoke up`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import requests.auth

from mlflow_stack.errors import StackError

AUTH_PROVIDER_NAME = "mlflow-stack-oidc"
TOKEN_URL_VAR = "MLFLOW_STACK_MACHINE_TOKEN_URL"  # noqa: S105 - a variable name
CLIENT_ID_VAR = "MLFLOW_STACK_MACHINE_CLIENT_ID"
CLIENT_SECRET_VAR = "MLFLOW_STACK_MACHINE_CLIENT_SECRET"  # noqa: S105 - a variable name
# A file holding the secret (a mounted Kubernetes or CI secret): keeps it out of `env`.
CLIENT_SECRET_FILE_VAR = "MLFLOW_STACK_MACHINE_CLIENT_SECRET_FILE"  # noqa: S105 - a variable name
AUDIENCE_VAR = "MLFLOW_STACK_MACHINE_AUDIENCE"
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
TIMEOUT_SECONDS = 10.0
# A token is renewed this long before it runs out (at most a fifth of its lifetime, so that a
# short-lived one is still used): a request sent just before expiry must still be accepted.
RENEW_BEFORE_SECONDS = 30.0
# RFC 6749 only recommends expires_in; without it the token is treated as this short-lived.
DEFAULT_EXPIRES_IN = 60.0


@dataclass(frozen=True)
class ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    audience: str


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_in: float


def _one_line(text: object, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def token_endpoint(issuer: str, timeout: float = TIMEOUT_SECONDS) -> str:
    """The token endpoint named by the issuer's discovery document."""
    url = issuer.rstrip("/") + DISCOVERY_SUFFIX
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        raise StackError(
            f"the OpenID Provider is not reachable at {url}: {type(error).__name__}"
        ) from None
    try:
        document = response.json() if response.status_code == 200 else None
    except ValueError:
        document = None
    endpoint = document.get("token_endpoint") if isinstance(document, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        raise StackError(
            f"{url} answered {response.status_code} without a token_endpoint: is it the "
            "provider's discovery document?"
        )
    return endpoint


def request_token(credentials: ClientCredentials, timeout: float = TIMEOUT_SECONDS) -> AccessToken:
    """The client-credentials grant (RFC 6749 4.4) for the API audience.

    `resource` (RFC 8707) is what oidc-provider reads, `audience` what Auth0 reads; Keycloak,
    whose audience comes from a mapper, ignores both unless its experimental resource
    indicators are on. The secret travels in the Basic header only, never in a message.
    """
    try:
        response = requests.post(
            credentials.token_url,
            data={
                "grant_type": "client_credentials",
                "resource": credentials.audience,
                "audience": credentials.audience,
            },
            auth=(credentials.client_id, credentials.client_secret),
            headers={"Accept": "application/json"},
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise StackError(
            f"the OpenID Provider is not reachable at {credentials.token_url}: "
            f"{type(error).__name__}"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    if response.status_code != 200:
        reason = ": ".join(
            _one_line(body[key]) for key in ("error", "error_description") if body.get(key)
        )
        raise StackError(
            f"the OpenID Provider refused the client-credentials grant of "
            f"{credentials.client_id} ({response.status_code}{', ' + reason if reason else ''})"
        )
    value = body.get("access_token")
    if not isinstance(value, str) or not value:
        raise StackError(f"{credentials.token_url} answered 200 without an access_token")
    expires_in = body.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else DEFAULT_EXPIRES_IN
    return AccessToken(value, lifetime)


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read without checking it: for showing who a token names (the server
    is the one that verifies). {} for an opaque token."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def credentials_from_environment(environ: Mapping[str, str] | None = None) -> ClientCredentials:
    environ = os.environ if environ is None else environ
    secret = environ.get(CLIENT_SECRET_VAR, "")
    secret_file = environ.get(CLIENT_SECRET_FILE_VAR, "")
    if not secret and secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise StackError(
                f"{AUTH_PROVIDER_NAME}: cannot read {CLIENT_SECRET_FILE_VAR} {secret_file}: "
                f"{error.strerror}"
            ) from None
    values = {
        TOKEN_URL_VAR: environ.get(TOKEN_URL_VAR, ""),
        CLIENT_ID_VAR: environ.get(CLIENT_ID_VAR, ""),
        CLIENT_SECRET_VAR: secret,
        AUDIENCE_VAR: environ.get(AUDIENCE_VAR, ""),
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise StackError(
            f"MLFLOW_TRACKING_AUTH={AUTH_PROVIDER_NAME} needs {', '.join(missing)} "
            f'(eval "$(invoke env --oidc --auth-provider -p PROFILE)" prints them)'
        )
    if not values[TOKEN_URL_VAR].startswith(("https://", "http://")):
        raise StackError(f"{TOKEN_URL_VAR} must be an http(s) URL")
    return ClientCredentials(
        values[TOKEN_URL_VAR], values[CLIENT_ID_VAR], secret, values[AUDIENCE_VAR]
    )


class TokenSource:
    """One client's access token, fetched on first use and renewed shortly before it runs out;
    safe to share between threads (one grant at a time, the others wait for its token)."""

    def __init__(
        self,
        credentials: ClientCredentials,
        *,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[ClientCredentials], AccessToken] = request_token,
    ) -> None:
        self.credentials = credentials
        self._clock = clock
        self._fetch = fetch
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self._renew_at = 0.0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                started = self._clock()  # before the request: the lifetime runs from the grant
                token = self._fetch(self.credentials)
                margin = min(RENEW_BEFORE_SECONDS, token.expires_in / 5)
                self._token, self._renew_at = token, started + token.expires_in - margin
            return self._token.value


_sources: dict[ClientCredentials, TokenSource] = {}
_sources_lock = threading.Lock()


def token_source(credentials: ClientCredentials) -> TokenSource:
    """The process's one TokenSource for these credentials (MLflow asks for an auth object on
    every request; the token must outlive them)."""
    with _sources_lock:
        source = _sources.get(credentials)
        if source is None:
            source = _sources[credentials] = TokenSource(credentials)
        return source


class BearerAuth(requests.auth.AuthBase):
    """requests auth: the source's current token as `Authorization: Bearer`."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.source.token()}"
        return request


def auth_from_environment(environ: Mapping[str, str] | None = None) -> BearerAuth:
    return BearerAuth(token_source(credentials_from_environment(environ)))
