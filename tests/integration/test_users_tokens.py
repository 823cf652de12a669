"""users.*, perms.* and tokens.* against a real demo stack (default_permission NO_PERMISSIONS).

Every check goes through what a user would run: `invoke` in a subprocess for the tasks, the
real MLflow SDK (sdk_access.py) for what a user or token may do, plain REST for the admin API.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
import requests
from psycopg2 import sql

from mlflow_stack.auth.schema import TOKENS_TABLE_NAME
from mlflow_stack.auth.tokens import create_token
from mlflow_stack.files import parse_env_file
from mlflow_stack.profile import load_profile
from mlflow_stack.render import database_uri
from mlflow_stack.secrets import ENV_VARS, Secrets
from tests.stacks import Stack, base_environment, expire_token, free_port

SDK_ACCESS = Path(__file__).with_name("sdk_access.py")
USERS_API = "/api/2.0/mlflow/users"


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin_env(demo) -> dict[str, str]:
    return demo.client_env()


@pytest.fixture(scope="module")
def admin_run(demo, admin_env) -> tuple[str, str]:
    """An experiment and a run of the admin's, which nobody else was granted anything on."""
    logged = demo.sdk("log", "access", env=admin_env)
    return logged["experiment_id"], logged["run_id"]


@pytest.fixture(scope="module")
def issued_tokens() -> list[str]:
    """Every plaintext token this module was handed, for the clear-text check."""
    return []


def url(stack: Stack) -> str:
    return stack.url


def admin_auth(admin_env: dict[str, str]) -> tuple[str, str]:
    return admin_env["MLFLOW_TRACKING_USERNAME"], admin_env["MLFLOW_TRACKING_PASSWORD"]


def auth_database_url(stack: Stack) -> str:
    profile = load_profile(stack.profile, environ=stack.env)
    stored = parse_env_file(stack.state_dir / "secrets.env")
    secrets = Secrets(**{name: stored[var] for name, var in ENV_VARS.items() if var in stored})
    return database_uri(profile, secrets, "127.0.0.1", profile.postgres_port, profile.auth_database)


def add_user(stack: Stack, username: str) -> str:
    password = f"{username}-password-{time.monotonic_ns()}"
    result = stack.invoke("users.add", "--user", username, "--password-stdin", stdin=password)
    assert f"added user {username}" in result.stdout
    assert password not in result.stdout  # a chosen password is never echoed
    return password


def create_token_via_task(stack: Stack, user: str, issued: list[str], *extra: str) -> dict:
    created = json.loads(stack.invoke("tokens.create", "--user", user, "--json", *extra).stdout)
    issued.append(created["token"])
    return created


def password_env(stack: Stack, username: str, password: str) -> dict[str, str]:
    return {
        **stack.env,
        "MLFLOW_TRACKING_URI": url(stack),
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
        **cert_env(stack),
    }


def cert_env(stack: Stack) -> dict[str, str]:
    """The SDK's trust of the server's certificate, as `invoke env` exports it."""
    return {} if stack.verify is True else {"MLFLOW_TRACKING_SERVER_CERT_PATH": str(stack.verify)}


def token_env(stack: Stack, token: str, owner: str) -> dict[str, str]:
    """What `eval "$(... | invoke env --token)"` leaves in a shell: URI, token and the token's
    owner as username (the author of runs), no password."""
    printed = stack.invoke("env", "--token", stdin=token + "\n").stdout
    lines = printed.splitlines()
    assert "unset MLFLOW_TRACKING_PASSWORD" in lines
    env = {k: v for k, v in stack.env.items() if not k.startswith("MLFLOW_TRACKING_")}
    for line in lines:
        if line.startswith("export "):
            key, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
            env[key] = value
    assert env["MLFLOW_TRACKING_TOKEN"] == token
    assert env["MLFLOW_TRACKING_USERNAME"] == owner and "MLFLOW_TRACKING_PASSWORD" not in env
    return env


