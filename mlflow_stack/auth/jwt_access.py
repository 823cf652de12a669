"""Verification of JWT access tokens from an OpenID Provider (``Authorization: Bearer <jwt>``).

The project's own opaque ``mlst_`` tokens are checked elsewhere; this module only answers
"is this JWT an access token that our provider issued for our API, and who is it for?".

Per request: one split + base64 of the header, a dict lookup for the key, one signature check
and a few claim comparisons. The keys come from ``jwks.JwksCache`` (fetched from the provider,
parsed once, cached by kid). PyJWT (and through it ``cryptography``) is imported on first use,
not at import time: MLflow loads the auth package into every worker, configured for OpenID
Connect or not.

PyJWT rather than joserfc: it is the smaller, far more widely deployed library, accepts the
parsed key objects directly (no per-request key parsing) and leaves the claim policy to us.
We pass it exactly one algorithm, chosen from the key we hold, never from the token alone.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# The signing keys are jwks.py's; its names stay importable from here, where callers meet them.
from mlflow_stack.auth.jwks import ASYMMETRIC_ALGORITHMS
from mlflow_stack.auth.jwks import JwksCache as JwksCache
from mlflow_stack.auth.jwks import KeysUnavailable as KeysUnavailable
from mlflow_stack.auth.jwks import TokenRefused as TokenRefused
from mlflow_stack.errors import StackError

# RFC 9068 access tokens say "at+jwt"; most providers (Keycloak, Entra ID, Auth0) say "JWT"
# or nothing. Any other typ (logout+jwt, dpop+jwt, secevent+jwt, ...) is some other JWT.
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt", "application/jwt"})

DEFAULT_LEEWAY_SECONDS = 30
# A bearer header is a few KB; anything far larger is refused before any decoding.
MAX_TOKEN_LENGTH = 16_384


@dataclass(frozen=True)
class JwtAccessSettings:
    """What a valid access token must say. ``browser_client_id`` is the OIDC client that logs
    users in: tokens issued *to* it (ID tokens) are not tokens *for* the API."""

    issuer: str
    audience: str
    browser_client_id: str | None = None
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    algorithms: frozenset[str] = ASYMMETRIC_ALGORITHMS
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise StackError("OpenID Connect: the issuer and the API audience must both be set")
        if self.audience == self.browser_client_id:
            raise StackError(
                "OpenID Connect: the API audience must differ from the browser client id "
                "(otherwise an ID token would pass as an access token)"
            )
        unsafe = set(self.algorithms) - ASYMMETRIC_ALGORITHMS
        if unsafe or not self.algorithms:
            raise StackError(
                f"OpenID Connect: algorithms must be a non-empty subset of "
                f"{sorted(ASYMMETRIC_ALGORITHMS)}; refused: {sorted(unsafe)}"
            )
        if not 0 <= self.leeway_seconds <= 300:
            raise StackError("OpenID Connect: the clock leeway must be 0 to 300 seconds")


@dataclass(frozen=True)
class VerifiedToken:
    subject: str
    username: str
    groups: tuple[str, ...]
    issuer: str
    expires_at: float
    claims: Mapping[str, Any] = field(repr=False)


def verify_access_token(
    token: str, settings: JwtAccessSettings, cache: JwksCache, now: float | None = None
) -> VerifiedToken:
    """The verified identity in ``token``, or TokenRefused / KeysUnavailable.

    ``now`` is epoch seconds (tests inject it; the server passes nothing).
    """
    if now is None:
        now = time.time()
    header, claims = _signed(token, settings, cache)
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES):
        raise TokenRefused(f"token type {typ!r} is not an access token")
    return _check_claims(claims, settings, now)


def _signed(
    token: str, settings: JwtAccessSettings, cache: JwksCache
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a token signed by one of the provider's keys, with an allowed
    algorithm that matches that key's type."""
    header = _header_of(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in settings.algorithms:
        raise TokenRefused(f"algorithm {alg!r} is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRefused("the token names no signing key (kid)")
    cached = cache.key_for(kid)
    if alg not in cached.algorithms:
        raise TokenRefused(f"algorithm {alg} does not match key {kid!r}")
    return header, _verified_claims(token, cached.key, alg)


def _header_of(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenRefused("not a compact JWS")
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError) as error:
        raise TokenRefused("the token header is not base64url JSON") from error
    if not isinstance(header, dict):
        raise TokenRefused("the token header is not a JSON object")
    if "crit" in header:
        raise TokenRefused("critical header extensions are not supported")
    return header


def _verified_claims(token: str, key: Any, alg: str) -> dict[str, Any]:
    import jwt

    try:
        # Signature only: every claim is checked below against the injected clock.
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.PyJWTError as error:
        raise TokenRefused(f"bad signature or encoding: {error}") from error
    return claims


def _check_claims(claims: dict[str, Any], settings: JwtAccessSettings, now: float) -> VerifiedToken:
    leeway = settings.leeway_seconds
    if claims.get("iss") != settings.issuer:
        raise TokenRefused(f"issuer {claims.get('iss')!r} is not {settings.issuer!r}")

    # Telling an ID token from an access token (the rule, in order):
    # 1. aud must contain the API audience. An ID token's aud is the browser client id, which
    #    settings guarantee differs from the API audience, so an ID token fails here already.
    # 2. A token carrying "nonce" is refused outright: nonce belongs to ID tokens (OIDC Core
    #    2, 3.1.2.1); an access token has no reason to carry one, even with the right aud.
    # 3. Keycloak marks its ID tokens with a "typ": "ID" claim: refused too.
    # (The header typ was already limited to at+jwt / JWT above.)
    if settings.audience not in _audiences(claims):
        raise TokenRefused(f"audience {claims.get('aud')!r} does not include the API audience")
    if "nonce" in claims:
        raise TokenRefused("the token carries a nonce: an ID token, not an access token")
    if claims.get("typ") == "ID":
        raise TokenRefused("the token is marked as an ID token")

    expires_at = _number(claims, "exp", required=True)
    if expires_at <= now - leeway:
        raise TokenRefused("the token has expired")
    not_before = _number(claims, "nbf", required=False)
    if not_before is not None and not_before > now + leeway:
        raise TokenRefused("the token is not valid yet (nbf)")
    issued_at = _number(claims, "iat", required=False)
    if issued_at is not None and issued_at > now + leeway:
        raise TokenRefused("the token was issued in the future (iat)")

    return _identity(claims, settings, expires_at)


def _identity(
    claims: dict[str, Any], settings: JwtAccessSettings, expires_at: float
) -> VerifiedToken:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenRefused("the token has no subject (sub)")
    username = claims.get(settings.username_claim)
    if not isinstance(username, str) or not username.strip():
        raise TokenRefused(f"the token has no {settings.username_claim!r} claim")
    return VerifiedToken(
        subject=subject,
        username=username,
        groups=_groups(claims.get(settings.groups_claim), settings.groups_claim),
        issuer=settings.issuer,
        expires_at=expires_at,
        claims=MappingProxyType(claims),
    )


def _audiences(claims: Mapping[str, Any]) -> list[Any]:
    """`aud` as a list (RFC 7519 allows a single string); empty when missing or malformed."""
    audiences = claims.get("aud")
    if isinstance(audiences, str):
        return [audiences]
    return audiences if isinstance(audiences, list) else []


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> Any:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRefused(f"the {name!r} claim is missing or not a number")
    return value


def _groups(value: Any, claim: str) -> tuple[str, ...]:
    """Group names; Keycloak's full-path form "/team/sub" becomes "team/sub"."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenRefused(f"the {claim!r} claim is not a list of strings")
    names = (item[1:] if item.startswith("/") else item for item in value)
    return tuple(dict.fromkeys(name for name in names if name))


def verify_id_token(
    token: str,
    settings: JwtAccessSettings,
    cache: JwksCache,
    *,
    nonce: str,
    now: float | None = None,
) -> VerifiedToken:
    """The identity in an ID token of the browser login (OIDC Core 3.1.3.7): signed by a key
    of the provider's, this issuer, issued to the browser client, with the login's nonce."""
    if now is None:
        now = time.time()
    if not settings.browser_client_id:
        raise TokenRefused("no browser client is configured")
    _header, claims = _signed(token, settings, cache)
    if claims.get("iss") != settings.issuer:
        raise TokenRefused(f"issuer {claims.get('iss')!r} is not {settings.issuer!r}")
    if settings.browser_client_id not in _audiences(claims):
        raise TokenRefused("the ID token was not issued to this client")
    if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
        raise TokenRefused("the ID token's nonce is not this login's")
    expires_at = _number(claims, "exp", required=True)
    if expires_at <= now - settings.leeway_seconds:
        raise TokenRefused("the ID token has expired")
    return _identity(claims, settings, expires_at)
