"""The dev OpenID Provider as a real node process on loopback, checked with requests and with
the project's own access-token verifier (mlflow_stack.auth.jwt_access)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from mlflow_stack import oidc_dev
from mlflow_stack.auth.jwt_access import (
    JwksCache,
    JwtAccessSettings,
    TokenRefused,
    verify_access_token,
)

API_AUDIENCE = "urn:mlflow-stack:api"
BROWSER_ID = "mlflow-browser"
# Nothing listens here: the test reads the code from the Location header instead.
REDIRECT_URI = "http://127.0.0.1:9/oidc/callback"
POST_LOGOUT_URI = "http://127.0.0.1:9/"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DevProvider:
    def __init__(self, issuer: str, config: dict, process: subprocess.Popen[bytes]) -> None:
        self.issuer = issuer
        self.config = config
        self.process = process
        self.browser = config["browser_client"]
        self.service = config["service_clients"][0]
        self.user = config["users"][0]

    def settings(self) -> JwtAccessSettings:
        return JwtAccessSettings(
            issuer=self.issuer, audience=API_AUDIENCE, browser_client_id=BROWSER_ID
        )

    def cache(self) -> JwksCache:
        return JwksCache(f"{self.issuer}/jwks")


@pytest.fixture(scope="module")
def install_dir(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("oidc-dev-provider")
    oidc_dev.install_provider(target)
    assert oidc_dev.install_provider(target) is False  # the stamp matches: npm does not run
    return target


@pytest.fixture(scope="module")
def provider(install_dir, tmp_path_factory):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = {
        "issuer": issuer,
        "host": "127.0.0.1",
        "port": port,
        "jwks": oidc_dev.generate_provider_keys(),
        "cookie_keys": [secrets.token_urlsafe(32)],
        "api": {"audience": API_AUDIENCE, "scope": "mlflow", "access_token_ttl": 120},
        "id_token_ttl": 120,
        "browser_client": {
            "client_id": BROWSER_ID,
            "client_secret": secrets.token_urlsafe(24),
            "redirect_uris": [REDIRECT_URI],
            "post_logout_redirect_uris": [POST_LOGOUT_URI],
        },
        "service_clients": [
            {
                "client_id": "ci-bot",
                "client_secret": secrets.token_urlsafe(24),
                "username": "svc-ci",
                "groups": ["writers"],
            }
        ],
        "users": [
            {
                "username": "alice",
                "password": secrets.token_urlsafe(12),
                "groups": ["/ml-admins", "readers"],
                "email": "alice@example.test",
            }
        ],
    }
    config_path = tmp_path_factory.mktemp("oidc-config") / "provider.json"
    oidc_dev.write_provider_config(config_path, config)
    log_path = config_path.with_name("provider.log")
    with log_path.open("wb") as log:
        process = oidc_dev.start_provider(install_dir, config_path, output=log)
    try:
        oidc_dev.wait_for_discovery(issuer, process=process)
        yield DevProvider(issuer, config, process)
    finally:
        process.terminate()  # by the pid we started, nothing else
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    log_text = log_path.read_text(errors="replace")
    for secret in (config["browser_client"]["client_secret"], config["users"][0]["password"]):
        assert secret not in log_text


def test_config_file_is_owner_only_and_not_on_the_command_line(provider):
    argv = Path(f"/proc/{provider.process.pid}/cmdline").read_bytes().split(b"\0")
    config_path = Path(argv[-2].decode())
    assert config_path.stat().st_mode & 0o777 == 0o600
    assert provider.service["client_secret"].encode() not in b" ".join(argv)


def test_discovery_names_the_issuer_and_serves_public_keys(provider):
    discovery = requests.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=5)
    document = discovery.json()
    assert document["issuer"] == provider.issuer
    assert document["end_session_endpoint"] == f"{provider.issuer}/session/end"
    assert document["code_challenge_methods_supported"] == ["S256"]
    keys = requests.get(document["jwks_uri"], timeout=5).json()["keys"]
    assert [key["kid"] for key in keys] == [provider.config["jwks"]["keys"][0]["kid"]]
    assert all("d" not in key and "p" not in key for key in keys)  # public halves only


def client_credentials(provider, secret: str) -> requests.Response:
    return requests.post(
        f"{provider.issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=(provider.service["client_id"], secret),
        timeout=5,
    )


def test_a_service_token_verifies_with_the_api_audience_and_username(provider):
    response = client_credentials(provider, provider.service["client_secret"])
    assert response.status_code == 200, response.text
    verified = verify_access_token(
        response.json()["access_token"], provider.settings(), provider.cache()
    )
    assert verified.username == "svc-ci"
    assert verified.groups == ("writers",)
    assert verified.subject == "ci-bot"
    assert verified.claims["aud"] == API_AUDIENCE


def test_a_wrong_client_secret_gets_401(provider):
    response = client_credentials(provider, "not-the-secret")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def follow(session: requests.Session, response: requests.Response) -> requests.Response | str:
    """Follow redirects inside the provider; stop at (and return) the relying party's URL."""
    for _ in range(10):
        if response.status_code not in (302, 303):
            return response
        location = urljoin(response.url, response.headers["Location"])
        if location.startswith((REDIRECT_URI, POST_LOGOUT_URI)):
            return location
        response = session.get(location, allow_redirects=False, timeout=5)
    raise AssertionError("redirect loop")


