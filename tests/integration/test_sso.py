"""Single sign-on against the real dev OpenID Provider, on the sso profile (2 workers, local
runtime), driven over HTTP as a browser would: redirects, the provider's login form, cookies.
The same flow in a real headless Chromium is in tests/browser."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from mlflow_stack.files import parse_env_file
from tests.stacks import Stack, free_port, make_stack

TOKEN_SECONDS = 10
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
CURRENT_USER = "/ajax-api/2.0/mlflow/users/current"
AS_THE_UI = {"Content-Type": "application/json; charset=utf-8"}


@pytest.fixture(scope="module")
def sso(integration_home) -> Stack:
    stack = make_stack(integration_home, "sso")
    stack.env["MLFLOW_STACK_OIDC_PROVIDER_PORT"] = str(free_port())
    # Short-lived access tokens, so that a job outliving three of them takes 30 s, not 15 min.
    stack.env["MLFLOW_STACK_OIDC_ACCESS_TOKEN_SECONDS"] = str(TOKEN_SECONDS)
    stack.invoke("up", timeout=600)
    yield stack
    stack.invoke("down", check=False, timeout=300)


def url(stack: Stack) -> str:
    return stack.url


def browser_session(stack: Stack) -> requests.Session:
    """A cookie-keeping session that trusts the profile's CA (sso speaks HTTPS)."""
    session = requests.Session()
    # Off, REQUESTS_CA_BUNDLE (where set) would replace the session's verify.
    session.trust_env = False
    session.verify = stack.verify
    return session


def dev_password(stack: Stack) -> str:
    return parse_env_file(stack.state_dir / "secrets.env")["MLFLOW_STACK_OIDC_DEV_USER_PASSWORD"]


def follow(session: requests.Session, response: requests.Response, stop: str) -> requests.Response:
    """Follow redirects as a browser does, until a page that is not a redirect, or `stop`."""
    for _ in range(15):
        if response.status_code not in (301, 302, 303):
            return response
        location = urljoin(response.url, response.headers["Location"])
        if stop and urlsplit(location).path == stop:
            return session.get(location, headers=NAVIGATE, allow_redirects=False, timeout=30)
        response = session.get(location, headers=NAVIGATE, allow_redirects=False, timeout=30)
    raise AssertionError("redirect loop")


def log_in(stack: Stack, username: str, password: str | None = None) -> requests.Session:
    """A browser session that opened the UI, was sent to the provider and signed in there."""
    session = browser_session(stack)
    page = follow(
        session, session.get(url(stack) + "/", headers=NAVIGATE, allow_redirects=False), ""
    )
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action, page.text[:500]
    answer = session.post(
        urljoin(page.url, action.group(1)),
        data={"prompt": "login", "login": username, "password": password or dev_password(stack)},
        allow_redirects=False,
        timeout=30,
    )
    session.landed = follow(session, answer, "/")  # type: ignore[attr-defined]
    return session


def current_user(stack: Stack, session: requests.Session) -> requests.Response:
    # As the MLflow UI asks it (its fetch sends a JSON Content-Type even on a GET).
    return session.get(url(stack) + CURRENT_USER, headers=AS_THE_UI, timeout=30)


def test_a_page_load_goes_to_the_login_and_an_api_call_gets_a_401(sso):
    page = requests.get(
        url(sso) + "/", headers=NAVIGATE, allow_redirects=False, verify=sso.verify, timeout=30
    )
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/oidc/login?next=")
    api = requests.post(
        url(sso) + "/api/2.0/mlflow/experiments/search",
        json={"max_results": 1},
        verify=sso.verify,
        timeout=30,
    )
    assert api.status_code == 401 and "<html" not in api.text.lower()


def test_login_binds_the_user_and_its_admin_group(sso):
    session = log_in(sso, "alice")
    assert session.landed.status_code == 200 and session.landed.url.startswith(url(sso))
    cookie = session.cookies.get("mlflow_stack_session")
    assert cookie
    me = current_user(sso, session).json()
    assert me["user"]["username"] == "alice" and me["user"]["is_admin"] is True
    assert me["is_basic_auth"] is True  # so that the UI shows Logout
    # The session holds on both workers: many requests, all accepted.
    statuses = {current_user(sso, session).status_code for _ in range(20)}
    assert statuses == {200}


def test_a_user_outside_the_login_group_is_refused(sso):
    session = log_in(sso, "carol")
    assert session.landed.status_code == 403
    assert "not a member of mlflow-users" in session.landed.text
    assert session.cookies.get("mlflow_stack_session") is None


def test_an_idp_user_called_admin_is_not_the_profiles_admin(sso):
    session = log_in(sso, "admin")
    me = current_user(sso, session).json()["user"]
    assert me["username"] != "admin" and me["username"].startswith("admin")
    assert me["is_admin"] is False
    create = session.post(
        url(sso) + "/api/2.0/mlflow/users/create",
        json={"username": "intruder", "password": "a-long-enough-password"},
        timeout=30,
    )
    assert create.status_code == 403