def run_author(env: dict[str, str], experiment_id: str, admin_auth: tuple[str, str]) -> str:
    """Start a run with the SDK configured by env alone; the mlflow.user tag the server stored."""
    script = (
        "import mlflow\n"
        f"with mlflow.start_run(experiment_id={experiment_id!r}) as run:\n"
        "    print('RUN_ID=' + run.info.run_id, flush=True)\n"
    )
    started = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    run_id = next(
        line.removeprefix("RUN_ID=")
        for line in started.stdout.splitlines()
        if line.startswith("RUN_ID=")
    )
    answer = requests.get(
        f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/runs/get",
        params={"run_id": run_id},
        auth=admin_auth,
        verify=env.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True,
        timeout=30,
    )
    answer.raise_for_status()
    tags = {t["key"]: t["value"] for t in answer.json()["run"]["data"].get("tags", [])}
    return tags["mlflow.user"]


def probe(env: dict[str, str], experiment_id: str, run_id: str) -> dict[str, dict]:
    """Read the experiment, create a run in it, log a metric to run_id: the real SDK's answers."""
    result = subprocess.run(
        [sys.executable, str(SDK_ACCESS), "probe", experiment_id, run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def statuses(outcome: dict[str, dict]) -> dict[str, int]:
    return {action: answer["status"] for action, answer in outcome.items()}


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    error = result.stderr.strip()
    assert error.count("\n") == 0, error
    assert error.startswith("error: "), error
    assert message in error, error


# --- 1. users and permissions, seen through the SDK --------------------------------------------


def test_added_user_logs_in_and_gets_exactly_what_is_granted(demo, admin_env, admin_run):
    experiment_id, run_id = admin_run
    # No --password-stdin and no terminal: a password is generated and shown once.
    added = demo.invoke("users.add", "--user", "ada", stdin="")
    password = next(
        line.split(": ", 1)[1]
        for line in added.stdout.splitlines()
        if line.startswith("password of ada: ")
    )
    assert len(password) >= 12

    wrong = probe(password_env(demo, "ada", password + "x"), experiment_id, run_id)
    assert wrong["read"]["status"] == 401

    ada = password_env(demo, "ada", password)
    # Logged in (403, not 401), but demo's default is NO_PERMISSIONS.
    assert statuses(probe(ada, experiment_id, run_id)) == {
        "read": 403,
        "create_run": 403,
        "log_metric": 403,
    }

    granted = demo.invoke(
        "perms.grant", "--user", "ada", "--experiment", "it-access", "--level", "READ"
    )
    assert f"granted READ on experiment 'it-access' (id {experiment_id}) to ada" in granted.stdout
    assert statuses(probe(ada, experiment_id, run_id)) == {
        "read": 200,
        "create_run": 403,
        "log_metric": 403,
    }

    changed = demo.invoke(
        "perms.grant", "--user", "ada", "--experiment", experiment_id, "--level", "EDIT"
    )
    assert "(was READ)" in changed.stdout
    assert statuses(probe(ada, experiment_id, run_id)) == {
        "read": 200,
        "create_run": 200,
        "log_metric": 200,
    }
    run = requests.get(
        f"{url(demo)}/api/2.0/mlflow/runs/get",
        params={"run_id": run_id},
        auth=admin_auth(admin_env),
        verify=demo.verify,
        timeout=30,
    ).json()["run"]
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]}["probe"] == 1.0

    listed = demo.invoke("perms.list", "--user", "ada").stdout
    assert any(
        line.split()[:2] == ["experiment", experiment_id] and "EDIT" in line.split()
        for line in listed.splitlines()
    ), listed

    # NO_PERMISSIONS (MLflow's DENY) takes it all away again; revoke leaves the default.
    demo.invoke(
        "perms.grant", "--user", "ada", "--experiment", experiment_id, "--level", "NO_PERMISSIONS"
    )
    assert probe(ada, experiment_id, run_id)["read"]["status"] == 403


# --- 2. tokens: alone, revoked, expired, with their owner's permissions ------------------------


