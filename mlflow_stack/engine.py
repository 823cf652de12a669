"""A Docker engine for the compose tests and CI: use the running one, or start Debian's.

Starting one installs packages and runs a root daemon, so it happens only when asked:
`may_start_engine()` is true on CI (CI=true) or with MLFLOW_STACK_START_ENGINE=1, never
silently on a laptop. The daemon started here is stopped here, by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow_stack import programs
from mlflow_stack.errors import StackError
from mlflow_stack.runtime.compose import engine_answers
from mlflow_stack.runtime.processes import children_of, process_alive, start_time

START_VARIABLE = "MLFLOW_STACK_START_ENGINE"
PACKAGES = ("docker.io", "debootstrap")
ANSWER_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30
APT_TIMEOUT_SECONDS = 900
# The daemons started here, kept so they are reaped (a dropped Popen warns and lingers).
_STARTED: dict[int, subprocess.Popen[bytes]] = {}
HOW_TO_GET_ONE = (
    "install Docker and start it, or, as root on Debian, set "
    f"{START_VARIABLE}=1 to install and start docker.io"
)


@dataclass(frozen=True)
class StartedEngine:
    """A dockerd this module started: stop it with `stop_engine`."""

    pid: int
    log_path: Path


def may_start_engine() -> bool:
    """True on CI (CI=true) or when MLFLOW_STACK_START_ENGINE=1 asks for it."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(START_VARIABLE, "") == "1"


def can_install() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists()


def ensure_engine(allow_install: bool) -> StartedEngine | None:
    """None when an engine answers already; else Debian's docker.io, installed and started."""
    if engine_answers():
        return None
    if not allow_install:
        raise StackError(f"no Docker engine answers: {HOW_TO_GET_ONE}")
    if not can_install():
        raise StackError(
            "no Docker engine answers and this is not root on Debian: install Docker and start it"
        )
    install_packages()
    return start_dockerd()


def apt_get(*args: str) -> None:
    programs.run(
        ["apt-get", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=APT_TIMEOUT_SECONDS,
        what=f"apt-get {args[0]}",
    )


def install_packages() -> None:
    """docker.io for the engine, debootstrap for the image stand-ins (mlflow_stack.standins)."""
    if shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    apt_get("update")
    apt_get("install", "-y", "--no-install-recommends", *PACKAGES)


def start_dockerd(extra_args: tuple[str, ...] = ()) -> StartedEngine:
    """dockerd with its defaults (tests add a socket and folders of their own), in its own
    session so a Ctrl-C of the test run reaches it only through `stop_engine`."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise StackError("dockerd is missing: apt-get install docker.io")
    log_path = Path(tempfile.mkdtemp(prefix="mlflow-stack-dockerd-")) / "dockerd.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [dockerd, *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _STARTED[process.pid] = process
    engine = StartedEngine(process.pid, log_path)
    deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
    while not engine_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            exited = process.poll() is not None
            stop_engine(engine)
            reason = f"exited ({process.returncode})" if exited else "did not answer within 60 s"
            raise StackError(f"dockerd {reason}: see {log_path}")
        time.sleep(0.5)
    return engine


def reap(pid: int) -> None:
    """Collect `pid` if it is our child, so it does not stay a zombie."""
    process = _STARTED.get(pid)
    if process is not None:
        if process.poll() is not None:
            del _STARTED[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`; only ever this pid."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not process_alive(pid):
                reap(pid)
                # A multithreaded process shows its leader as a zombie while other threads
                # still exit, and cannot be collected yet: wait until our child really is.
                if pid not in _STARTED:
                    return
            time.sleep(0.2)


def stop_engine(engine: StartedEngine) -> None:
    """Stop the dockerd `ensure_engine` started, and the containerd it spawned."""
    # Its containerd child normally ends with it; one that outlives it is stopped by pid too.
    spawned = children_of(engine.pid)
    terminate(engine.pid, STOP_TIMEOUT_SECONDS)
    for pid, started in spawned:
        if process_alive(pid) and start_time(pid) == started:
            terminate(pid, STOP_TIMEOUT_SECONDS)
