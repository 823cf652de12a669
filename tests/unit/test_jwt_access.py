"""JWT access-token verification against locally made keys: no network, injected fetch and clock.

Every refusal test starts from a token that verifies (``claims()``/``sign()`` defaults) and
changes one thing, and matches the refusal reason of the check it targets: with that check
removed the token would either verify or be refused for another reason, and the test fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mlflow_stack.auth.jwt_access import (
    JwksCache,
    JwtAccessSettings,
    KeysUnavailable,
    TokenRefused,
    verify_access_token,
)
from mlflow_stack.errors import StackError

ISSUER = "https://idp.example.test/realms/ml"
API_AUDIENCE = "mlflow-api"
BROWSER_CLIENT = "mlflow-browser"
JWKS_URL = f"{ISSUER}/jwks"
NOW = 1_900_000_000.0
INTERVAL = 60.0

SETTINGS = JwtAccessSettings(issuer=ISSUER, audience=API_AUDIENCE, browser_client_id=BROWSER_CLIENT)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key_2():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(private_key, kid: str) -> dict:
    algorithm = RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProvider:
    """The injected fetcher: serves ``keys`` as a JWKS, or fails like an unreachable host."""

    def __init__(self, *keys: dict) -> None:
        self.keys = list(keys)
        self.reachable = True
        self.requests: list[str] = []

    def __call__(self, url: str) -> dict:
        self.requests.append(url)
        if not self.reachable:
            raise ConnectionError("connection refused")
        return {"keys": self.keys}


def claims(**changes) -> dict:
    base = {
        "iss": ISSUER,
        "aud": API_AUDIENCE,
        "sub": "user-1234",
        "preferred_username": "alice",
        "groups": ["/ml-admins", "readers"],
        "iat": int(NOW) - 10,
        "nbf": int(NOW) - 10,
        "exp": int(NOW) + 300,
        "client_id": BROWSER_CLIENT,
        "scope": "openid",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def sign(private_key, payload: dict, kid: str = "k1", alg: str = "RS256", typ="at+jwt") -> str:
    headers = {"kid": kid} if typ is None else {"kid": kid, "typ": typ}
    return jwt.encode(payload, private_key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict, payload: dict, signature: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
def provider(rsa_key, ec_key):
    return FakeProvider(public_jwk(rsa_key, "k1"), public_jwk(ec_key, "ec1"))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def cache(provider, clock):
    return JwksCache(JWKS_URL, fetch=provider, clock=clock, refetch_interval=INTERVAL)


def verify(token: str, cache: JwksCache, now: float = NOW, settings=SETTINGS):
    return verify_access_token(token, settings, cache, now=now)


# --- accepted ---------------------------------------------------------------------------------


def test_a_valid_rsa_token_gives_the_identity(rsa_key, cache, provider):
    verified = verify(sign(rsa_key, claims()), cache)
    assert verified.subject == "user-1234"
    assert verified.username == "alice"
    assert verified.groups == ("ml-admins", "readers")  # Keycloak's "/group" path stripped
    assert verified.issuer == ISSUER
    assert verified.expires_at == int(NOW) + 300
    assert verified.claims["client_id"] == BROWSER_CLIENT
    assert provider.requests == [JWKS_URL]


def test_ec_keys_and_typ_jwt_and_a_list_audience_are_accepted(ec_key, cache):
    token = sign(ec_key, claims(aud=["account", API_AUDIENCE]), kid="ec1", alg="ES256", typ="JWT")
    assert verify(token, cache).username == "alice"


def test_a_known_kid_costs_no_fetch(rsa_key, cache, provider):
    for _ in range(20):
        verify(sign(rsa_key, claims()), cache)
    assert len(provider.requests) == 1


def test_configurable_username_and_groups_claims(rsa_key, cache):
    settings = JwtAccessSettings(
        issuer=ISSUER, audience=API_AUDIENCE, username_claim="email", groups_claim="roles"
    )
    token = sign(rsa_key, claims(email="alice@example.test", roles="ops", groups=None))
    verified = verify(token, cache, settings=settings)
    assert (verified.username, verified.groups) == ("alice@example.test", ("ops",))


def test_exp_within_the_leeway_is_accepted(rsa_key, cache):
    assert verify(sign(rsa_key, claims(exp=int(NOW) - 20)), cache).username == "alice"


# --- refused: claims --------------------------------------------------------------------------


def test_wrong_issuer_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="issuer"):
        verify(sign(rsa_key, claims(iss="https://evil.example.test")), cache)


def test_wrong_audience_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="audience"):
        verify(sign(rsa_key, claims(aud="some-other-api")), cache)


def test_expired_token_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="expired"):
        verify(sign(rsa_key, claims(exp=int(NOW) - 31)), cache)


def test_token_without_exp_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="'exp'"):
        verify(sign(rsa_key, claims(exp=None)), cache)


def test_not_yet_valid_token_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="not valid yet"):
        verify(sign(rsa_key, claims(nbf=int(NOW) + 31)), cache)


def test_token_issued_in_the_future_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="future"):
        verify(sign(rsa_key, claims(iat=int(NOW) + 31, nbf=None)), cache)


def test_token_without_subject_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="subject"):
        verify(sign(rsa_key, claims(sub=None)), cache)


@pytest.mark.parametrize("username", [None, "", "  "])
def test_missing_or_empty_username_claim_is_refused(rsa_key, cache, username):
    with pytest.raises(TokenRefused, match="preferred_username"):
        verify(sign(rsa_key, claims(preferred_username=username)), cache)


def test_groups_that_are_not_strings_are_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="list of strings"):
        verify(sign(rsa_key, claims(groups=[{"name": "admins"}])), cache)


# --- refused: ID tokens -----------------------------------------------------------------------


def test_an_id_token_is_refused_as_an_access_token(rsa_key, cache):
    # What a provider issues to the browser client: aud = client id, a nonce, typ JWT.
    id_token = claims(aud=BROWSER_CLIENT, nonce="n-0S6_WzA2Mj", azp=BROWSER_CLIENT)
    with pytest.raises(TokenRefused, match="audience"):
        verify(sign(rsa_key, id_token, typ="JWT"), cache)


def test_a_token_with_a_nonce_is_refused_even_with_the_api_audience(rsa_key, cache):
    with pytest.raises(TokenRefused, match="nonce"):
        verify(sign(rsa_key, claims(nonce="n-0S6_WzA2Mj"), typ="JWT"), cache)


def test_a_keycloak_id_token_marker_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="ID token"):
        verify(sign(rsa_key, claims(typ="ID"), typ="JWT"), cache)


def test_a_jwt_of_another_type_is_refused(rsa_key, cache):
    with pytest.raises(TokenRefused, match="token type"):
        verify(sign(rsa_key, claims(), typ="logout+jwt"), cache)


# --- refused: algorithms and signatures -------------------------------------------------------


def test_alg_none_is_refused(cache):
    token = handmade({"alg": "none", "kid": "k1", "typ": "at+jwt"}, claims())
    with pytest.raises(TokenRefused, match="'none' is not allowed"):
        verify(token, cache)


def test_hs256_signed_with_the_public_key_is_refused(rsa_key, cache):
    # The key-confusion attack: HMAC keyed with the provider's public key, which anyone has.
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": "k1", "typ": "at+jwt"}
    unsigned = handmade(header, claims()).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenRefused, match="'HS256' is not allowed"):
        verify(f"{unsigned}.{b64(mac)}", cache)


def test_an_algorithm_that_does_not_fit_the_named_key_is_refused(ec_key, cache):
    # Both ES256 and the key k1 are trusted, but k1 is an RSA key: the pair is refused.
    with pytest.raises(TokenRefused, match="does not match key 'k1'"):
        verify(sign(ec_key, claims(), kid="k1", alg="ES256"), cache)


def test_a_forged_signature_is_refused(rsa_key, rsa_key_2, cache):
    with pytest.raises(TokenRefused, match="signature"):
        verify(sign(rsa_key_2, claims(), kid="k1"), cache)


def test_a_token_without_kid_is_refused(rsa_key, cache):
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"typ": "at+jwt"})
    with pytest.raises(TokenRefused, match="kid"):
        verify(token, cache)


@pytest.mark.parametrize("junk", ["", "a.b", "a.b.c.d", "!!!.e30.", "W10.e30."])
def test_junk_is_refused(cache, junk):
    with pytest.raises(TokenRefused):
        verify(junk, cache)


def test_symmetric_keys_in_the_jwks_are_ignored(rsa_key, provider, cache):
    provider.keys.append({"kty": "oct", "kid": "shared", "k": b64(b"secret" * 6)})
    verify(sign(rsa_key, claims()), cache)
    assert cache.key_for("k1")
    with pytest.raises(TokenRefused, match="unknown key id 'shared'"):
        cache.key_for("shared")


# --- key cache: rotation, rate limit, outages -------------------------------------------------


def test_rotation_refetches_once_and_junk_kids_are_rate_limited(
    rsa_key, rsa_key_2, provider, clock, cache
):
    verify(sign(rsa_key, claims()), cache)
    assert len(provider.requests) == 1

    provider.keys = [public_jwk(rsa_key_2, "k2")]  # the provider rotates
    clock.now += INTERVAL + 1
    assert verify(sign(rsa_key_2, claims(), kid="k2"), cache).username == "alice"
    assert len(provider.requests) == 2

    with pytest.raises(TokenRefused, match="unknown key id 'junk'"):
        verify(sign(rsa_key, claims(), kid="junk"), cache)
    with pytest.raises(TokenRefused, match="unknown key id 'k1'"):  # withdrawn key
        verify(sign(rsa_key, claims(), kid="k1"), cache)
    assert len(provider.requests) == 2  # within the window: no refetch

    clock.now += INTERVAL
    with pytest.raises(TokenRefused, match="unknown key id 'junk'"):
        verify(sign(rsa_key, claims(), kid="junk"), cache)
    assert len(provider.requests) == 3  # the window passed: one more fetch


def test_unreachable_jwks_and_empty_cache_means_keys_unavailable(rsa_key, provider, clock, cache):
    provider.reachable = False
    with pytest.raises(KeysUnavailable):
        verify(sign(rsa_key, claims()), cache)
    with pytest.raises(KeysUnavailable):
        verify(sign(rsa_key, claims()), cache)
    assert len(provider.requests) == 1  # a down provider is not hammered either

    provider.reachable = True
    clock.now += INTERVAL
    assert verify(sign(rsa_key, claims()), cache).username == "alice"


def test_an_empty_jwks_counts_as_a_failed_fetch(rsa_key, provider, clock, cache):
    provider.keys, served = [], provider.keys
    with pytest.raises(KeysUnavailable):
        verify(sign(rsa_key, claims()), cache)

    provider.keys = served
    clock.now += INTERVAL
    verify(sign(rsa_key, claims()), cache)
    provider.keys = []  # a broken provider answer must not wipe the keys we hold
    clock.now += INTERVAL
    with pytest.raises(TokenRefused, match="unknown key id 'k9'"):
        verify(sign(rsa_key, claims(), kid="k9"), cache)
    assert verify(sign(rsa_key, claims()), cache).username == "alice"
    assert len(provider.requests) == 3


def test_unreachable_jwks_with_a_warm_cache_still_verifies_known_kids(
    rsa_key, provider, clock, cache
):
    verify(sign(rsa_key, claims()), cache)
    provider.reachable = False
    clock.now += INTERVAL + 1
    with pytest.raises(TokenRefused, match="unknown key id 'k9'"):
        verify(sign(rsa_key, claims(), kid="k9"), cache)  # the refetch fails: keys kept
    assert len(provider.requests) == 2
    assert verify(sign(rsa_key, claims()), cache).username == "alice"


# --- settings ---------------------------------------------------------------------------------


def test_settings_refuse_an_api_audience_equal_to_the_browser_client():
    with pytest.raises(StackError, match="must differ"):
        JwtAccessSettings(issuer=ISSUER, audience="same", browser_client_id="same")


@pytest.mark.parametrize("algorithms", [{"HS256"}, {"RS256", "none"}, set()])
def test_settings_refuse_symmetric_or_no_algorithms(algorithms):
    with pytest.raises(StackError, match="algorithms"):
        JwtAccessSettings(issuer=ISSUER, audience=API_AUDIENCE, algorithms=frozenset(algorithms))


def test_a_narrowed_algorithm_list_refuses_the_others(ec_key, cache):
    settings = JwtAccessSettings(
        issuer=ISSUER, audience=API_AUDIENCE, algorithms=frozenset({"RS256"})
    )
    with pytest.raises(TokenRefused, match="'ES256' is not allowed"):
        verify(sign(ec_key, claims(), kid="ec1", alg="ES256"), cache, settings=settings)


# --- the split: the keys in auth/jwks.py ------------------------------------------------


def test_the_key_cache_lives_in_jwks_and_keeps_its_old_names():
    from mlflow_stack.auth import jwks, jwt_access

    assert jwt_access.JwksCache is jwks.JwksCache
    assert jwt_access.TokenRefused is jwks.TokenRefused
    assert jwt_access.KeysUnavailable is jwks.KeysUnavailable


@pytest.mark.parametrize("module", ["jwks", "jwt_access"])
def test_the_auth_modules_import_no_heavy_library_at_import_time(module):
    """MLflow loads the auth package into every worker: PyJWT, cryptography and requests are
    imported on first use only."""
    import ast
    from pathlib import Path

    import mlflow_stack.auth

    source = Path(mlflow_stack.auth.__file__).with_name(f"{module}.py").read_text()
    top_level = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module.split(".")[0])
    assert not top_level & {"jwt", "cryptography", "requests"}
