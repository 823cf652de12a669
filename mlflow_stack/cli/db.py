"""The bodies of the db.* tasks: probe, wait, psql, backup and restore, on any runtime.

The work itself is the library's (`mlflow_stack.db`); here it is given the running stack's
database endpoint and its result is printed for a person.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow_stack import db, health, paths
from mlflow_stack.cli.output import shown
from mlflow_stack.cli.stack import existing_runtime
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile
from mlflow_stack.runtime import Runtime
from mlflow_stack.secrets import load_secrets


def probe(profile_name: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    stack = existing_runtime(profile, runtime)
    secrets = load_secrets(profile)
    with stack.database_endpoint() as endpoint:
        results = db.probe(profile, secrets, endpoint)
    for result in results:
        print(f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
    failed = [r for r in results if not r.ok]
    if failed:
        raise StackError(f"db.probe failed: {failed[0].name}: {failed[0].detail}")


def wait(profile_name: str, timeout: float, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    stack = existing_runtime(profile, runtime)
    secrets = load_secrets(profile)
    with stack.database_endpoint() as endpoint:
        waited = db.wait(profile, secrets, endpoint, timeout)
    print(f"PostgreSQL of profile {profile.name} accepts connections (after {waited:.1f} s)")


def psql(profile_name: str, database: str, runtime: str = "auto") -> int:
    """Run psql on the tracking or auth database; its exit code."""
    profile = load_profile(profile_name)
    names = {"tracking": profile.tracking_database, "auth": profile.auth_database}
    if database not in names:
        raise StackError(f"unknown database {database!r}; choose tracking or auth")
    stack = existing_runtime(profile, runtime)
    secrets = load_secrets(profile)
    with stack.database_endpoint() as endpoint:
        return db.psql(profile, secrets, endpoint, names[database])


def backup(profile_name: str, output: str | None, runtime: str = "auto") -> Path:
    profile = load_profile(profile_name)
    stack = existing_runtime(profile, runtime)
    secrets = load_secrets(profile)
    if output is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = paths.PROJECT_ROOT / "backups" / f"mlflow-{profile.name}-{stamp}.tar.gz"
    else:
        target = Path(output)
    with stack.database_endpoint() as endpoint:
        written = db.backup(profile, secrets, endpoint, stack, target)
    print(f"backed up profile {profile.name} (both databases and artifacts) to {shown(written)}")
    return written


def restore(profile_name: str, source: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    stack = existing_runtime(profile, runtime)
    secrets = load_secrets(profile)
    if not Path(source).expanduser().is_file():
        raise StackError(f"no backup at {source}")
    if not _postgres_running(stack):
        raise StackError(
            f"PostgreSQL of profile {profile.name} is not running: "
            f"run `invoke up -p {profile.name}` first"
        )
    progress = health.Progress()
    progress.step("stopping MLflow for the restore")
    stack.stop_mlflow()
    with stack.database_endpoint() as endpoint:
        manifest = db.restore(profile, secrets, endpoint, stack, Path(source))
    progress.step(
        f"restored the backup of {manifest.get('created')} (profile {manifest.get('profile')})"
    )
    stack.start_mlflow(progress)
    progress.step(f"profile {profile.name} is healthy again")


def _postgres_running(stack: Runtime) -> bool:
    return any(row.service == "postgres" and row.state == "running" for row in stack.status())
