"""The local runtime's PostgreSQL cluster: its folders, its server's lifecycle, its databases.

Every PostgreSQL program runs through `mlflow_stack.pg_programs`; every psycopg2 connection
through `connect`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import psycopg2
from psycopg2 import sql

from mlflow_stack import programs
from mlflow_stack.endpoints import DatabaseEndpoint, Endpoints
from mlflow_stack.errors import StackError
from mlflow_stack.health import wait_until
from mlflow_stack.pg_programs import SERVER_TIMEOUT_SECONDS, OsUser, PostgresPrograms
from mlflow_stack.profile import Profile
from mlflow_stack.runtime.processes import process_alive
from mlflow_stack.secrets import Secrets


def connect(
    profile: Profile,
    secrets: Secrets,
    endpoint: DatabaseEndpoint,
    database: str = "postgres",
    timeout: int = 5,
) -> psycopg2.extensions.connection:
    """A connection as the profile's database role: every psycopg2 connection passes here."""
    parameters = Endpoints.of(profile).connection_parameters(secrets, endpoint, database, timeout)
    connection: psycopg2.extensions.connection = psycopg2.connect(**parameters)
    return connection


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_in_use_error(
    profile: Profile, key: Literal["mlflow_port", "postgres_port"], host: str
) -> StackError:
    port = profile.mlflow_port if key == "mlflow_port" else profile.postgres_port
    return StackError(
        f"port {port} on {host} is already in use: set {key} in config/profiles/"
        f"{profile.name}.toml or MLFLOW_STACK_{key.upper()}"
    )