def test_tokens_authenticate_alone_until_revoked_or_expired(
    demo, admin_env, admin_run, issued_tokens
):
    experiment_id, run_id = admin_run
    add_user(demo, "tess")
    created = create_token_via_task(demo, "tess", issued_tokens, "--name", "ci", "--expires", "1d")
    assert created["user"] == "tess" and created["name"] == "ci" and created["expires"]
    tess = token_env(demo, created["token"], "tess")

    # The token is tess, with tess's permissions: none on the admin's experiment.
    assert probe(tess, experiment_id, run_id)["read"]["status"] == 403
    demo.invoke("perms.grant", "--user", "tess", "--experiment", experiment_id, "--level", "READ")
    assert probe(tess, experiment_id, run_id)["read"]["status"] == 200
    # Runs logged with the token alone carry its owner as author, not the OS user.
    demo.invoke("perms.grant", "--user", "tess", "--experiment", experiment_id, "--level", "EDIT")
    assert run_author(tess, experiment_id, admin_auth(admin_env)) == "tess"

    revoked = demo.invoke("tokens.revoke", "--token-id", str(created["id"]))
    assert f"revoked access token {created['id']} of tess" in revoked.stdout
    assert probe(tess, experiment_id, run_id)["read"]["status"] == 401
    refused = demo.invoke("env", "--token", stdin=created["token"] + "\n", check=False)
    assert_one_line_error(refused, "the server refuses this access token: it is revoked")

    # Expiry, through the token store itself (a task's shortest lifetime is a minute).
    record, short_lived = create_token(
        auth_database_url(demo), "tess", name="short", expires_at=timedelta(hours=1)
    )
    issued_tokens.append(short_lived)
    read = f"{url(demo)}/api/2.0/mlflow/experiments/get"
    bearer = {"Authorization": f"Bearer {short_lived}"}
    before = requests.get(
        read,
        params={"experiment_id": experiment_id},
        headers=bearer,
        verify=demo.verify,
        timeout=30,
    )
    assert before.status_code == 200, before.text
    expire_token(auth_database_url(demo), record.id)
    expired = probe({**tess, "MLFLOW_TRACKING_TOKEN": short_lived}, experiment_id, run_id)
    assert expired["read"]["status"] == 401

    states = {
        t["id"]: t["state"]
        for t in json.loads(demo.invoke("tokens.list", "--user", "tess", "--json").stdout)
    }
    assert states[created["id"]] == "revoked"
    assert states[record.id] == "expired"


# --- 3. no token in clear text -----------------------------------------------------------------


def test_auth_database_holds_no_token_in_clear_text(demo, issued_tokens):
    add_user(demo, "cleo")
    for name in ("one", "two"):
        create_token_via_task(demo, "cleo", issued_tokens, "--name", name)
    assert len(issued_tokens) >= 2

    listed = demo.invoke("tokens.list").stdout + demo.invoke("tokens.list", "--json").stdout
    profile = load_profile(demo.profile, environ=demo.env)
    stored = parse_env_file(demo.state_dir / "secrets.env")
    connection = psycopg2.connect(
        host="127.0.0.1",
        port=profile.postgres_port,
        dbname=profile.auth_database,
        user=profile.db_user,
        password=stored[ENV_VARS["db_password"]],
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT token_hash FROM {}").format(sql.Identifier(TOKENS_TABLE_NAME))
            )
            hashes = {row[0] for row in cursor.fetchall()}
            cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            tables = [row[0] for row in cursor.fetchall()]
            cells = []
            for table in tables:
                cursor.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                cells += [str(cell) for row in cursor.fetchall() for cell in row]
    finally:
        connection.close()

    assert TOKENS_TABLE_NAME in tables
    everything = "\n".join(cells)
    for token in issued_tokens:
        # The token is there, as its sha256 and nothing else.
        assert hashlib.sha256(token.encode()).hexdigest() in hashes
        secret_part = token.split("_", 1)[1]
        assert secret_part not in everything
        assert secret_part not in listed
        for log in (demo.state_dir / "logs").glob("*"):
            if log.is_file():
                assert secret_part not in log.read_text(errors="replace"), log


# --- 4. non-admins cannot manage users ---------------------------------------------------------


