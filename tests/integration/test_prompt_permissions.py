"""perms.* on prompts, scorers and the AI gateway, against a real demo stack (NO_PERMISSIONS).

Grants go through `invoke perms.*` as a user runs them; what they allow is asked through the
real MLflow SDK (prompts) or plain REST (scorers, gateway), as a non-admin with a password and
with an access token from `invoke tokens.create`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from tests.stacks import Stack

USER = "pia"

# Runs in a subprocess configured only by MLFLOW_TRACKING_*: load a prompt's version 1, search
# for prompts, register a new version. A refusal is an outcome, not a failure.
PROMPT_PROBE = textwrap.dedent(
    """
    import json, re, sys
    import mlflow
    from mlflow.exceptions import MlflowException

    def attempt(action):
        try:
            return {"ok": True, "status": 200, "value": action()}
        except MlflowException as exc:
            found = re.search(r"error code (\\d{3})", str(exc))
            status = int(found[1]) if found else exc.get_http_status_code()
            return {"ok": False, "status": status, "value": str(exc).splitlines()[0]}

    name = sys.argv[1]
    print(json.dumps({
        "load": attempt(lambda: mlflow.genai.load_prompt(f"prompts:/{name}/1").template),
        "search": attempt(lambda: [p.name for p in mlflow.genai.search_prompts()]),
        "register": attempt(
            lambda: mlflow.genai.register_prompt(name=name, template="Hi {{who}}").version
        ),
    }))
    """
)
REGISTER_PROMPT = (
    "import sys, mlflow; mlflow.genai.register_prompt(name=sys.argv[1], template='Hello {{who}}')"
)
REGISTER_SCORER = textwrap.dedent(
    """
    import sys
    from mlflow.genai.scorers import Guidelines
    Guidelines(name=sys.argv[2], guidelines="be polite").register(experiment_id=sys.argv[1])
    """
)


def python(code: str, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def admin_env(demo: Stack) -> dict[str, str]:
    return demo.client_env()


@pytest.fixture(scope="module")
def user_envs(demo: Stack, admin_env: dict[str, str]) -> dict[str, dict[str, str]]:
    """How the SDK acts as the non-admin: with their password, and with a token of theirs."""
    password = f"{USER}-password-{time.monotonic_ns()}"
    demo.invoke("users.add", "--user", USER, "--password-stdin", stdin=password)
    token = json.loads(demo.invoke("tokens.create", "--user", USER, "--json").stdout)["token"]
    base = {k: v for k, v in demo.env.items() if not k.startswith("MLFLOW_TRACKING_")}
    with_password = {
        **base,
        "MLFLOW_TRACKING_URI": admin_env["MLFLOW_TRACKING_URI"],
        "MLFLOW_TRACKING_SERVER_CERT_PATH": admin_env["MLFLOW_TRACKING_SERVER_CERT_PATH"],
        "MLFLOW_TRACKING_USERNAME": USER,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    with_token = dict(base)
    for line in demo.invoke("env", "--token", stdin=token + "\n").stdout.splitlines():
        if line.startswith("export "):
            key, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
            with_token[key] = value
    assert with_token["MLFLOW_TRACKING_TOKEN"] == token
    assert "MLFLOW_TRACKING_PASSWORD" not in with_token
    return {"password": with_password, "token": with_token}


def rest(env: dict[str, str], method: str, path: str, **kwargs) -> requests.Response:
    """A REST call authenticated as the SDK would be by env (a token wins over a password)."""
    if env.get("MLFLOW_TRACKING_TOKEN"):
        kwargs["headers"] = {"Authorization": f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"}
    else:
        kwargs["auth"] = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    verify = env.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    return requests.request(
        method, env["MLFLOW_TRACKING_URI"] + path, timeout=30, verify=verify, **kwargs
    )


def probe(env: dict[str, str], prompt: str) -> dict[str, dict]:
    return json.loads(python(PROMPT_PROBE, env, prompt).strip().splitlines()[-1])


def perms(demo: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return demo.invoke(f"perms.{args[0]}", "--user", USER, *args[1:], check=check)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    error = result.stderr.strip()
    assert error.startswith("error: ") and "\n" not in error, error
    return error


def listed(demo: Stack) -> dict[tuple[str, str], str]:
    """perms.list's rows, as (TYPE, ID) -> the whole line."""
    out = perms(demo, "list").stdout
    rows = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] != "anything":
            rows[(fields[0], fields[1])] = line
    return rows


# --- prompts: READ loads, EDIT registers, revoke takes it away -----------------------------------


@pytest.mark.parametrize("auth", ["password", "token"])
def test_prompt_grants_are_what_the_sdk_is_allowed(demo, admin_env, user_envs, auth):
    prompt = f"greeting-{auth}"
    python(REGISTER_PROMPT, admin_env, prompt)
    env = user_envs[auth]

    before = probe(env, prompt)
    assert before["load"]["status"] == 403, before
    # Without read access the SDK cannot see the prompt, so it tries to create it: refused too.
    assert not before["register"]["ok"], before
    assert prompt not in before["search"]["value"]

    # A registered-model grant on a prompt is never enforced by MLflow 3.17: refused, with the fix.
    error = one_line_error(perms(demo, "grant", "--model", prompt, "--level", "READ", check=False))
    assert f"--prompt {prompt}" in error
    assert ("registered_model", prompt) not in listed(demo)

    granted = perms(demo, "grant", "--prompt", prompt, "--level", "READ").stdout
    assert f"granted READ on prompt '{prompt}' to {USER}" in granted
    try:
        reading = probe(env, prompt)
        assert reading["load"] == {"ok": True, "status": 200, "value": "Hello {{who}}"}
        assert prompt in reading["search"]["value"]
        assert reading["register"]["status"] == 403, reading
        assert "READ" in listed(demo)[("prompt", prompt)]

        perms(demo, "grant", "--prompt", prompt, "--level", "EDIT")
        editing = probe(env, prompt)
        assert editing["register"] == {"ok": True, "status": 200, "value": 2}
        assert "EDIT" in listed(demo)[("prompt", prompt)]
    finally:
        revoked = perms(demo, "revoke", "--prompt", prompt).stdout
    assert f"revoked the grant of {USER} on prompt '{prompt}'" in revoked
    after = probe(env, prompt)
    assert after["load"]["status"] == 403 and not after["register"]["ok"], after
    assert prompt not in after["search"]["value"]
    assert ("prompt", prompt) not in listed(demo)


