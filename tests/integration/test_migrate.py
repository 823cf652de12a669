"""The schema step on a real PostgreSQL: several at once on empty databases all succeed."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

from mlflow_stack.container import migrate
from tests.throwaway_postgres import PG_USER

# Three at once: MLflow's own start-up (a lock file in each host's /tmp for the tracking
# schema, no lock for the auth schema) lost two of three in this race.
PARALLEL = 3


def start_migrations(env: dict[str, str], count: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "mlflow_stack.container.migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=300), *p.communicate()) for p in processes]


def test_concurrent_migrations_on_empty_databases_all_succeed(postgres):
    postgres.create_database("mig_tracking")
    postgres.create_database("mig_auth")
    # The password travels percent-encoded in the URI and %-escaped in the INI, as rendered.
    password = quote(postgres.password, safe="")
    base = f"postgresql+psycopg2://{PG_USER}:{password}@127.0.0.1:{postgres.port}"
    ini = f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {base}/mig_auth\n".replace(
        "%", "%%"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        migrate.STORE_URI_VARIABLE: f"{base}/mig_tracking",
        migrate.AUTH_CONFIG_TEXT_VARIABLE: ini,
    }

    first = finish(start_migrations(env, PARALLEL))
    assert [code for code, _, _ in first] == [0] * PARALLEL, [err[-2000:] for _, _, err in first]
    outputs = [out for _, out, _ in first]
    assert sum("tracking schema created at" in out for out in outputs) == 1, outputs
    assert sum("auth schema created at" in out for out in outputs) == 1, outputs
    assert all("project tables present" in out for out in outputs)
    for _, out, err in first:
        assert postgres.password not in out + err

    conn = postgres.connect("mig_auth")
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('mlflow_stack_access_tokens') IS NOT NULL")
        assert cur.fetchone() == (True,)
    conn.close()

    again = finish(start_migrations(env, 2))
    assert all(code == 0 for code, _, _ in again)
    assert all("tracking schema already at" in out for _, out, _ in again)
    assert all("auth schema already at" in out for _, out, _ in again)


def test_an_unreachable_database_is_one_line_and_exit_1(postgres):
    env = {
        "PATH": "/usr/bin:/bin",
        migrate.STORE_URI_VARIABLE: f"postgresql+psycopg2://{PG_USER}:wrong@127.0.0.1:"
        f"{postgres.port}/mig_nowhere",
        migrate.AUTH_CONFIG_TEXT_VARIABLE: "[mlflow]\ndatabase_uri = sqlite://\n",
    }
    [(code, out, err)] = finish(start_migrations(env, 1))
    assert code == 1 and out == ""
    assert err.startswith("migrate: error: cannot reach the database to migrate it: ")
    assert err.count("\n") == 1 and "Traceback" not in err and "wrong" not in err
