"""The server's one way to its OpenID Provider: discovery, signing keys, the code exchange and
the logout URL. Everything is fetched lazily and cached per process."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlencode

from mlflow_stack.auth.jwt_access import JwksCache, JwtAccessSettings, KeysUnavailable
from mlflow_stack.auth.oidc_config import OidcConfig

HTTP_TIMEOUT_SECONDS = 10
# After a failed discovery, wait this long before asking again (requests keep failing fast).
DISCOVERY_RETRY_SECONDS = 10.0


class ProviderUnavailable(KeysUnavailable):
    """The provider's discovery document or token endpoint did not answer (503, not 401)."""


class Provider:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self.settings = JwtAccessSettings(
            issuer=config.issuer,
            audience=config.api_audience,
            browser_client_id=config.client_id,
            username_claim=config.username_claim,
            groups_claim=config.groups_claim,
        )
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._retry_at = 0.0
        self._jwks: JwksCache | None = None

    def discovery(self) -> dict[str, Any]:
        if self._discovery is not None:
            return self._discovery
        with self._lock:
            if self._discovery is None:
                if time.monotonic() < self._retry_at:
                    raise ProviderUnavailable("the OpenID Provider's discovery failed just now")
                try:
                    document = _get_json(self.config.discovery_url)
                except ProviderUnavailable:
                    self._retry_at = time.monotonic() + DISCOVERY_RETRY_SECONDS
                    raise
                if document.get("issuer") != self.config.issuer:
                    self._retry_at = time.monotonic() + DISCOVERY_RETRY_SECONDS
                    raise ProviderUnavailable(
                        f"the discovery document names issuer {document.get('issuer')!r}, "
                        f"not {self.config.issuer!r}"
                    )
                self._discovery = document
            return self._discovery

    def keys(self) -> JwksCache:
        if self._jwks is None:
            jwks_uri = self.discovery()["jwks_uri"]
            with self._lock:
                if self._jwks is None:
                    self._jwks = JwksCache(jwks_uri)
        return self._jwks

    def authorization_url(self, state: str, nonce: str, code_challenge: str) -> str:
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_uri,
            "scope": self.config.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        return f"{self.discovery()['authorization_endpoint']}?{urlencode(query)}"

    def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """The token response for an authorization code (client_secret_basic)."""
        import requests

        try:
            response = requests.post(
                self.discovery()["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.config.redirect_uri,
                    "code_verifier": code_verifier,
                },
                auth=(self.config.client_id, self.config.client_secret),
                timeout=HTTP_TIMEOUT_SECONDS,
            )
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"token endpoint: {type(exc).__name__}") from None
        body = _json_or_empty(response)
        if response.status_code != 200 or "id_token" not in body:
            raise PermissionError(
                f"the provider refused the code: {body.get('error', response.status_code)}"
            )
        return body

    def logout_url(self, id_token: str | None) -> str | None:
        """RP-initiated logout at the provider, back to our logged-out page; None without it."""
        try:
            endpoint = self.discovery().get("end_session_endpoint")
        except ProviderUnavailable:
            return None
        if not endpoint:
            return None
        query = {
            "client_id": self.config.client_id,
            "post_logout_redirect_uri": self.config.post_logout_redirect_uri,
        }
        if id_token:
            query["id_token_hint"] = id_token
        return f"{endpoint}?{urlencode(query)}"


def _get_json(url: str) -> dict[str, Any]:
    import requests

    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"{url}: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"{url}: not a JSON object")
    return document


def _json_or_empty(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
