"""The task bodies: what each `invoke` task does, printed for a person."""

from __future__ import annotations

import getpass
import shlex
import shutil
import sys
from pathlib import Path

from mlflow_stack import health, paths
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile, load_profile
from mlflow_stack.render import COMPOSE_FILE, render_profile
from mlflow_stack.runtime import (
    Runtime,
    choose_runtime,
    make_runtime,
    remember_runtime,
    remembered_runtime,
)
from mlflow_stack.secrets import SECRETS_FILE, resolve_secrets
from mlflow_stack.validate import validate_profile

# What `clean` keeps without --volumes; with it, only the secrets survive (so that a backup
# restores with the credentials it was made with).
DATA_ENTRIES = ("pgdata", "artifacts", "logs")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(paths.PROJECT_ROOT))
    except ValueError:
        return str(path)


def render(profile_name: str, check: bool = False) -> None:
    profile = load_profile(profile_name)
    written = render_profile(profile)
    print(f"rendered profile {profile.name} into {_shown(profile.state_dir)}/")
    for path in written:
        print(f"  {_shown(path)}")
    if check:
        validate(profile_name)


def validate(profile_name: str) -> None:
    profile = load_profile(profile_name)
    for line in validate_profile(profile):
        print(f"ok  {line}")


def _existing_runtime(profile: Profile, requested: str = "auto") -> Runtime:
    """The runtime of a stack that was brought up before (for down, status, logs, …)."""
    if not (profile.state_dir / COMPOSE_FILE).exists():
        raise StackError(
            f"profile {profile.name} has not been brought up: run `invoke up -p {profile.name}`"
        )
    name = requested if requested != "auto" else (remembered_runtime(profile) or "local")
    secrets, _ = resolve_secrets(profile)
    return make_runtime(profile, secrets, name)


def _print_access(profile: Profile) -> None:
    print(f"MLflow:      {health.mlflow_url(profile)}")
    print(f"admin user:  {profile.admin_username}")
    print(
        f'credentials: eval "$(invoke env -p {profile.name})"  (password in '
        f"{_shown(profile.state_dir / SECRETS_FILE)})"
    )


def is_running(profile: Profile, runtime_name: str) -> bool:
    """Whether the profile's stack was rendered and is up and healthy on that runtime."""
    if not (profile.state_dir / COMPOSE_FILE).exists():
        return False
    secrets, _ = resolve_secrets(profile)
    return make_runtime(profile, secrets, runtime_name).is_running()