def test_a_prompt_is_not_a_model_and_use_is_not_a_prompt_level(demo, admin_env):
    python(REGISTER_PROMPT, admin_env, "greeting-levels")
    created = rest(
        admin_env, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": "plain-model"}
    )
    assert created.status_code == 200, created.text
    wrong_type = perms(demo, "grant", "--prompt", "plain-model", "--level", "READ", check=False)
    assert "use --model plain-model" in one_line_error(wrong_type)
    use = perms(demo, "grant", "--prompt", "greeting-levels", "--level", "USE", check=False)
    assert "USE is not enforced on a prompt" in one_line_error(use)
    assert listed(demo) == {}


# --- scorers and the gateway: granted, listed, enforced, revoked ---------------------------------


@pytest.mark.parametrize("auth", ["password", "token"])
def test_a_scorer_grant_is_made_listed_enforced_and_revoked(demo, admin_env, user_envs, auth):
    experiment = f"scored-{auth}"
    made = rest(admin_env, "POST", "/api/2.0/mlflow/experiments/create", json={"name": experiment})
    experiment_id = made.json()["experiment_id"]
    python(REGISTER_SCORER, admin_env, experiment_id, "polite/ness")
    env = user_envs[auth]
    query = {"experiment_id": experiment_id, "name": "polite/ness"}
    assert rest(env, "GET", "/api/3.0/mlflow/scorers/get", params=query).status_code == 403

    selector = f"{experiment_id}/polite/ness"
    granted = perms(demo, "grant", "--scorer", selector, "--level", "READ").stdout
    assert f"granted READ on scorer 'polite/ness' of experiment '{experiment}'" in granted
    row = listed(demo)[("scorer", f"{experiment_id}/polite%2Fness")]
    assert f"polite/ness (experiment {experiment})" in row and "READ" in row
    assert rest(env, "GET", "/api/3.0/mlflow/scorers/get", params=query).status_code == 200

    perms(demo, "revoke", "--scorer", selector)
    assert ("scorer", f"{experiment_id}/polite%2Fness") not in listed(demo)
    assert rest(env, "GET", "/api/3.0/mlflow/scorers/get", params=query).status_code == 403


@pytest.mark.parametrize("auth", ["password", "token"])
def test_gateway_grants_are_made_listed_enforced_and_revoked(demo, admin_env, user_envs, auth):
    gateway = "/api/3.0/mlflow/gateway"
    secret = rest(
        admin_env,
        "POST",
        f"{gateway}/secrets/create",
        json={
            "secret_name": f"key-{auth}",
            "secret_value": {"api_key": "sk-not-a-real-key"},
            "provider": "openai",
        },
    ).json()["secret"]
    definition = rest(
        admin_env,
        "POST",
        f"{gateway}/model-definitions/create",
        json={
            "name": f"model-{auth}",
            "secret_id": secret["secret_id"],
            "provider": "openai",
            "model_name": "gpt-4o-mini",
        },
    ).json()["model_definition"]
    endpoint = rest(
        admin_env,
        "POST",
        f"{gateway}/endpoints/create",
        json={
            "name": f"chat-{auth}",
            "model_configs": [
                {
                    "model_definition_id": definition["model_definition_id"],
                    "linkage_type": "PRIMARY",
                    "weight": 1.0,
                }
            ],
        },
    ).json()["endpoint"]
    env = user_envs[auth]
    resources = [
        ("--gateway-secret", secret["secret_name"], "gateway_secret", secret["secret_id"]),
        (
            "--gateway-model-definition",
            definition["name"],
            "gateway_model_definition",
            definition["model_definition_id"],
        ),
        ("--gateway-endpoint", endpoint["name"], "gateway_endpoint", endpoint["endpoint_id"]),
    ]
    get_endpoint = {"endpoint_id": endpoint["endpoint_id"]}
    assert rest(env, "GET", f"{gateway}/endpoints/get", params=get_endpoint).status_code == 403

    for flag, name, _, _ in resources:
        perms(demo, "grant", flag, name, "--level", "USE")
    rows = listed(demo)
    for _, name, resource_type, resource_id in resources:
        assert name in rows[(resource_type, resource_id)]
        assert "USE" in rows[(resource_type, resource_id)]
    assert rest(env, "GET", f"{gateway}/endpoints/get", params=get_endpoint).status_code == 200

    for flag, name, _, _ in resources:
        perms(demo, "revoke", flag, name)
    assert listed(demo) == {}
    assert rest(env, "GET", f"{gateway}/endpoints/get", params=get_endpoint).status_code == 403
