"""The GenAI features on a real server: the KEK passphrase that protects stored provider keys,
who may store them, users/list for admins only, and MLflow's job runner off (a 400 that says
how to turn it on) and on (no 500).

One `ci` stack, with users_list_admins_only on; the tests run in file order: the last one
restarts it with the job runner on (about 2 GB more while it runs).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
import requests

from mlflow_stack.files import parse_env_file
from tests.stacks import Stack, make_stack

PROVIDER_KEY = "sk-mlflow-stack-test-0123456789"


@pytest.fixture(scope="module")
def stack(integration_home):
    stack = make_stack(integration_home, "ci")
    stack.env["MLFLOW_STACK_USERS_LIST_ADMINS_ONLY"] = "true"
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)


def url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.env['MLFLOW_STACK_MLFLOW_PORT']}"


def secrets_of(stack: Stack) -> dict[str, str]:
    return parse_env_file(stack.state_dir / "secrets.env")


@pytest.fixture(scope="module")
def admin(stack) -> tuple[str, str]:
    return "admin", secrets_of(stack)["MLFLOW_STACK_ADMIN_PASSWORD"]


@pytest.fixture(scope="module")
def bob(stack) -> tuple[str, str]:
    password = f"bob-password-{time.monotonic_ns()}"
    stack.invoke("users.add", "--user", "bob", "--password-stdin", stdin=password)
    return "bob", password


def call(stack: Stack, auth, method: str, path: str, body: dict | None = None):
    # 120 s: with the job runner on, its consumers start beside the server, and on a loaded
    # two-core machine a first gateway call once took over 60 s.
    return requests.request(method, url(stack) + path, json=body, auth=auth, timeout=120)


def mlflow_log(stack: Stack) -> str:
    return (stack.state_dir / "logs" / "mlflow.log").read_text(errors="replace")


def test_the_server_never_uses_mlflows_public_kek(stack, admin):
    log = mlflow_log(stack)
    assert "Uvicorn running" in log or "Application startup complete" in log
    assert "SECURITY RISK" not in log
    config = call(stack, admin, "GET", "/ajax-api/3.0/mlflow/gateway/secrets/config")
    assert config.status_code == 200
    assert config.json()["using_default_passphrase"] is False


@pytest.fixture(scope="module")
def stored_key(stack, admin) -> dict[str, str]:
    """A provider key stored through the REST API, wired to a gateway endpoint."""
    created = call(
        stack,
        admin,
        "POST",
        "/api/3.0/mlflow/gateway/secrets/create",
        {"secret_name": "openai", "secret_value": {"api_key": PROVIDER_KEY}, "provider": "openai"},
    )
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    assert PROVIDER_KEY not in created.text  # masked in the answer
    model = call(
        stack,
        admin,
        "POST",
        "/api/3.0/mlflow/gateway/model-definitions/create",
        {
            "name": "gpt",
            "secret_id": secret["secret_id"],
            "provider": "openai",
            "model_name": "gpt-4o-mini",
        },
    )
    assert model.status_code == 200, model.text
    endpoint = call(
        stack,
        admin,
        "POST",
        "/api/3.0/mlflow/gateway/endpoints/create",
        {
            "name": "chat",
            "model_configs": [
                {
                    "model_definition_id": model.json()["model_definition"]["model_definition_id"],
                    "linkage_type": "PRIMARY",
                    "weight": 1,
                }
            ],
        },
    )
    assert endpoint.status_code == 200, endpoint.text
    return {"secret_id": secret["secret_id"], "secret_name": secret["secret_name"]}


def _stored_row(stack: Stack, secret_id: str):
    import sqlalchemy as sa

    password = secrets_of(stack)["MLFLOW_STACK_DB_PASSWORD"]
    engine = sa.create_engine(
        sa.engine.URL.create(
            "postgresql+psycopg2",
            username="mlflow",
            password=password,
            host="127.0.0.1",
            port=int(stack.env["MLFLOW_STACK_POSTGRES_PORT"]),
            database="mlflow",
        )
    )
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT encrypted_value, wrapped_dek, kek_version FROM secrets "
                    "WHERE secret_id = :id"
                ),
                {"id": secret_id},
            ).one()
    finally:
        engine.dispose()


def _decrypt(stack: Stack, key: dict[str, str], passphrase: str):
    from mlflow.utils.crypto import KEKManager, _decrypt_secret

    row = _stored_row(stack, key["secret_id"])
    return _decrypt_secret(
        encrypted_value=row.encrypted_value,
        wrapped_dek=row.wrapped_dek,
        kek_manager=KEKManager(passphrase=passphrase, kek_version=row.kek_version),
        secret_id=key["secret_id"],
        secret_name=key["secret_name"],
    )


def test_a_stored_key_is_sealed_with_the_stacks_kek_not_mlflows_default(stack, stored_key):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.crypto import DEFAULT_KEK_PASSPHRASE

    kek = secrets_of(stack)["MLFLOW_STACK_KEK_PASSPHRASE"]
    assert _decrypt(stack, stored_key, kek) == {"api_key": PROVIDER_KEY}
    with pytest.raises(MlflowException, match="Failed to decrypt"):
        _decrypt(stack, stored_key, DEFAULT_KEK_PASSPHRASE)


def _invoke_gateway(stack: Stack, admin) -> str:
    """Ask the endpoint; what the server log says about it (the provider, api.openai.com, is
    unreachable here or refuses the key: either way the server decrypted it to get there)."""
    before = len(mlflow_log(stack))
    answer = call(
        stack,
        admin,
        "POST",
        "/gateway/chat/mlflow/invocations",
        {"messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code != 200
    time.sleep(0.5)  # the log line is written after the answer
    return mlflow_log(stack)[before:] + answer.text


def test_only_admins_store_provider_keys(stack, bob):
    refused = call(
        stack,
        bob,
        "POST",
        "/api/3.0/mlflow/gateway/secrets/create",
        {"secret_name": "bobs", "secret_value": {"api_key": "sk-bob"}, "provider": "openai"},
    )
    assert refused.status_code == 403
    assert "only admins may store provider keys" in refused.json()["message"]
    listed = call(stack, bob, "GET", "/api/3.0/mlflow/gateway/secrets/list")
    assert "bobs" not in listed.text


def test_users_list_is_for_admins_only(stack, admin, bob):
    for path in ("/api/2.0/mlflow/users/list", "/ajax-api/2.0/mlflow/users/list"):
        assert call(stack, bob, "GET", path).status_code == 403
        listed = call(stack, admin, "GET", path)
        assert listed.status_code == 200
        assert "bob" in {user["username"] for user in listed.json()["users"]}
    assert call(stack, None, "GET", "/api/2.0/mlflow/users/list").status_code == 401
    # What a non-admin still does with other users: its own record, and MLflow's checks.
    assert call(stack, bob, "GET", "/api/2.0/mlflow/users/current").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/ajax-api/3.0/mlflow/scorer/invoke", "/ajax-api/3.0/jobs/"],
)
def test_with_the_job_runner_off_the_genai_jobs_get_a_400_saying_how_to_turn_it_on(
    stack, bob, path
):
    answer = call(stack, bob, "POST", path, {"job_name": "invoke_scorer", "params": {}})
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "FEATURE_DISABLED"
    assert "job_execution = true" in answer.json()["message"]


def test_unauthenticated_job_requests_still_get_mlflows_401(stack):
    assert call(stack, None, "POST", "/ajax-api/3.0/mlflow/scorer/invoke", {}).status_code == 401


def test_after_a_restart_with_the_job_runner_on_keys_decrypt_and_jobs_answer(
    stack, admin, stored_key
):
    kek = secrets_of(stack)["MLFLOW_STACK_KEK_PASSPHRASE"]
    stack.invoke("stop")
    stack.env["MLFLOW_STACK_JOB_EXECUTION"] = "true"
    try:
        stack.invoke("up", timeout=400)
        assert secrets_of(stack)["MLFLOW_STACK_KEK_PASSPHRASE"] == kek  # stable across renders
        assert "SECURITY RISK" not in mlflow_log(stack)
        commands = []
        for pid in stack.processes():
            with contextlib.suppress(OSError):
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        assert any(b"huey_consumer" in command for command in commands)  # the runner is on
        # The server decrypts the key stored before the restart, on its way to the provider.
        said = _invoke_gateway(stack, admin)
        assert "Failed to decrypt" not in said
        assert "api.openai.com" in said
        # The judges' and jobs' routes answer, with a 4xx for this bad input, never a 500.
        scorer = call(stack, admin, "POST", "/ajax-api/3.0/mlflow/scorer/invoke", {})
        assert 400 <= scorer.status_code < 500, scorer.text
        assert scorer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        job = call(
            stack, admin, "POST", "/ajax-api/3.0/jobs/", {"job_name": "no-such-job", "params": {}}
        )
        assert 400 <= job.status_code < 500, job.text
        assert "FEATURE_DISABLED" not in job.text
    finally:
        stack.invoke("stop", check=False)
        stack.env.pop("MLFLOW_STACK_JOB_EXECUTION")