def test_the_ui_logout_ends_the_session_on_every_worker_and_at_the_provider(sso):
    session = log_in(sso, "bob")
    cookie = session.cookies.get("mlflow_stack_session")
    assert current_user(sso, session).status_code == 200
    # What MLflow's UI sends on Logout: an XMLHttpRequest for users/current with made-up
    # credentials, which a browser sends only after a challenge: first without them...
    challenged = session.get(url(sso) + CURRENT_USER, timeout=30)
    assert challenged.status_code == 401 and "Basic" in challenged.headers["WWW-Authenticate"]
    # ...then, challenged, as the made-up user: that ends the session, without a new prompt.
    beacon = session.get(
        url(sso) + CURRENT_USER, auth=("mlflow-logged-out-x1", "mlflow-logged-out-x1"), timeout=30
    )
    assert beacon.status_code == 401 and "WWW-Authenticate" not in beacon.headers
    stale = browser_session(sso)
    stale.cookies.set("mlflow_stack_session", cookie)
    assert {current_user(sso, stale).status_code for _ in range(20)} == {401}
    # The UI then loads its start page: that goes through the provider's logout.
    reload = session.get(url(sso) + "/", headers=NAVIGATE, allow_redirects=False, timeout=30)
    assert reload.status_code == 302 and reload.headers["Location"] == "/oidc/logout"
    at_provider = session.get(url(sso) + "/oidc/logout", allow_redirects=False, timeout=30)
    assert at_provider.status_code == 302
    assert (
        "/session/end" in at_provider.headers["Location"]
        or "logout" in (at_provider.headers["Location"])
    )
    # Logged out: the next page load asks for a login again.
    again = requests.get(
        url(sso) + "/", headers=NAVIGATE, allow_redirects=False, verify=sso.verify, timeout=30
    )
    assert again.headers["Location"].startswith("/oidc/login")


def test_a_forged_or_foreign_state_is_refused(sso):
    session = browser_session(sso)
    first = session.get(url(sso) + "/oidc/login?next=/", allow_redirects=False, timeout=30)
    assert first.status_code == 302
    forged = session.get(
        url(sso) + "/oidc/callback?code=x&state=not-the-state", allow_redirects=False, timeout=30
    )
    assert forged.status_code == 400
    assert session.cookies.get("mlflow_stack_session") is None


def test_next_never_leaves_the_server(sso):
    session = browser_session(sso)
    answer = session.get(
        url(sso) + "/oidc/login",
        params={"next": "//evil.example/"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302
    flow = session.cookies.get("mlflow_stack_login")
    assert flow and "evil" not in answer.headers["Location"]


def oidc_env(stack: Stack, *flags: str) -> dict[str, str]:
    """What `eval "$(invoke env --oidc FLAGS)"` would put into a shell."""
    exported = stack.invoke("env", "--oidc", *flags).stdout
    env = dict(stack.env)
    for line in exported.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0]
        elif line.startswith("unset "):
            for key in line.split()[1:]:
                env.pop(key, None)
    return env


def run_sdk(env: dict[str, str], script: str, timeout: float = 120) -> dict:
    """A script of the real MLflow SDK; returns the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_client_credentials_token_works_with_the_mlflow_sdk(sso):
    env = oidc_env(sso)
    token = env["MLFLOW_TRACKING_TOKEN"]
    assert not token.startswith("mlst_") and token.count(".") == 2
    script = (
        "import json, mlflow\n"
        "mlflow.set_experiment('sso-machine')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('m', 1.0)\n"
        "print(json.dumps(mlflow.get_run(run.info.run_id).data.tags))\n"
    )
    tags = run_sdk(env, script)
    assert tags["mlflow.user"] == env["MLFLOW_TRACKING_USERNAME"]


def test_a_tampered_or_unsigned_token_is_refused_as_a_bearer(sso):
    token = oidc_env(sso)["MLFLOW_TRACKING_TOKEN"]
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    for bearer in (tampered, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."):
        answer = requests.post(
            url(sso) + "/api/2.0/mlflow/experiments/search",
            json={"max_results": 1},
            headers={"Authorization": f"Bearer {bearer}"},
            verify=sso.verify,
            timeout=30,
        )
        assert answer.status_code == 401


def test_the_auth_provider_keeps_a_run_logging_across_three_token_lifetimes(sso):
    env = oidc_env(sso, "--auth-provider")
    assert env["MLFLOW_TRACKING_AUTH"] == "mlflow-stack-oidc" and "MLFLOW_TRACKING_TOKEN" not in env
    seconds = 3 * TOKEN_SECONDS + 5
    script = (
        "import json, time, mlflow\n"
        "mlflow.set_experiment('sso-long-job')\n"
        "with mlflow.start_run() as run:\n"
        f"    for step in range({seconds}):\n"
        "        mlflow.log_metric('loss', 1.0 / (step + 1), step=step)\n"
        "        time.sleep(1)\n"
        "history = mlflow.MlflowClient().get_metric_history(run.info.run_id, 'loss')\n"
        "print(json.dumps({'steps': len(history), 'user': run.info.user_id}))\n"
    )
    outcome = run_sdk(env, script, timeout=300)
    assert outcome == {"steps": seconds, "user": env["MLFLOW_TRACKING_USERNAME"]}


def test_smoke_adds_the_single_sign_on_checks(sso):
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_stack.smoke", "--profile", "sso"],
        env=sso.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "OpenID Connect access token authenticates" in result.stdout
    assert "Forged OpenID Connect token gets 401" in result.stdout
    assert re.search(r"=+ 18 passed in [\d.]+s =+$", result.stdout.strip())


def test_leaving_the_admin_group_demotes_at_the_next_login(sso):
    assert current_user(sso, log_in(sso, "alice")).json()["user"]["is_admin"] is True
    sso.env["MLFLOW_STACK_OIDC_DEV_USERS"] = (
        "alice:mlflow-users,bob:mlflow-users,carol:,admin:mlflow-users"
    )
    try:
        # The provider's users live in its config: render it, restart the provider.
        sso.invoke("render")
        sso.invoke("restart", "--service", "oidc-provider", timeout=300)
        assert current_user(sso, log_in(sso, "alice")).json()["user"]["is_admin"] is False
    finally:
        sso.env.pop("MLFLOW_STACK_OIDC_DEV_USERS")
        sso.invoke("render")
        sso.invoke("restart", "--service", "oidc-provider", timeout=300)
