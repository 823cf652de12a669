"""The Kubernetes migration Job's program and the server pods' wait, on a real PostgreSQL:
what the manifests run, with the database URLs in the environment only."""

import os
import subprocess
import sys

from mlflow_stack import k8s

WAIT_VARIABLE = "MLFLOW_STACK_SCHEMA_WAIT_SECONDS"


# MLflow's own `mlflow db upgrade` of the tracking schema alone, the URL from the environment.
TRACKING_ONLY = (
    "import os; from mlflow.db import upgrade; "
    "upgrade.main([os.environ['MLFLOW_BACKEND_STORE_URI']], standalone_mode=False)"
)


def job(env: dict[str, str]) -> subprocess.CompletedProcess:
    """The migration Job's command, as the manifest gives it (python of this venv)."""
    command = k8s.migrate_command()
    assert command[0] == "python"
    return subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run(program: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_job_migrates_both_schemas_and_the_wait_then_lets_the_server_start(postgres):
    postgres.create_database("k8s_tracking")
    postgres.create_database("k8s_auth")
    env = {
        "MLFLOW_BACKEND_STORE_URI": postgres.url("k8s_tracking"),
        k8s.AUTH_DATABASE_VARIABLE: postgres.url("k8s_auth"),
    }
    # Empty databases: the wait gives up (after no time at all here) and names the Job.
    early = run(k8s.WAIT_PROGRAM, {**env, WAIT_VARIABLE: "0"})
    assert early.returncode != 0
    assert "see the migration Job" in early.stderr
    assert postgres.password not in early.stdout + early.stderr

    migrated = job(env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert "tracking schema created at" in migrated.stdout
    assert "auth schema created at" in migrated.stdout
    # The URL, password included, is in no argument at all, nor in what the Job prints.
    assert postgres.password not in " ".join(k8s.migrate_command()) + migrated.stdout

    with postgres.connect("k8s_tracking") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM alembic_version")
        assert cur.fetchone() == (1,)
    with postgres.connect("k8s_auth") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM alembic_version_auth")
        assert cur.fetchone() == (1,)

    ready = run(k8s.WAIT_PROGRAM, {**env, WAIT_VARIABLE: "0"})
    assert ready.returncode == 0, ready.stderr[-2000:]
    # Running the Job again (a re-applied kustomization) changes nothing and succeeds.
    again = job(env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "tracking schema already at" in again.stdout


def test_the_wait_refuses_a_half_migrated_auth_schema(postgres):
    postgres.create_database("k8s_tracking_only")
    postgres.create_database("k8s_auth_empty")
    env = {
        "MLFLOW_BACKEND_STORE_URI": postgres.url("k8s_tracking_only"),
        k8s.AUTH_DATABASE_VARIABLE: postgres.url("k8s_auth_empty"),
    }
    # Only the tracking schema, by MLflow's own `mlflow db upgrade`.
    assert run(TRACKING_ONLY, env).returncode == 0
    waited = run(k8s.WAIT_PROGRAM, {**env, WAIT_VARIABLE: "0"})
    assert waited.returncode != 0
    assert "RuntimeError" in waited.stderr  # the auth schema, not a connection problem
