"""The sso profile on the local runtime: the dev OpenID Provider under supervisord next to
MLflow, and machine clients' tokens from it (`invoke env --oidc`, the SDK's auth provider).

Whether MLflow accepts those tokens is the server side's test, not this one's."""

from __future__ import annotations

import os
import shlex
import signal
import time
from pathlib import Path

import pytest

from mlflow_stack import oidc_client
from mlflow_stack.auth.jwt_access import JwksCache, JwtAccessSettings, verify_access_token
from mlflow_stack.files import parse_env_file
from tests.stacks import free_port, make_stack

TOKEN_SECONDS = 10  # the profile's minimum: the renewal test waits for one lifetime


@pytest.fixture(scope="module")
def sso_stack(integration_home):
    stack = make_stack(integration_home, "sso")
    stack.env["MLFLOW_STACK_OIDC_PROVIDER_PORT"] = str(free_port())
    stack.env["MLFLOW_STACK_OIDC_ACCESS_TOKEN_SECONDS"] = str(TOKEN_SECONDS)
    started = time.monotonic()
    stack.invoke("up", timeout=300)
    print(f"sso up (local runtime) took {time.monotonic() - started:.1f} s")
    yield stack
    stack.invoke("down", check=False)


def issuer(stack) -> str:
    return f"http://127.0.0.1:{stack.env['MLFLOW_STACK_OIDC_PROVIDER_PORT']}"


def status_rows(stack) -> dict[str, list[str]]:
    out = stack.invoke("status", check=False).stdout
    return {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}


def provider_pid(stack) -> int:
    row = status_rows(stack)["oidc-provider"]
    assert row[1] == "running", row
    return int(row[2])


def exported(out: str) -> dict[str, str]:
    values = {}
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
            values[key] = value
    return values


def stack_secrets(stack) -> list[str]:
    return list(parse_env_file(stack.state_dir / "secrets.env").values())


def verify(stack, token: str):
    settings = JwtAccessSettings(
        issuer=issuer(stack), audience="urn:mlflow-stack:api", browser_client_id="mlflow"
    )
    return verify_access_token(token, settings, JwksCache(f"{issuer(stack)}/jwks"))


def test_status_shows_the_provider_healthy(sso_stack):
    row = status_rows(sso_stack)["oidc-provider"]
    assert row[1] == "running" and row[4] == "healthy", row
    assert row[3] == f"127.0.0.1:{sso_stack.env['MLFLOW_STACK_OIDC_PROVIDER_PORT']}"
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{row[2]}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    print(f"dev OpenID Provider RSS: {rss_kb / 1024:.0f} MB")


def test_env_oidc_gives_a_token_for_the_api_naming_the_machine(sso_stack):
    values = exported(sso_stack.invoke("env", "--oidc").stdout)
    verified = verify(sso_stack, values["MLFLOW_TRACKING_TOKEN"])
    assert verified.username == values["MLFLOW_TRACKING_USERNAME"]
    assert verified.username == "service-account-mlflow-machine"
    # The machine client is in the login group, which gates machine tokens as it gates people.
    assert verified.groups == ("mlflow-users",)
    assert verified.expires_at - verified.claims["iat"] == TOKEN_SECONDS


def test_no_secret_on_any_command_line_nor_in_the_providers_environment(sso_stack):
    secrets = [secret.encode() for secret in stack_secrets(sso_stack)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        assert not any(secret in cmdline for secret in secrets), entry.name
    environ = Path(f"/proc/{provider_pid(sso_stack)}/environ").read_bytes().split(b"\0")
    assert sorted(item.split(b"=")[0] for item in environ if item) == [b"NODE_ENV", b"PATH"]


def test_the_auth_provider_renews_its_token_from_the_real_provider(sso_stack):
    values = exported(sso_stack.invoke("env", "--oidc", "--auth-provider").stdout)
    assert values["MLFLOW_TRACKING_AUTH"] == "mlflow-stack-oidc"
    source = oidc_client.TokenSource(oidc_client.credentials_from_environment(values))
    first = source.token()
    time.sleep(TOKEN_SECONDS * 0.8 + 0.5)  # renewed a fifth of its lifetime early
    second = source.token()
    assert second != first
    assert verify(sso_stack, second).username == "service-account-mlflow-machine"


def test_a_killed_provider_is_restarted_by_supervisord(sso_stack):
    killed = provider_pid(sso_stack)
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = status_rows(sso_stack).get("oidc-provider", [])
        if row[1:2] == ["running"] and row[2] != str(killed) and row[4] == "healthy":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the provider did not come back: {row}")
    exported(sso_stack.invoke("env", "--oidc").stdout)  # and it issues tokens again


def test_logs_and_restart_of_the_provider(sso_stack):
    before = provider_pid(sso_stack)
    sso_stack.invoke("restart", "--service", "oidc-provider")
    assert provider_pid(sso_stack) != before
    logs = sso_stack.invoke("logs", "--service", "oidc-provider").stdout
    assert "listening on 127.0.0.1" in logs
    assert not any(secret in logs for secret in stack_secrets(sso_stack))


def test_down_stops_the_provider(sso_stack):
    pid = provider_pid(sso_stack)
    sso_stack.invoke("down")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()
    assert status_rows(sso_stack)["oidc-provider"][1] == "stopped"
