"""The images the compose file names, on a real engine: stand-ins keep the official contracts.

Every check also holds for the real images, so the tier tests whichever the engine has; the
containers and volumes made here are removed, the (cached) images are kept.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import requests

from mlflow_stack.profile import load_profile
from mlflow_stack.standins import (
    STAND_IN_FOR_LABEL,
    STAND_IN_LABEL,
    docker,
    ensure_images,
    image_labels,
    is_stand_in,
)
from tests.compose.conftest import host_ca_bundle

HOSTILE_PASSWORD = "p%a$s@w:o/r#d'\"; ü ${X}"
DB_USER = "mlflow"
DB_NAME = "tracking"
# What the compose file gives the postgres service (templates/docker-compose.yml.j2).
HARDENING = (
    "--cap-drop", "ALL",
    *("--cap-add", "CHOWN", "--cap-add", "DAC_OVERRIDE", "--cap-add", "FOWNER"),
    *("--cap-add", "SETGID", "--cap-add", "SETUID"),
    "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/var/run/postgresql",
    "--security-opt", "no-new-privileges",
)  # fmt: skip
INIT_SQL = (
    "CREATE TABLE init_runs (at timestamptz DEFAULT now());\n"
    "INSERT INTO init_runs DEFAULT VALUES;\n"
)
# Sourced (not executable), as the official entrypoint does with such scripts.
INIT_SH = (
    'psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "CREATE TABLE from_sh ()"\n'
)


@pytest.fixture(scope="module")
def images(compose_images) -> dict[str, str]:
    profile = load_profile("ci")
    return {"postgres": profile.postgres_image, "python": profile.python_image}


def run(*args: str, timeout: float = 300) -> str:
    return docker(*args, timeout=timeout).stdout


# --- both images -------------------------------------------------------------------------


def test_images_are_there_and_stand_ins_say_so(compose_images, images):
    for image in images.values():
        assert compose_images[image] in ("present", "pulled", "stand-in")
        labels = image_labels(image)
        assert labels is not None
        if compose_images[image] == "stand-in":
            assert is_stand_in(image)
            assert labels[STAND_IN_LABEL] == "true"
            assert labels[STAND_IN_FOR_LABEL] == image


def test_second_run_reuses_everything(compose_images, images):
    bundle = host_ca_bundle()
    started = time.monotonic()
    again = ensure_images(images["postgres"], images["python"], Path(bundle) if bundle else None)
    assert again == {images["postgres"]: "present", images["python"]: "present"}
    assert time.monotonic() - started < 15


# --- python ------------------------------------------------------------------------------


def test_python_is_3_11(images):
    output = run("run", "--rm", images["python"], "python", "-c", "import sys; print(sys.version)")
    assert output.startswith("3.11.")


def test_python_has_the_official_commands_and_env(images):
    script = "for c in python pip python3 useradd; do command -v $c; done; echo LANG=$LANG"
    lines = run("run", "--rm", images["python"], "sh", "-c", script).split()
    assert lines[:2] == ["/usr/local/bin/python", "/usr/local/bin/pip"]
    assert lines[3].endswith("/useradd")
    assert "LANG=C.UTF-8" in lines


def test_pip_installs_system_wide_through_the_proxy(images):
    try:
        requests.head("https://pypi.org/simple/six/", timeout=10)
    except requests.RequestException:
        pytest.skip("PyPI is not reachable from this machine")
    image = images["python"]
    extra: list[str] = []
    bundle = host_ca_bundle()
    if bundle and not is_stand_in(image):
        # A real image knows nothing of this machine's CA; the stand-in must trust it itself.
        extra = ["-v", f"{bundle}:/etc/host-ca.pem:ro", "-e", "PIP_CERT=/etc/host-ca.pem"]
    script = "pip install --no-cache-dir --quiet six && python -c 'import six; print(six.__file__)'"
    output = run("run", "--rm", *extra, image, "sh", "-c", script, timeout=300)
    assert "/usr/local/lib/python3.11/" in output


# --- postgres ----------------------------------------------------------------------------


def test_postgres_version_needs_no_init(images):
    output = run("run", "--rm", images["postgres"], "postgres", "--version")
    assert output.startswith("postgres (PostgreSQL) 18.")


@dataclass
class PostgresContainer:
    image: str
    name: str
    volume: str
    init_dir: Path
    port: int = 0

    def start(self) -> None:
        run(
            "run", "--detach", "--name", self.name, *HARDENING,
            "-e", f"POSTGRES_USER={DB_USER}", "-e", f"POSTGRES_DB={DB_NAME}",
            # Taken from this process's environment by the client: never on a command line.
            "-e", "POSTGRES_PASSWORD",
            "-e", "POSTGRES_INITDB_ARGS=--auth-host=scram-sha-256 --auth-local=scram-sha-256",
            "-v", f"{self.volume}:/var/lib/postgresql",
            "-v", f"{self.init_dir}:/docker-entrypoint-initdb.d:ro",
            "-p", "127.0.0.1::5432",
            self.image,
        )  # fmt: skip
        self.port = int(run("port", self.name, "5432/tcp").splitlines()[0].rsplit(":", 1)[1])
        self.wait_ready()

    def connect(self, password: str = HOSTILE_PASSWORD):
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=DB_USER,
            password=password,
            dbname=DB_NAME,
            connect_timeout=5,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"not ready:\n{self.logs()[-3000:]}") from None
                time.sleep(0.5)

    def query(self, statement: str):
        connection = self.connect()
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def logs(self) -> str:
        result = docker("logs", self.name, timeout=30, check=False)
        return result.stdout + result.stderr

    def exec(self, script: str) -> str:
        return run("exec", self.name, "bash", "-c", script)

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.name, timeout=60, check=False)


@pytest.fixture
def postgres_factory(images, tmp_path, monkeypatch) -> Iterator:
    monkeypatch.setenv("POSTGRES_PASSWORD", HOSTILE_PASSWORD)
    init_dir = tmp_path / "initdb.d"
    init_dir.mkdir(mode=0o755)
    for name, text in (("01-schema.sql", INIT_SQL), ("02-sourced.sh", INIT_SH)):
        (init_dir / name).write_text(text)
        (init_dir / name).chmod(0o644)
    tag = uuid.uuid4().hex[:10]
    volume = f"mlflow-stack-test-pgdata-{tag}"
    made: list[PostgresContainer] = []

    def make() -> PostgresContainer:
        name = f"mlflow-stack-test-postgres-{tag}-{len(made)}"
        container = PostgresContainer(images["postgres"], name, volume, init_dir)
        made.append(container)
        container.start()
        return container

    try:
        yield make
    finally:
        for container in made:
            container.remove()
        docker("volume", "rm", "--force", volume, timeout=60, check=False)


def test_postgres_scram_login_with_a_hostile_password(postgres_factory):
    postgres = postgres_factory()
    assert postgres.query("SELECT current_user, current_database()") == [(DB_USER, DB_NAME)]
    methods = postgres.query("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type='host'")
    assert methods == [("scram-sha-256",)]
    stored = postgres.query("SELECT rolpassword FROM pg_authid WHERE rolname = current_user")
    assert stored[0][0].startswith("SCRAM-SHA-256$")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        postgres.connect(password="wrong")


def test_postgres_init_scripts_run_at_first_init(postgres_factory):
    postgres = postgres_factory()
    assert postgres.query("SELECT count(*) FROM init_runs") == [(1,)]
    assert postgres.query("SELECT to_regclass('from_sh') IS NOT NULL") == [(True,)]


def test_postgres_runs_hardened_as_uid_999(postgres_factory):
    postgres = postgres_factory()
    status = dict(line.split(":", 1) for line in postgres.exec("cat /proc/1/status").splitlines())
    assert status["Uid"].split() == ["999"] * 4
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapEff"], 16) == 0
    assert postgres.exec("cat /proc/1/comm").strip() == "postgres"
    assert postgres.exec("echo $PGDATA; cat $PGDATA/PG_VERSION").split() == [
        "/var/lib/postgresql/18/docker",
        "18",
    ]
    tools = postgres.exec("command -v pg_isready psql pg_dump pg_restore").split()
    assert len(tools) == 4
    assert "accepting connections" in postgres.exec(
        f"pg_isready -h 127.0.0.1 -U {DB_USER} -d {DB_NAME}"
    )


def test_postgres_password_never_shows(postgres_factory):
    postgres = postgres_factory()
    assert HOSTILE_PASSWORD not in postgres.logs()
    command_lines = postgres.exec("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert HOSTILE_PASSWORD not in command_lines
    assert postgres.exec("ls -A /tmp").strip() == ""


def test_postgres_keeps_data_across_restarts(postgres_factory):
    first = postgres_factory()
    first.query("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')")
    run("restart", first.name, timeout=120)
    first.port = int(run("port", first.name, "5432/tcp").splitlines()[0].rsplit(":", 1)[1])
    first.wait_ready()
    assert first.query("SELECT note FROM kept") == [("still here",)]
    docker("rm", "--force", first.name, timeout=60)
    # A new container on the same volume: the data stays and the init scripts do not rerun.
    second = postgres_factory()
    assert second.query("SELECT note FROM kept") == [("still here",)]
    assert second.query("SELECT count(*) FROM init_runs") == [(1,)]
    assert "skipping init" in second.logs()


def test_postgres_process_ends_on_stop(postgres_factory):
    postgres = postgres_factory()
    started = time.monotonic()
    run("stop", postgres.name, timeout=60)
    assert time.monotonic() - started < 10
    state = run("inspect", "--format", "{{.State.ExitCode}}", postgres.name).strip()
    assert state == "0"
