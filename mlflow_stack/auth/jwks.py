"""The OpenID Provider's signing keys: fetched from its JWKS URL, parsed once, cached by kid.

Lookups of a known ``kid`` take no lock and do no I/O; the network is touched only for a
``kid`` the cache does not know, and then at most once per ``refetch_interval`` (a flood of
made-up kids costs the provider one request per interval per worker). ``cryptography`` (through
PyJWT) and ``requests`` are imported on first use, not at import time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Asymmetric algorithms only: a verifier that also accepted HS* would treat the provider's
# public key as an HMAC secret (the classic key-confusion forgery); "none" is never accepted.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"})
# Which algorithms each kind of key can verify; a token's alg must fit the key it names.
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256"})
_EC_ALGORITHMS = {"P-256": frozenset({"ES256"}), "P-384": frozenset({"ES384"})}
_OKP_ALGORITHMS = {"Ed25519": frozenset({"EdDSA"})}

DEFAULT_REFETCH_INTERVAL_SECONDS = 60.0
DEFAULT_FETCH_TIMEOUT_SECONDS = 5.0


class TokenRefused(Exception):
    """The bearer token is not acceptable (answer 401). ``reason`` is for logs, not clients."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """No signing keys could be fetched and none are cached (answer 503, not 401)."""


@dataclass(frozen=True)
class _CachedKey:
    key: Any  # a cryptography public key object, ready for PyJWT
    algorithms: frozenset[str]


JwksFetcher = Callable[[str], Mapping[str, Any]]


def fetch_jwks(url: str, timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS) -> Mapping[str, Any]:
    """The default fetcher: a short-timeout GET; any failure raises."""
    import requests  # only when keys are actually fetched

    response = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError("the JWKS document is not a JSON object")
    return document


class JwksCache:
    """The provider's signing keys by ``kid``, refetched only for unknown kids, rate-limited.

    Lookups of known kids take no lock and do no I/O. A refetch replaces the whole set, so a
    key the provider has withdrawn stops verifying after the next refetch (or a restart).
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        fetch: JwksFetcher = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
        refetch_interval: float = DEFAULT_REFETCH_INTERVAL_SECONDS,
        algorithms: Iterable[str] = ASYMMETRIC_ALGORITHMS,
    ) -> None:
        self.jwks_url = jwks_url
        self._fetch = fetch
        self._clock = clock
        self._refetch_interval = refetch_interval
        self._algorithms = frozenset(algorithms) & ASYMMETRIC_ALGORITHMS
        self._keys: dict[str, _CachedKey] = {}  # replaced whole, never mutated: lock-free reads
        self._last_attempt: float | None = None
        self._lock = threading.Lock()
        self.fetch_count = 0  # attempts, successful or not (tests and metrics read it)

    def key_for(self, kid: str) -> _CachedKey:
        cached = self._keys.get(kid)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._keys.get(kid)  # another thread may have refetched meanwhile
            if cached is None and self._may_fetch():
                self._refetch()
                cached = self._keys.get(kid)
        if cached is not None:
            return cached
        if not self._keys:
            raise KeysUnavailable(f"no signing keys could be fetched from {self.jwks_url}")
        raise TokenRefused(f"unknown key id {kid!r}")

    def _may_fetch(self) -> bool:
        last = self._last_attempt
        return last is None or self._clock() - last >= self._refetch_interval

    def _refetch(self) -> None:
        self._last_attempt = self._clock()
        self.fetch_count += 1
        try:
            keys = _parse_jwks(self._fetch(self.jwks_url), self._algorithms)
        except Exception:  # any fetch or parse failure means "keep what we have"
            return
        if keys:  # a document with no usable key counts as a failed fetch
            self._keys = keys


def _parse_jwks(document: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, _CachedKey]:
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    keys: dict[str, _CachedKey] = {}
    entries = document.get("keys")
    for jwk in entries if isinstance(entries, list) else []:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid, kty = jwk.get("kid"), jwk.get("kty")
        if not isinstance(kid, str) or not kid:
            continue
        parse: Callable[[dict[str, Any]], Any]
        if kty == "RSA":
            family, parse = _RSA_ALGORITHMS, RSAAlgorithm.from_jwk
        elif kty == "EC":
            family, parse = (
                _EC_ALGORITHMS.get(jwk.get("crv", ""), frozenset()),
                ECAlgorithm.from_jwk,
            )
        elif kty == "OKP":
            family, parse = (
                _OKP_ALGORITHMS.get(jwk.get("crv", ""), frozenset()),
                OKPAlgorithm.from_jwk,
            )
        else:
            continue  # "oct" (symmetric) keys are never trusted for access tokens
        algorithms = family & allowed
        if "alg" in jwk:
            algorithms &= {jwk["alg"]}
        if not algorithms:
            continue
        try:
            key: Any = parse(jwk)
        except Exception:  # noqa: S112 - one malformed key must not hide the others
            continue
        # Keep only the public half even if a provider (wrongly) publishes private parts.
        public = key.public_key() if hasattr(key, "private_bytes") else key
        keys[kid] = _CachedKey(key=public, algorithms=frozenset(algorithms))
    return keys