class PostgresCluster:
    def __init__(self, profile: Profile, secrets: Secrets):
        self.profile = profile
        self.secrets = secrets
        self.layout = profile.layout
        self.state_dir = self.layout.root
        self.data_dir = self.layout.pgdata
        self.socket_dir = self.layout.pgsocket
        self.log_file = self.layout.postgres_log
        self.os_user = OsUser.for_profile(profile)
        self.programs = PostgresPrograms.for_profile(profile)
        self.bin_dir = self.programs.bin_dir

    # --- the chokepoint (mlflow_stack.pg_programs) ---------------------------------------

    def run(
        self,
        tool: str,
        *args: str,
        as_cluster_user: bool = True,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
        timeout: float = SERVER_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program, as the cluster's unprivileged user where one is needed."""
        return self.programs.run_server(
            tool,
            *args,
            os_user=self.os_user if as_cluster_user else None,
            home=self.state_dir,
            check=check,
            extra_env=extra_env,
            timeout=timeout,
        )

    # --- facts ---------------------------------------------------------------------------

    def binaries_major(self) -> int:
        output = self.run("postgres", "--version", as_cluster_user=False).stdout
        version = output.strip().split()[-1]
        return int(version.split(".")[0])

    def data_major(self) -> int | None:
        version_file = self.layout.pg_version
        if not version_file.exists():
            return None
        return int(version_file.read_text().strip().split(".")[0])

    def _pid_file_pid(self) -> int | None:
        try:
            return int(self.layout.postmaster_pid.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        pid = self._pid_file_pid()
        return pid if pid is not None and process_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def running_port(self) -> int | None:
        """The port the running postmaster listens on (line 4 of postmaster.pid)."""
        try:
            return int(self.layout.postmaster_pid.read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None

    def check_running_port(self) -> None:
        port = self.running_port()
        if self.is_running() and port is not None and port != self.profile.postgres_port:
            raise StackError(
                f"PostgreSQL of profile {self.profile.name} is running on port {port}, but "
                f"postgres_port is now {self.profile.postgres_port}: run `invoke down "
                f"-p {self.profile.name}` with the old settings first"
            )

    @property
    def endpoint(self) -> DatabaseEndpoint:
        return Endpoints.of(self.profile).local_database

    def connect(
        self, database: str = "postgres", timeout: int = 5
    ) -> psycopg2.extensions.connection:
        return connect(self.profile, self.secrets, self.endpoint, database, timeout)

    # --- lifecycle -----------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        for folder, mode in ((self.socket_dir, 0o700), (self.log_file.parent, 0o755)):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(mode)
        self.os_user.own(self.socket_dir)
        self.log_file.touch(exist_ok=True)
        self.os_user.own(self.log_file)

    def _check_reachable(self) -> None:
        if self.os_user.is_caller:
            return
        reachable = programs.run(
            ["test", "-x", str(self.state_dir)],
            timeout=30,
            check=False,
            run_as=self.os_user.run_as(),
        )
        if reachable.returncode != 0:
            raise StackError(
                f"user {self.os_user.name}, which runs PostgreSQL, cannot reach {self.state_dir}: "
                "set MLFLOW_STACK_HOME to a folder it can enter (e.g. under /tmp)"
            )

    def initialize(self) -> bool:
        """initdb on first use; returns whether a new cluster was made."""
        if self.layout.pg_version.exists():
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StackError(
                f"{self.data_dir} exists but holds no PostgreSQL cluster: move it away"
            )
        self._check_reachable()
        self._prepare_dirs()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.os_user.own(self.data_dir)
        with tempfile.TemporaryDirectory(dir=self.state_dir) as scratch:
            os.chmod(scratch, 0o700)
            self.os_user.own(Path(scratch))
            pwfile = Path(scratch) / "pwfile"
            pwfile.write_text(self.secrets.db_password + "\n")
            pwfile.chmod(0o600)
            self.os_user.own(pwfile)
            self.run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.profile.db_user,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            )
        # The profile's settings are copied into the data directory at every start and
        # included from initdb's file, so a changed profile applies at the next start and the
        # cluster does not depend on where the project lives.
        included = self.layout.pgdata_included_conf.name
        with self.layout.pgdata_postgresql_conf.open("a") as conf:
            conf.write(f"\n# Added by mlflow-stack\ninclude_if_exists '{included}'\n")
        return True

    def check_version(self) -> None:
        data_major, bin_major = self.data_major(), self.binaries_major()
        if data_major is not None and data_major != bin_major:
            raise StackError(
                f"{self.data_dir} was made by PostgreSQL {data_major} but the binaries in "
                f"{self.bin_dir} are PostgreSQL {bin_major}: set postgres_bin_dir to "
                f"PostgreSQL {data_major} binaries, or back up and `invoke clean --volumes`"
            )

    def _install_settings(self) -> None:
        target = self.layout.pgdata_included_conf
        shutil.copyfile(self.layout.local_postgresql_conf, target)
        target.chmod(0o600)
        self.os_user.own(target)

    def start(self, timeout: float = 60) -> None:
        self._prepare_dirs()
        self.check_version()
        if self.is_running():
            return
        if not port_is_free("127.0.0.1", self.profile.postgres_port):
            raise port_in_use_error(self.profile, "postgres_port", "127.0.0.1")
        self._install_settings()
        # A postmaster killed a moment ago can linger as a zombie; PostgreSQL would take its
        # pid file for a live server.
        stale = self._pid_file_pid()
        if stale is not None and not wait_until(lambda: not Path(f"/proc/{stale}").exists(), 15):
            raise StackError(
                f"the PostgreSQL server (pid {stale}) of profile {self.profile.name} is "
                "still exiting after 15 s: try `invoke up` again in a moment"
            )
        self.run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(timeout)),
            timeout=timeout + 10,
        )

    def stop(self) -> None:
        if self.is_running():
            self.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60")

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect(timeout=3).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    reason = str(exc).strip().splitlines()[0]
                    raise StackError(f"PostgreSQL did not accept connections: {reason}") from None
                time.sleep(0.2)

    def ensure_databases(self) -> None:
        connection = self.connect()
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                for database in (self.profile.tracking_database, self.profile.auth_database):
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                    if cursor.fetchone() is None:
                        cursor.execute(
                            sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
                        )
        finally:
            connection.close()