def test_non_admins_get_403_on_user_management(demo, issued_tokens):
    password = add_user(demo, "nora")
    add_user(demo, "victim")
    nora = ("nora", password)
    base = url(demo)

    current = requests.get(f"{base}{USERS_API}/current", auth=nora, verify=demo.verify, timeout=30)
    assert current.status_code == 200, current.text  # nora's credentials are good
    attempts = {
        "create": ("POST", "create", {"username": "mallory", "password": "mallory-password"}),
        "delete": ("DELETE", "delete", {"username": "victim"}),
        "update-admin": ("PATCH", "update-admin", {"username": "nora", "is_admin": True}),
    }
    token = create_token_via_task(demo, "nora", issued_tokens)["token"]
    for credentials in ({"auth": nora}, {"headers": {"Authorization": f"Bearer {token}"}}):
        for what, (method, path, body) in attempts.items():
            answer = requests.request(
                method,
                f"{base}{USERS_API}/{path}",
                json=body,
                verify=demo.verify,
                timeout=30,
                **credentials,
            )
            assert answer.status_code == 403, (what, answer.status_code, answer.text)

    users = demo.invoke("users.list").stdout.split()
    assert "mallory" not in users and "victim" in users
    assert users[users.index("nora") + 1] == "no"

    # The tasks run as whoever is the profile's admin: as nora they say so in one line.
    as_nora = dataclasses.replace(
        demo,
        env={
            **demo.env,
            "MLFLOW_STACK_ADMIN_USERNAME": "nora",
            "MLFLOW_STACK_ADMIN_PASSWORD": password,
        },
    )
    assert_one_line_error(
        as_nora.invoke("users.add", "--user", "mallory", stdin="", check=False),
        "MLflow refused nora (403 permission denied)",
    )


# --- 5. bad input: one line, exit code 1 -------------------------------------------------------


@pytest.fixture(scope="module")
def down_stack(tmp_path_factory) -> Stack:
    """A demo stack that was rendered but never brought up (its own home, free ports): nothing
    listens."""
    home = tmp_path_factory.mktemp("down")
    stack = Stack("demo", home, base_environment(home))
    stack.env["MLFLOW_STACK_MLFLOW_PORT"] = str(free_port())
    stack.env["MLFLOW_STACK_POSTGRES_PORT"] = str(free_port())
    stack.invoke("render")
    return stack


@pytest.fixture
def unrendered_stack(tmp_path_factory) -> Stack:
    """A demo stack that was never even rendered: it has no secrets and no runtime yet."""
    home = tmp_path_factory.mktemp("unrendered")
    return Stack("demo", home, base_environment(home))


