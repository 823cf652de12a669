"""The Docker Compose runtime: every `docker compose` call passes through `compose_command`."""

from __future__ import annotations

import json
import shutil
import subprocess

from mlflow_stack import health
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile
from mlflow_stack.render import COMPOSE_ENV_FILE, COMPOSE_FILE
from mlflow_stack.runtime import ServiceStatus, check_service

WAY_OUT = "or use --runtime local"
UP_TIMEOUT_SECONDS = 300


def project_name(profile: Profile) -> str:
    return f"mlflow-{profile.name}"


def docker_binary() -> str:
    binary = shutil.which("docker")
    if binary is None:
        raise StackError(
            f"docker is not installed: install Docker with its compose plugin, {WAY_OUT}"
        )
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


def compose_command(profile: Profile, *args: str) -> list[str]:
    """`docker compose` with the profile's project name, compose file and env file."""
    state_dir = profile.state_dir
    return [
        docker_binary(),
        "compose",
        "-p",
        project_name(profile),
        "-f",
        str(state_dir / COMPOSE_FILE),
        "--env-file",
        str(state_dir / COMPOSE_ENV_FILE),
        *args,
    ]


class ComposeRuntime:
    name = "docker"

    def __init__(self, profile: Profile):
        self.profile = profile
        self._checked = False

    def _preflight(self) -> None:
        if self._checked:
            return
        binary = docker_binary()
        plugin = subprocess.run(
            [binary, "compose", "version"], capture_output=True, text=True, check=False
        )
        if plugin.returncode != 0:
            raise StackError(f"the docker compose plugin is missing: install it, {WAY_OUT}")
        if not engine_answers():
            raise StackError(f"the Docker engine does not answer (is it running?), {WAY_OUT}")
        self._checked = True

    def run(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
        self._preflight()
        result = subprocess.run(
            compose_command(self.profile, *args),
            capture_output=capture,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
            suffix = f": {detail[0]}" if detail else ""
            raise StackError(f"docker compose {args[0]} failed (exit {result.returncode}){suffix}")
        return result

    def up(self, progress: health.Progress) -> None:
        progress.step("docker compose up --build --wait")
        self.run("up", "--build", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT_SECONDS))

    def down(self) -> None:
        self.run("down", "--remove-orphans")

    def stop(self) -> None:
        self.run("stop")

    def restart(self, service: str | None = None) -> None:
        check_service(service)
        self.run("restart", *([service] if service else []))

    def _containers(self) -> list[dict]:
        output = self.run("ps", "--all", "--format", "json", capture=True).stdout.strip()
        if not output:
            return []
        if output.startswith("["):
            return json.loads(output)
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