def up(profile_name: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    progress = health.Progress()
    runtime_name = choose_runtime(profile, runtime)
    if is_running(profile, runtime_name):
        print(
            f"profile {profile.name} is already running ({runtime_name} runtime); nothing changed"
        )
        _print_access(profile)
        return
    progress.step(f"rendering profile {profile.name}")
    render_profile(profile)
    secrets, _ = resolve_secrets(profile)
    stack = make_runtime(profile, secrets, runtime_name)
    stack.up(progress)
    remember_runtime(profile, runtime_name)
    if not health.mlflow_accepts(profile, profile.admin_username, secrets.admin_password):
        raise StackError(
            f"MLflow is up but refuses {profile.admin_username} with the password in "
            f"{SECRETS_FILE}: if it was changed, set MLFLOW_STACK_ADMIN_PASSWORD"
        )
    progress.step(f"profile {profile.name} is healthy ({runtime_name} runtime)")
    _print_access(profile)


def down(profile_name: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    _existing_runtime(profile, runtime).down()
    print(f"profile {profile.name} is down; its data is kept")


def stop(profile_name: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    _existing_runtime(profile, runtime).stop()
    print(f"profile {profile.name} is stopped")


def restart(profile_name: str, service: str | None = None, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    _existing_runtime(profile, runtime).restart(service)
    print(f"restarted {service or 'every service'} of profile {profile.name}")


def status(profile_name: str, runtime: str = "auto") -> bool:
    profile = load_profile(profile_name)
    stack = _existing_runtime(profile, runtime)
    rows = stack.status()
    print(f"profile {profile.name} ({stack.name} runtime)")
    header = ("SERVICE", "STATE", "PID/CONTAINER", "PORT", "HEALTH")
    table = [header] + [(r.service, r.state, r.process, r.port, r.health) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return all(r.health == "healthy" for r in rows)


def logs(
    profile_name: str, service: str | None, follow: bool, tail: int, runtime: str = "auto"
) -> None:
    if tail < 0:
        raise StackError("--tail must be 0 or more")
    profile = load_profile(profile_name)
    _existing_runtime(profile, runtime).logs(service, follow, tail)


def _confirm(question: str, yes: bool, interactive: bool) -> None:
    if yes:
        return
    if not interactive:
        raise StackError(
            "refusing to delete without confirmation and without a terminal: pass --yes"
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise StackError("nothing deleted")


def clean(
    profile_name: str,
    volumes: bool,
    yes: bool,
    runtime: str = "auto",
    interactive: bool | None = None,
) -> None:
    profile = load_profile(profile_name)
    state_dir = profile.state_dir
    if not state_dir.exists():
        print(f"nothing to clean: {_shown(state_dir)} does not exist")
        return
    what = "rendered files" + (", database, artifacts and logs" if volumes else "")
    interactive = sys.stdin.isatty() if interactive is None else interactive
    _confirm(
        f"Delete the {what} of profile {profile.name} ({_shown(state_dir)})?", yes, interactive
    )

    if (state_dir / COMPOSE_FILE).exists():
        stack = _existing_runtime(profile, runtime)
        stack.down()
        if volumes:
            stack.remove_volumes()
    keep = {SECRETS_FILE} | (set() if volumes else set(DATA_ENTRIES))
    for entry in sorted(state_dir.iterdir()):
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    kept = sorted(e.name for e in state_dir.iterdir())
    print(f"removed the {what} of profile {profile.name}; kept: {', '.join(kept) or 'nothing'}")


def env(profile_name: str, user: str | None = None, token: bool = False) -> None:
    profile = load_profile(profile_name)
    if token:
        # An access token (read from stdin, or prompted) instead of a username and password;
        # the unset keeps a shell's earlier basic-auth variables from winning over it.
        from mlflow_stack.access import read_token

        if user is not None:
            raise StackError("--user and --token exclude each other: a token knows its user")
        value = read_token()
        print(f"export MLFLOW_TRACKING_URI={shlex.quote(health.mlflow_url(profile))}")
        print(f"export MLFLOW_TRACKING_TOKEN={shlex.quote(value)}")
        print("unset MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD")
        return
    secrets, _ = resolve_secrets(profile)
    if user is None or user == profile.admin_username:
        username, password = profile.admin_username, secrets.admin_password
    else:
        username = user
        password = getpass.getpass(f"password of {user}: ", stream=sys.stderr)
    values = {
        "MLFLOW_TRACKING_URI": health.mlflow_url(profile),
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    for key, value in values.items():
        print(f"export {key}={shlex.quote(value)}")


# --- db.* -------------------------------------------------------------------------------------


def _local_cluster(profile: Profile, secrets):
    from mlflow_stack.runtime.postgres import PostgresCluster

    return PostgresCluster(profile, secrets)


def _require_local(profile: Profile, task_name: str) -> None:
    if remembered_runtime(profile) == "docker":
        raise StackError(
            f"{task_name} works on the local runtime's files; for the docker runtime use "
            f"`docker compose exec postgres pg_dump …` (see README, Database)"
        )


def db_probe(profile_name: str) -> None:
    from mlflow_stack import db

    profile = load_profile(profile_name)
    secrets, _ = resolve_secrets(profile)
    results = db.probe(profile, secrets)
    for result in results:
        print(f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
    failed = [r for r in results if not r.ok]
    if failed:
        raise StackError(f"db.probe failed: {failed[0].name}: {failed[0].detail}")


def db_wait(profile_name: str, timeout: float) -> None:
    from mlflow_stack import db

    profile = load_profile(profile_name)
    secrets, _ = resolve_secrets(profile)
    waited = db.wait(profile, secrets, timeout)
    print(f"PostgreSQL of profile {profile.name} accepts connections (after {waited:.1f} s)")


def db_psql(profile_name: str, database: str) -> int:
    import subprocess

    from mlflow_stack import db

    profile = load_profile(profile_name)
    secrets, _ = resolve_secrets(profile)
    names = {"tracking": profile.tracking_database, "auth": profile.auth_database}
    if database not in names:
        raise StackError(f"unknown database {database!r}; choose tracking or auth")
    cluster = _local_cluster(profile, secrets)
    command = db.psql_command(cluster, names[database])
    return subprocess.run(
        command, env=db.client_environment(profile, secrets), check=False
    ).returncode


def db_backup(profile_name: str, output: str | None) -> Path:
    import time

    from mlflow_stack import db

    profile = load_profile(profile_name)
    _require_local(profile, "db.backup")
    secrets, _ = resolve_secrets(profile)
    if output is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = paths.PROJECT_ROOT / "backups" / f"mlflow-{profile.name}-{stamp}.tar.gz"
    else:
        target = Path(output)
    written = db.backup(profile, secrets, _local_cluster(profile, secrets), target)
    print(f"backed up profile {profile.name} (both databases and artifacts) to {_shown(written)}")
    return written


def db_restore(profile_name: str, source: str) -> None:
    from mlflow_stack import db
    from mlflow_stack.runtime.local import LocalRuntime

    profile = load_profile(profile_name)
    _require_local(profile, "db.restore")
    secrets, _ = resolve_secrets(profile)
    stack = LocalRuntime(profile, secrets)
    if not stack.postgres.is_running():
        raise StackError(
            f"PostgreSQL of profile {profile.name} is not running: "
            f"run `invoke up -p {profile.name}` first"
        )
    progress = health.Progress()
    progress.step("stopping MLflow for the restore")
    stack.stop_mlflow()
    manifest = db.restore(profile, secrets, stack.postgres, Path(source))
    progress.step(
        f"restored the backup of {manifest.get('created')} (profile {manifest.get('profile')})"
    )
    stack.start_mlflow(progress)
    progress.step(f"profile {profile.name} is healthy again")
