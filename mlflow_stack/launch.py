"""Start the MLflow server for supervisord: one process, fast warm starts, no orphans.

usage: python -m mlflow_stack.launch GROUP_FILE -- server MLFLOW_SERVER_OPTIONS...

`mlflow server` validates its options, migrates the databases, creates the admin, then spawns
uvicorn as a child and waits for it. That parent costs ~270 MB of RSS for nothing, and when it
is killed the uvicorn child lives on, still holding the port. So:

1. A killed predecessor's process group (its id is in GROUP_FILE; supervisord starts each
   program in a group of its own) is ended first.
2. The first start runs `mlflow server` in this process, with its spawn replaced by an exec:
   this process (the pid supervisord watches) becomes the uvicorn server MLflow would have
   started, with exactly MLflow's command and environment. Both are remembered next to
   GROUP_FILE, keyed by the arguments, the environment and the MLflow version.
3. Later starts with the same key exec that command directly: the server then imports MLflow
   once instead of twice (a warm start ~3 s shorter). The server's app creates the admin and
   checks the schema itself, as it does in every worker.
With MLflow's job runner on, `mlflow server` must stay the parent of its job consumers, and
this launcher simply execs it. Every start but a remembered one first brings the schemas to
head behind a PostgreSQL lock (mlflow_stack/container/migrate.py), as the container's entry
point does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mlflow_stack.layout import StackLayout
from mlflow_stack.runtime.processes import group_members

# Per start, not per configuration: a fresh one for every exec.
BOOT_ID = "_MLFLOW_SERVER_BOOT_ID"
# Says "this process already created the admin"; a remembered start must let the app do it.
ADMIN_BOOTSTRAPPED = "_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED"
# Our environment variables holding secrets: MLflow copies them into others (the store URI
# into MLFLOW_TRACKING_URI, …), which are remembered as references to these.
SECRET_SOURCES = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_FLASK_SERVER_SECRET_KEY")


def end_group(pgid: int, grace_seconds: float = 10) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.1)


def launch_key(server_args: list[str], environ: dict[str, str]) -> str:
    relevant = sorted((k, v) for k, v in environ.items() if k.startswith(("MLFLOW_", "_MLFLOW_")))
    material = json.dumps(
        [sys.executable, importlib.metadata.version("mlflow"), server_args, relevant]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def read_launch(path: Path, key: str) -> dict[str, Any] | None:
    try:
        launch = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return launch if isinstance(launch, dict) and launch.get("key") == key else None


def write_launch(
    path: Path, key: str, command: list[str], env_delta: dict[str, str], environ: dict[str, str]
) -> None:
    """Remember a start; values copied from our own environment (the backend store URI with
    its password, the secret key) are kept as references to it, so no secret is written."""
    sources = {environ[name]: name for name in SECRET_SOURCES if environ.get(name)}
    remembered: dict[str, object] = {}
    for name, value in env_delta.items():
        if name in (BOOT_ID, ADMIN_BOOTSTRAPPED):
            continue
        remembered[name] = {"copy_of": sources[value]} if value in sources else value
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"key": key, "command": command, "env": remembered}, fh)
    os.replace(tmp, path)


def resolve_env(remembered: dict[str, object]) -> dict[str, str] | None:
    env = {}
    for name, value in remembered.items():
        if isinstance(value, dict):
            source = os.environ.get(str(value.get("copy_of")))
            if source is None:
                return None
            env[name] = source
        else:
            env[name] = str(value)
    return env


def exec_server(command: list[str], env_delta: dict[str, str]) -> None:
    env = {**os.environ, **env_delta}
    env[BOOT_ID] = uuid.uuid4().hex
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: supervisord keeps watching (and signalling) this very pid.
    os.execve(command[0], command, env)  # noqa: S606


def exec_mlflow_server(server_args: list[str]) -> None:
    command = [sys.executable, "-m", "mlflow", *server_args]
    os.execv(command[0], command)  # noqa: S606


def run_mlflow_server_in_place(server_args: list[str], launch_file: Path, key: str) -> None:
    environ_before = dict(os.environ)
    import mlflow.server

    if not hasattr(mlflow.server, "_exec_cmd"):
        exec_mlflow_server(server_args)  # another MLflow: the plain way

    def exec_instead(
        cmd: list[Any], extra_env: dict[str, str] | None = None, **_kwargs: Any
    ) -> None:
        # What MLflow's _exec_cmd would hand to Popen: os.environ (which the CLI amended,
        # e.g. allowed hosts) plus extra_env. Only what differs from our own start is kept.
        final = {**os.environ, **(extra_env or {})}
        delta = {k: v for k, v in final.items() if environ_before.get(k) != v}
        command = [str(part) for part in cmd]
        write_launch(launch_file, key, command, delta, environ_before)
        exec_server(command, delta)

    # A private function (mlflow/server/__init__.py), replaced on purpose: see the docstring.
    mlflow.server._exec_cmd = exec_instead  # type: ignore[attr-defined]
    from mlflow.cli import cli

    cli.main(args=server_args, prog_name="mlflow")


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--" or argv[2] != "server":
        raise SystemExit(__doc__)
    group_file, server_args = Path(argv[0]), argv[2:]
    try:
        previous = int(group_file.read_text().strip())
    except (OSError, ValueError):
        previous = None
    if previous and previous != os.getpgrp():
        end_group(previous)
    group_file.write_text(f"{os.getpgrp()}\n")
    from mlflow_stack.container.migrate import migrate_on_start

    if os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true").lower() not in ("false", "0"):
        migrate_on_start()
        exec_mlflow_server(server_args)
    launch_file = StackLayout.launch_file_of(group_file)
    key = launch_key(server_args, dict(os.environ))
    remembered = read_launch(launch_file, key)
    env = resolve_env(remembered["env"]) if remembered else None
    if remembered and env is not None:
        # A warm start: same MLflow, same configuration, schemas brought to head before.
        exec_server(remembered["command"], env)
    # The schemas to head behind a lock first (mlflow_stack/container/migrate.py); this path
    # imports MLflow anyway, so it costs the database round trips only.
    migrate_on_start()
    run_mlflow_server_in_place(server_args, launch_file, key)


if __name__ == "__main__":
    main(sys.argv[1:])
