"""One interface, two implementations: local processes and Docker Compose."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlflow_stack.endpoints import DatabaseEndpoint as DatabaseEndpoint
from mlflow_stack.errors import StackError
from mlflow_stack.files import write_atomic
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets

if TYPE_CHECKING:  # health imports requests, which a runtime itself does not need
    from mlflow_stack.health import Progress

SERVICES = ("postgres", "mlflow")
RUNTIMES = ("auto", "local", "docker")


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    state: str  # running, stopped, starting, exited, …
    process: str  # pid or container id, "-" when none
    port: str
    health: str  # healthy, unhealthy, -


class Runtime(Protocol):
    name: str

    def up(self, progress: Progress) -> None: ...
    def down(self) -> None: ...
    def stop(self) -> None: ...
    def restart(self, service: str | None) -> None: ...
    def status(self) -> list[ServiceStatus]: ...
    def logs(self, service: str | None, follow: bool, tail: int) -> None: ...
    def is_running(self) -> bool: ...
    def remove_volumes(self) -> None: ...
    def database_endpoint(self) -> AbstractContextManager[DatabaseEndpoint]: ...
    def stop_mlflow(self) -> None: ...
    def start_mlflow(self, progress: Progress) -> None: ...
    def export_artifacts(self, target: Path) -> None: ...
    def import_artifacts(self, source: Path) -> None: ...
    # The audit log (mlflow_stack/auth/audit.py), wherever this runtime keeps it.
    def audit_records(self, follow: bool) -> Iterator[dict[str, Any]]: ...
    def record_audit(self, record: dict[str, Any]) -> None: ...


def check_service(service: str | None, services: tuple[str, ...] = SERVICES) -> None:
    """`services`: what this runtime runs for the profile (the local runtime may add the dev
    OpenID Provider); the default is what every runtime runs."""
    if service is not None and service not in services:
        raise StackError(f"unknown service {service!r}; services: {', '.join(services)}")


def remembered_runtime(profile: Profile) -> str | None:
    path = profile.layout.runtime_file
    return path.read_text().strip() if path.exists() else None


def remember_runtime(profile: Profile, name: str) -> None:
    write_atomic(profile.layout.runtime_file, name + "\n")


def check_runtime(requested: str, allow_auto: bool = True) -> None:
    if requested not in RUNTIMES or (requested == "auto" and not allow_auto):
        raise StackError(f"unknown runtime {requested!r}; runtimes: {', '.join(RUNTIMES)}")


def choose_runtime(profile: Profile, requested: str = "auto") -> str:
    """`auto`: the runtime the stack was last started with, else docker if an engine answers."""
    check_runtime(requested)
    if requested != "auto":
        return requested
    remembered = remembered_runtime(profile)
    if remembered in ("local", "docker"):
        return remembered
    from mlflow_stack.runtime.compose import engine_answers

    return "docker" if engine_answers() else "local"


def make_runtime(profile: Profile, secrets: Secrets, name: str) -> Runtime:
    check_runtime(name, allow_auto=False)
    if name == "local":
        from mlflow_stack.runtime.local import LocalRuntime

        return LocalRuntime(profile, secrets)
    from mlflow_stack.runtime.compose import ComposeRuntime

    return ComposeRuntime(profile)