BAD_INPUT = {
    "existing user": (
        "up",
        {},
        ["users.add", "--user", "admin", "--password-stdin"],
        "a-long-enough-password",
        "MLflow user 'admin' already exists in profile demo",
    ),
    "unknown user: users.passwd": (
        "up",
        {},
        ["users.passwd", "--user", "ghost", "--password-stdin"],
        "a-long-enough-password",
        "no MLflow user named 'ghost'",
    ),
    "unknown user: perms.grant": (
        "up",
        {},
        ["perms.grant", "--user", "ghost", "--experiment", "Default", "--level", "READ"],
        None,
        "no MLflow user named 'ghost'",
    ),
    "unknown user: tokens.create": (
        "up",
        {},
        ["tokens.create", "--user", "ghost"],
        None,
        "no MLflow user named 'ghost'",
    ),
    "unknown experiment": (
        "up",
        {},
        ["perms.grant", "--user", "admin", "--experiment", "no-such-experiment", "--level", "READ"],
        None,
        "no experiment with the name 'no-such-experiment'",
    ),
    "bad level": (
        "down",
        {},
        ["perms.grant", "--user", "ada", "--experiment", "0", "--level", "WRITE"],
        None,
        "invalid --level 'WRITE'",
    ),
    "bad expiry": (
        "down",
        {},
        ["tokens.create", "--user", "ada", "--expires", "2weeks"],
        None,
        "invalid --expires '2weeks'",
    ),
    # Checked before anything is contacted: the stack is down and that is not what is said.
    "short password": (
        "down",
        {},
        ["users.add", "--user", "shorty", "--password-stdin"],
        "short-pw",
        "the password is 8 characters long: MLflow needs at least 12",
    ),
    "stack down: users": (
        "down",
        {},
        ["users.list"],
        None,
        "is not running at https://127.0.0.1:",
    ),
    "stack down: tokens": (
        "down",
        {},
        ["tokens.list"],
        None,
        "not reachable on 127.0.0.1:",
    ),
    "wrong admin credentials": (
        "up",
        {"MLFLOW_STACK_ADMIN_PASSWORD": "not-the-admin-password"},
        ["users.list"],
        None,
        "wrong admin credentials for admin at https://127.0.0.1:",
    ),
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["users.list"], "profile demo has no secrets yet: run `invoke render -p demo`"),
        (["tokens.list"], "profile demo has not been brought up: run `invoke up -p demo`"),
    ],
)
def test_a_profile_never_rendered_says_what_to_run(unrendered_stack, args, message):
    assert_one_line_error(unrendered_stack.invoke(*args, stdin="", check=False), message)
    assert not unrendered_stack.state_dir.exists()


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_1(demo, down_stack, case):
    which, env_extra, args, stdin, message = BAD_INPUT[case]
    stack = demo if which == "up" else down_stack
    stack = dataclasses.replace(stack, env={**stack.env, **env_extra})
    result = stack.invoke(*args, stdin=stdin if stdin is not None else "", check=False)
    assert_one_line_error(result, message)
    if which == "down" and "stack down" in case:
        assert "invoke up -p demo" in result.stderr
    if case == "short password":
        assert "invoke up" not in result.stderr


# --- the admin's own password, and deleting a user ---------------------------------------------


def test_deleting_a_user_removes_their_tokens(demo, issued_tokens):
    add_user(demo, "dora")
    token = create_token_via_task(demo, "dora", issued_tokens)
    refused = demo.invoke("users.delete", "--user", "dora", stdin="", check=False)
    assert_one_line_error(refused, "pass --yes")
    demo.invoke("users.delete", "--user", "dora", "--yes")
    remaining = json.loads(demo.invoke("tokens.list", "--json").stdout)
    assert token["id"] not in {t["id"] for t in remaining}
    answer = requests.get(
        f"{url(demo)}{USERS_API}/current",
        headers={"Authorization": f"Bearer {token['token']}"},
        verify=demo.verify,
        timeout=30,
    )
    assert answer.status_code == 401


def test_admin_password_change_updates_secrets_env(demo):
    # Last in the module: it changes the admin password every other test relies on.
    secrets_file = demo.state_dir / "secrets.env"
    new_password = f"new-admin-password-{time.monotonic_ns()}"
    demo.invoke("users.passwd", "--user", "admin", "--password-stdin", stdin=new_password + "\n")
    assert parse_env_file(secrets_file)[ENV_VARS["admin_password"]] == new_password
    assert demo.client_env()["MLFLOW_TRACKING_PASSWORD"] == new_password
    assert "admin" in demo.invoke("users.list").stdout.split()

    # With the variable set, the file is left alone and the user is told to update the variable.
    newer = new_password + "-2"
    overridden = dataclasses.replace(
        demo, env={**demo.env, "MLFLOW_STACK_ADMIN_PASSWORD": new_password}
    )
    result = overridden.invoke("users.passwd", "--user", "admin", "--password-stdin", stdin=newer)
    assert "MLFLOW_STACK_ADMIN_PASSWORD is set" in result.stderr
    assert parse_env_file(secrets_file)[ENV_VARS["admin_password"]] == new_password
    # Put the file back in line with the server so `down` and later tests see a working admin.
    overridden_again = dataclasses.replace(
        demo, env={**demo.env, "MLFLOW_STACK_ADMIN_PASSWORD": newer}
    )
    overridden_again.invoke(
        "users.passwd", "--user", "admin", "--password-stdin", stdin=new_password
    )
    assert demo.invoke("users.list").returncode == 0
