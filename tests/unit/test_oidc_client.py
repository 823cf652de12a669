"""Machine clients in-process: the client-credentials grant against a fake token endpoint, the
auth provider's cache and renewal on an injected clock, and `invoke env --oidc`."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from importlib.metadata import entry_points

import pytest
import requests

from mlflow_stack import oidc_client
from mlflow_stack.errors import StackError
from mlflow_stack.oidc_client import AccessToken, ClientCredentials, TokenSource
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.secrets import load_secrets
from tests.unit.test_tasks_cli import assert_one_line_error, run_invoke

SECRET = "machine-secret-for-the-unit-tests"
CREDENTIALS = ClientCredentials(
    "http://127.0.0.1:9/token", "ci-bot", SECRET, "urn:mlflow-stack:api"
)


def jwt_with(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


class FakeResponse:
    def __init__(self, status_code: int, body: object) -> None:
        self.status_code = status_code
        self.body = body

    def json(self) -> object:
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


class FakeProvider:
    """Discovery and token endpoint; each grant returns a new token."""

    def __init__(self, expires_in: int = 300, username: str = "service-account-ci-bot"):
        self.expires_in = expires_in
        self.username = username
        self.grants: list[dict] = []
        self.status = 200
        self.unreachable = False

    def get(self, url, timeout):
        if self.unreachable:
            raise requests.ConnectionError("refused")
        issuer = url.removesuffix("/.well-known/openid-configuration")
        return FakeResponse(200, {"issuer": issuer, "token_endpoint": issuer + "/token"})

    def post(self, url, data, auth, headers, timeout):
        if self.unreachable:
            raise requests.ConnectionError("refused")
        self.grants.append({"url": url, "data": data, "auth": auth})
        if self.status != 200:
            return FakeResponse(
                self.status,
                {"error": "invalid_client", "error_description": "client authentication failed"},
            )
        token = jwt_with({"preferred_username": self.username, "n": len(self.grants)})
        return FakeResponse(200, {"access_token": token, "expires_in": self.expires_in})


@pytest.fixture
def provider(monkeypatch):
    fake = FakeProvider()
    monkeypatch.setattr(oidc_client.requests, "get", fake.get)
    monkeypatch.setattr(oidc_client.requests, "post", fake.post)
    return fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_grant_asks_for_the_api_audience_with_basic_client_auth(provider):
    token = oidc_client.request_token(CREDENTIALS)
    assert token.expires_in == 300
    assert oidc_client.unverified_claims(token.value)["preferred_username"] == (
        "service-account-ci-bot"
    )
    (grant,) = provider.grants
    assert grant["url"] == CREDENTIALS.token_url
    assert grant["data"] == {
        "grant_type": "client_credentials",
        "resource": "urn:mlflow-stack:api",
        "audience": "urn:mlflow-stack:api",
    }
    assert grant["auth"] == ("ci-bot", SECRET)
    assert SECRET not in repr(CREDENTIALS)


def test_a_refused_grant_is_one_line_without_the_secret(provider):
    provider.status = 401
    with pytest.raises(StackError) as refused:
        oidc_client.request_token(CREDENTIALS)
    message = str(refused.value)
    assert message == (
        "the OpenID Provider refused the client-credentials grant of ci-bot "
        "(401, invalid_client: client authentication failed)"
    )
    provider.unreachable = True
    with pytest.raises(StackError, match="not reachable at http://127.0.0.1:9/token"):
        oidc_client.request_token(CREDENTIALS)


def test_the_token_is_cached_and_renewed_shortly_before_it_expires(provider):
    clock = Clock()
    source = TokenSource(CREDENTIALS, clock=clock)
    first = source.token()
    clock.now += 269  # 300 s tokens are renewed 30 s early
    assert source.token() == first
    assert len(provider.grants) == 1
    clock.now += 1
    second = source.token()
    assert second != first and len(provider.grants) == 2

    # A job longer than many lifetimes: one grant per lifetime, never an expired token.
    provider.expires_in = 10  # short tokens are renewed a fifth of their lifetime early
    clock.now += 1000
    issued_at = []
    for _ in range(300):
        count = len(provider.grants)
        source.token()
        if len(provider.grants) > count:
            issued_at.append(clock.now)
        clock.now += 0.5
    gaps = {round(b - a, 1) for a, b in itertools.pairwise(issued_at)}
    assert gaps == {8.0}


def test_threads_share_one_grant(monkeypatch):
    calls = []

    def slow_fetch(credentials):
        calls.append(credentials)
        time.sleep(0.05)
        return AccessToken(f"token-{len(calls)}", 300)

    source = TokenSource(CREDENTIALS, fetch=slow_fetch)
    tokens = []
    threads = [threading.Thread(target=lambda: tokens.append(source.token())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokens == ["token-1"] * 16 and len(calls) == 1


ENVIRONMENT = {
    oidc_client.TOKEN_URL_VAR: CREDENTIALS.token_url,
    oidc_client.CLIENT_ID_VAR: CREDENTIALS.client_id,
    oidc_client.CLIENT_SECRET_VAR: SECRET,
    oidc_client.AUDIENCE_VAR: CREDENTIALS.audience,
}


def test_the_configuration_comes_from_the_environment(tmp_path):
    assert oidc_client.credentials_from_environment(ENVIRONMENT) == CREDENTIALS
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    from_file = {
        **ENVIRONMENT,
        oidc_client.CLIENT_SECRET_VAR: "",
        oidc_client.CLIENT_SECRET_FILE_VAR: str(secret_file),
    }
    assert oidc_client.credentials_from_environment(from_file) == CREDENTIALS
    with pytest.raises(StackError, match="needs MLFLOW_STACK_MACHINE_CLIENT_ID, MLFLOW_STACK_M"):
        oidc_client.credentials_from_environment({oidc_client.TOKEN_URL_VAR: CREDENTIALS.token_url})


def test_mlflow_finds_the_auth_provider_and_it_signs_requests(provider, monkeypatch):
    (entry,) = [e for e in entry_points(group="mlflow.request_auth_provider")]
    assert entry.name == "mlflow-stack-oidc"
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(oidc_client, "_sources", {})
    from mlflow.tracking.request_auth.registry import fetch_auth

    signed = [
        fetch_auth("mlflow-stack-oidc")(requests.Request("GET", "http://mlflow/").prepare())
        for _ in range(3)
    ]
    headers = {request.headers["Authorization"] for request in signed}
    assert len(headers) == 1 and headers.pop().startswith("Bearer ey")
    assert len(provider.grants) == 1  # one token for the process, not one per request


@pytest.fixture
def sso_rendered(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_OIDC_PROVIDER_PORT", "15480")
    profile = load_profile("sso")
    render_profile(profile)
    return profile


def exported(out: str) -> dict[str, str]:
    return dict(
        line.removeprefix("export ").split("=", 1)
        for line in out.splitlines()
        if line.startswith("export ")
    )


def test_env_oidc_prints_a_token_and_its_user(capsys, provider, sso_rendered):
    code, out, err = run_invoke(capsys, "env", "-p", "sso", "--oidc")
    assert code == 0, err
    values = exported(out)
    assert values["MLFLOW_TRACKING_URI"] == "https://127.0.0.1:5400"  # sso speaks HTTPS
    assert values["MLFLOW_TRACKING_USERNAME"] == "service-account-ci-bot"
    assert oidc_client.unverified_claims(values["MLFLOW_TRACKING_TOKEN"])["n"] == 1
    assert out.splitlines()[-1] == "unset MLFLOW_TRACKING_AUTH MLFLOW_TRACKING_PASSWORD"
    assert provider.grants[0]["url"] == "http://127.0.0.1:15480/token"
    assert load_secrets(sso_rendered).oidc_machine_secret not in out + err


def test_env_oidc_auth_provider_prints_the_providers_configuration(capsys, provider, sso_rendered):
    code, out, err = run_invoke(capsys, "env", "-p", "sso", "--oidc", "--auth-provider")
    assert code == 0, err
    values = exported(out)
    assert values["MLFLOW_TRACKING_AUTH"] == "mlflow-stack-oidc"
    assert values[oidc_client.TOKEN_URL_VAR] == "http://127.0.0.1:15480/token"
    assert values[oidc_client.CLIENT_SECRET_VAR] == load_secrets(sso_rendered).oidc_machine_secret
    assert "MLFLOW_TRACKING_TOKEN" not in values


def test_env_oidc_errors_are_one_line(capsys, provider, sso_rendered):
    render_profile(load_profile("ci"))
    assert_one_line_error(
        run_invoke(capsys, "env", "-p", "ci", "--oidc"), "profile ci has no single sign-on"
    )
    provider.status = 401
    result = run_invoke(capsys, "env", "-p", "sso", "--oidc")
    assert_one_line_error(result, "refused the client-credentials grant of mlflow-machine")
    assert load_secrets(sso_rendered).oidc_machine_secret not in result[1] + result[2]
    provider.unreachable = True
    assert_one_line_error(
        run_invoke(capsys, "env", "-p", "sso", "--oidc"),
        "not reachable at http://127.0.0.1:15480/.well-known/openid-configuration",
    )


def test_env_oidc_needs_the_machine_secret_of_an_external_provider(capsys, stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_OIDC_PROVIDER", "external")
    monkeypatch.setenv("MLFLOW_STACK_OIDC_ISSUER", "https://login.example.test")
    monkeypatch.setenv("MLFLOW_STACK_OIDC_CLIENT_SECRET", "browser-secret-from-the-idp")
    render_profile(load_profile("sso"))
    assert_one_line_error(
        run_invoke(capsys, "env", "-p", "sso", "--oidc"),
        "set MLFLOW_STACK_OIDC_MACHINE_SECRET",
    )
