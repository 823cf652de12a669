"""The local runtime: a PostgreSQL cluster of the profile's own, MLflow under supervisord (and,
for single sign-on through a provider the stack runs, the dev OpenID Provider next to it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow_stack import health, oidc_dev, oidc_local, programs
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.oidc_profile import issuer, runs_dev_provider
from mlflow_stack.profile import Profile
from mlflow_stack.runtime import SERVICES, DatabaseEndpoint, ServiceStatus, check_service
from mlflow_stack.runtime.postgres import PostgresCluster, port_in_use_error, port_is_free
from mlflow_stack.runtime.processes import process_alive
from mlflow_stack.secrets import Secrets

MLFLOW_PROGRAM = "mlflow"
# The caller's MLflow client settings must not leak into the server.
CLIENT_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
HEALTH_TIMEOUT = 120.0
PROVIDER_TIMEOUT = 30.0  # node starts the provider in well under a second


def tail_lines(path: Path, count: int) -> list[str]:
    if not path.exists():
        return []
    with path.open(errors="replace") as fh:
        return [line.rstrip("\n") for line in deque(fh, maxlen=count)]


class LocalRuntime:
    name = "local"

    def __init__(self, profile: Profile, secrets: Secrets):
        self.profile = profile
        self.secrets = secrets
        self.layout = profile.layout
        self.postgres = PostgresCluster(profile, secrets)
        self.supervisor_conf = self.layout.supervisord_conf
        self.supervisor_pid_file = self.layout.supervisord_pid
        self.logs_dir = self.layout.logs
        self.dev_provider = runs_dev_provider(profile, "local")

    def services(self) -> tuple[str, ...]:
        return (*SERVICES, oidc_local.PROGRAM) if self.dev_provider else SERVICES

    # --- supervisord: every call goes through here ---------------------------------------

    def _supervisorctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = programs.run(
            [
                sys.executable,
                "-m",
                "supervisor.supervisorctl",
                "-c",
                str(self.supervisor_conf),
                *args,
            ],
            timeout=120,
            check=False,
            what=f"supervisorctl {' '.join(args)}",
        )
        if check and result.returncode not in (0, 3):  # 3: a program is not running
            message = (result.stdout + result.stderr).strip().splitlines()
            raise StackError(
                f"supervisorctl {' '.join(args)} failed: {message[-1:] or 'no output'}"
            )
        return result

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self.supervisor_pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def _mlflow_process(self) -> tuple[str, str]:
        """(state, pid) of the MLflow program as supervisord sees it."""
        return self._program_process(MLFLOW_PROGRAM)

    def _program_process(self, program: str) -> tuple[str, str]:
        if self.supervisor_pid() is None:
            return "stopped", "-"
        output = self._supervisorctl("status", program, check=False).stdout.split()
        # e.g. "mlflow RUNNING pid 1234, uptime 0:00:05"
        state = output[1].lower() if len(output) > 1 else "unknown"
        pid = output[3].rstrip(",") if len(output) > 3 and output[2] == "pid" else "-"
        return state, pid

    def _server_environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
        env.update(parse_env_file(self.layout.local_mlflow_env))
        return env

    def _start_supervisor(self) -> None:
        self.layout.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self.layout.artifacts.mkdir(parents=True, exist_ok=True)
        # Secrets travel in the environment supervisord passes to MLflow, never in argv.
        result = programs.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.supervisor_conf)],
            env=self._server_environment(),
            timeout=60,
            check=False,
            what="supervisord",
        )
        if result.returncode != 0:
            raise StackError(f"supervisord did not start: {result.stderr.strip()[-300:]}")
        if not health.wait_until(lambda: self.supervisor_pid() is not None, 10):
            raise StackError(
                f"supervisord started but wrote no pid file within 10 s: see "
                f"{self.layout.supervisord_log}"
            )

    def _stop_supervisor(self) -> None:
        pid = self.supervisor_pid()
        if pid is None:
            return
        self._supervisorctl("shutdown", check=False)
        if not health.wait_until(lambda: self.supervisor_pid() is None, 30):
            os.kill(pid, signal.SIGTERM)
            if not health.wait_until(lambda: self.supervisor_pid() is None, 10):
                raise StackError(
                    f"supervisord (pid {pid}) of profile {self.profile.name} did not stop: "
                    f"stop it with `kill {pid}`, then run the command again"
                )

    # --- the runtime interface -----------------------------------------------------------

    def is_running(self) -> bool:
        return (
            self.postgres.is_running()
            and self._mlflow_process()[0] == "running"
            and health.mlflow_is_healthy(self.profile)
            and (not self.dev_provider or oidc_local.is_healthy(self.profile))
        )

    def up(self, progress: health.Progress) -> None:
        if self.postgres.initialize():
            progress.step("initialized a new PostgreSQL cluster (initdb)")
        if not self.postgres.is_running():
            progress.step(f"starting PostgreSQL on 127.0.0.1:{self.profile.postgres_port}")
            self.postgres.start()
        self.postgres.check_running_port()
        self.postgres.wait_ready()
        self.postgres.ensure_databases()
        progress.step("PostgreSQL is ready; both databases exist")

        if self.supervisor_pid() is None and not port_is_free(
            self.profile.bind_address, self.profile.mlflow_port
        ):
            raise port_in_use_error(self.profile, "mlflow_port", self.profile.bind_address)
        if (
            self.dev_provider
            and self.supervisor_pid() is None
            and not port_is_free("127.0.0.1", self.profile.oidc_provider_port)
        ):
            raise StackError(
                f"port {self.profile.oidc_provider_port} on 127.0.0.1 is already in use: set "
                f"oidc_provider_port in config/profiles/{self.profile.name}.toml or "
                "MLFLOW_STACK_OIDC_PROVIDER_PORT"
            )
        progress.step(
            "starting MLflow and the dev OpenID Provider under supervisord"
            if self.dev_provider
            else "starting MLflow under supervisord"
        )
        self.start_mlflow(progress)

    def wait_healthy(self, progress: health.Progress) -> None:
        progress.step(f"waiting for {health.mlflow_url(self.profile)}/health")
        if not health.wait_until(
            lambda: health.mlflow_is_healthy(self.profile, timeout=1),
            HEALTH_TIMEOUT,
            progress,
            "MLflow",
            interval=0.1,
        ):
            log = self.layout.mlflow_log
            last = "\n".join(f"  | {line}" for line in tail_lines(log, 15))
            raise StackError(
                f"MLflow did not become healthy within {HEALTH_TIMEOUT:.0f} s; last lines of "
                f"{log}:\n{last}\n  try: invoke logs -p {self.profile.name} --service mlflow"
            )

    def wait_for_provider(self, progress: health.Progress) -> None:
        """The discovery document answers (MLflow reads it at the first login, not at start,
        but `up` ends with every service healthy)."""
        progress.step(f"waiting for {oidc_local.discovery_url(self.profile)}")
        try:
            oidc_dev.wait_for_discovery(issuer(self.profile, "local"), timeout=PROVIDER_TIMEOUT)
        except StackError as error:
            log = self.layout.oidc_provider_log
            last = "\n".join(f"  | {line}" for line in tail_lines(log, 15))
            raise StackError(
                f"{error}; last lines of {log}:\n{last}\n  try: invoke logs -p "
                f"{self.profile.name} --service {oidc_local.PROGRAM}"
            ) from None

    def stop_mlflow(self) -> None:
        if self.supervisor_pid() is not None:
            self._supervisorctl("stop", MLFLOW_PROGRAM)

    def start_mlflow(self, progress: health.Progress) -> None:
        if self.supervisor_pid() is None:
            if self.dev_provider and oidc_local.install(self.profile):
                progress.step(
                    f"installed the dev OpenID Provider into {self.layout.oidc_provider_install}"
                )
            self._start_supervisor()
        else:
            self._supervisorctl("start", MLFLOW_PROGRAM)
            if self.dev_provider:  # supervisord gives up after startretries: try again
                self._supervisorctl("start", oidc_local.PROGRAM)
        if self.dev_provider:
            self.wait_for_provider(progress)
        self.wait_healthy(progress)

    def stop(self) -> None:
        self._stop_supervisor()
        self.postgres.stop()

    down = stop

    def restart(self, service: str | None = None) -> None:
        check_service(service, self.services())
        if service == oidc_local.PROGRAM:
            if self.supervisor_pid() is None:
                self.start_mlflow(health.Progress())
            else:
                self._supervisorctl("restart", oidc_local.PROGRAM)
                self.wait_for_provider(health.Progress())
            return
        if service in (None, "postgres"):
            self.postgres.restart()
            self.postgres.wait_ready()
        if service in (None, "mlflow"):
            # supervisord itself is restarted: MLflow's environment (local/mlflow.env, e.g. a
            # rotated secret key) is what supervisord read when it started.
            self._stop_supervisor()
        self.start_mlflow(health.Progress())

    def status(self) -> list[ServiceStatus]:
        pg_running = self.postgres.is_running()
        pg_pid = self.postgres.pid() if pg_running else None
        pg_health = "-"
        if pg_running:
            try:
                self.postgres.connect(timeout=2).close()
                pg_health = "healthy"
            except Exception:  # any failure to connect means unhealthy
                pg_health = "unhealthy"
        mlflow_state, mlflow_pid = self._mlflow_process()
        mlflow_health = "-"
        if mlflow_state == "running":
            mlflow_health = "healthy" if health.mlflow_is_healthy(self.profile) else "unhealthy"
        rows = [
            ServiceStatus(
                "postgres",
                "running" if pg_running else "stopped",
                str(pg_pid or "-"),
                str(self.postgres.endpoint),
                pg_health,
            ),
            ServiceStatus(
                "mlflow",
                mlflow_state,
                mlflow_pid,
                f"{self.profile.bind_address}:{self.profile.mlflow_port}",
                mlflow_health,
            ),
        ]
        if self.dev_provider:
            state, pid = self._program_process(oidc_local.PROGRAM)
            provider_health = "-"
            if state == "running":
                healthy = oidc_local.is_healthy(self.profile)
                provider_health = "healthy" if healthy else "unhealthy"
            port = f"127.0.0.1:{self.profile.oidc_provider_port}"
            rows.append(ServiceStatus(oidc_local.PROGRAM, state, pid, port, provider_health))
        return rows

    def log_files(self, service: str | None) -> list[Path]:
        check_service(service, self.services())
        files = {"postgres": self.layout.postgres_log, "mlflow": self.layout.mlflow_log}
        if self.dev_provider:
            files[oidc_local.PROGRAM] = self.layout.oidc_provider_log
        chosen = [service] if service else list(files)
        return [files[name] for name in chosen]

    def logs(self, service: str | None, follow: bool, tail: int) -> None:
        files = self.log_files(service)
        for path in files:
            if len(files) > 1:
                print(f"==> {path.name} <==")
            for line in tail_lines(path, tail):
                print(line)
        if follow:
            follow_files(files)

    def remove_volumes(self) -> None:
        for folder in (self.layout.pgdata, self.layout.artifacts, self.layout.logs):
            if folder.exists():
                shutil.rmtree(folder)

    @contextmanager
    def database_endpoint(self) -> Iterator[DatabaseEndpoint]:
        yield self.postgres.endpoint

    def export_artifacts(self, target: Path) -> None:
        artifacts = self.layout.artifacts
        if artifacts.exists():
            shutil.copytree(artifacts, target, dirs_exist_ok=True)

    def import_artifacts(self, source: Path) -> None:
        artifacts = self.layout.artifacts
        if artifacts.exists():
            shutil.rmtree(artifacts)
        if source.exists():
            shutil.copytree(source, artifacts)
        else:
            artifacts.mkdir(parents=True)

    def audit_records(self, follow: bool) -> Iterator[dict[str, Any]]:
        from mlflow_stack.auth import audit

        path = self.layout.audit_log
        return audit.follow_records(path) if follow else audit.read_records(path)

    def record_audit(self, record: dict[str, Any]) -> None:
        from mlflow_stack.auth import audit

        settings = audit.Settings(
            self.layout.audit_log,
            max_bytes=self.profile.audit_max_mb * 1024 * 1024,
            backups=self.profile.audit_backups,
        )
        log = audit.AuditFile(settings)
        try:
            log.append(record)
        finally:
            log.close()


def follow_files(files: list[Path]) -> None:
    """Print what is appended to `files` until interrupted (Ctrl-C)."""
    handles = {}
    for path in files:
        if path.exists():
            fh = path.open(errors="replace")
            fh.seek(0, os.SEEK_END)
            handles[path] = fh
    try:
        while True:
            for path, fh in handles.items():
                for line in fh.readlines():
                    prefix = f"{path.stem} | " if len(handles) > 1 else ""
                    print(prefix + line, end="", flush=True)
            time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    finally:
        for fh in handles.values():
            fh.close()