def start_login(provider, session: requests.Session, challenge: str, nonce: str, state: str):
    params = {
        "client_id": BROWSER_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile email groups mlflow",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": nonce,
        "state": state,
    }
    page = follow(
        session,
        session.get(f"{provider.issuer}/auth", params=params, allow_redirects=False, timeout=5),
    )
    assert isinstance(page, requests.Response) and page.status_code == 200, page
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action, page.text
    return urljoin(page.url, action.group(1))


def log_in(session: requests.Session, form_url: str, username: str, password: str):
    form = {"prompt": "login", "login": username, "password": password}
    return session.post(form_url, data=form, allow_redirects=False, timeout=5)


def test_authorization_code_flow_with_pkce(provider):
    session = requests.Session()
    verifier, challenge = pkce_pair()
    nonce, state = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    form_url = start_login(provider, session, challenge, nonce, state)

    refused = log_in(session, form_url, provider.user["username"], "wrong password")
    assert refused.status_code == 401

    landed = follow(
        session, log_in(session, form_url, provider.user["username"], provider.user["password"])
    )
    assert isinstance(landed, str), landed
    query = parse_qs(urlsplit(landed).query)
    assert query["state"] == [state]
    assert query["iss"] == [provider.issuer]

    exchange = requests.post(
        f"{provider.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(BROWSER_ID, provider.browser["client_secret"]),
        timeout=5,
    )
    assert exchange.status_code == 200, exchange.text
    tokens = exchange.json()

    import jwt  # the ID token is the relying party's to check; here, its signature and claims

    jwks = jwt.PyJWKClient(f"{provider.issuer}/jwks")
    id_token = tokens["id_token"]
    id_claims = jwt.decode(
        id_token,
        jwks.get_signing_key_from_jwt(id_token).key,
        algorithms=["RS256"],
        audience=BROWSER_ID,
        issuer=provider.issuer,
    )
    assert id_claims["nonce"] == nonce
    assert id_claims["groups"] == ["/ml-admins", "readers"]
    assert id_claims["preferred_username"] == "alice"

    settings, cache = provider.settings(), provider.cache()
    verified = verify_access_token(tokens["access_token"], settings, cache)
    assert (verified.username, verified.subject) == ("alice", "alice")
    assert verified.groups == ("ml-admins", "readers")
    assert verified.claims["scope"] == "mlflow"

    with pytest.raises(TokenRefused, match="audience"):
        verify_access_token(id_token, settings, cache)

    # RP-initiated logout: confirm on the provider, land on the registered post-logout URI.
    logout_page = session.get(
        f"{provider.issuer}/session/end",
        params={"id_token_hint": id_token, "post_logout_redirect_uri": POST_LOGOUT_URI},
        timeout=5,
    )
    assert logout_page.status_code == 200
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', logout_page.text)
    assert xsrf, logout_page.text
    confirmed = session.post(
        f"{provider.issuer}/session/end/confirm",
        data={"xsrf": xsrf.group(1), "logout": "yes"},
        allow_redirects=False,
        timeout=5,
    )
    assert follow(session, confirmed) == POST_LOGOUT_URI


def test_an_authorization_request_without_pkce_is_refused(provider):
    params = {
        "client_id": BROWSER_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid",
        "state": "s",
    }
    response = requests.get(
        f"{provider.issuer}/auth", params=params, allow_redirects=False, timeout=5
    )
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert "PKCE" in query["error_description"][0]


def test_the_provider_stops_on_sigterm(install_dir, tmp_path):
    port = free_port()
    config = {
        "issuer": f"http://127.0.0.1:{port}",
        "port": port,
        "jwks": oidc_dev.generate_provider_keys(),
        "cookie_keys": [secrets.token_urlsafe(32)],
        "api": {"audience": API_AUDIENCE},
        "browser_client": {
            "client_id": BROWSER_ID,
            "client_secret": "x",
            "redirect_uris": [REDIRECT_URI],
        },
        "service_clients": [],
        "users": [],
    }
    config_path = tmp_path / "provider.json"
    oidc_dev.write_provider_config(config_path, config)
    process = oidc_dev.start_provider(install_dir, config_path, output=subprocess.DEVNULL)
    try:
        oidc_dev.wait_for_discovery(config["issuer"], process=process)
        started = time.monotonic()
        process.terminate()
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 3
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_a_config_readable_by_others_is_refused(install_dir, tmp_path):
    config_path = tmp_path / "provider.json"
    config_path.write_text("{}")
    config_path.chmod(0o644)
    result = subprocess.run(
        oidc_dev.provider_command(install_dir, config_path),
        env=oidc_dev.node_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "chmod 600" in result.stderr
