"""A real stack for integration tests: `invoke` in subprocesses, like a user, on free ports."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlflow_stack import paths

SDK_CLIENT = Path(__file__).with_name("sdk_client.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def base_environment(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_STACK_", "MLFLOW_TRACKING_"))
    }
    env["MLFLOW_STACK_HOME"] = str(home)
    return env


@dataclass
class Stack:
    profile: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.home / self.profile

    def invoke(
        self, *args: str, check: bool = True, timeout: float = 240, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "invoke", *args, "--profile", self.profile]
            if args and not args[0].startswith("-")
            else [sys.executable, "-m", "invoke", *args],
            cwd=paths.PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"invoke {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def client_env(self) -> dict[str, str]:
        """What `eval "$(invoke env)"` would put into a shell."""
        exported = self.invoke("env").stdout
        env = dict(self.env)
        for line in exported.splitlines():
            assignment = shlex.split(line.removeprefix("export "))[0]
            key, _, value = assignment.partition("=")
            env[key] = value
        return env

    def sdk(self, *args: str, env: dict[str, str] | None = None) -> dict:
        """Run tests/integration/sdk_client.py (the real MLflow SDK) against the stack."""
        result = subprocess.run(
            [sys.executable, str(SDK_CLIENT), *args],
            env=env or self.client_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"sdk {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def processes(self) -> list[int]:
        """Every process whose command line names this stack's folder, and their children."""
        marker = str(self.state_dir)
        owners = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                owners.append(int(entry.name))
        return sorted(set(owners) | set(children_of(owners)))

    def kill_everything(self) -> list[int]:
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids


def children_of(parents: list[int]) -> list[int]:
    found: list[int] = []
    wanted = set(parents)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid in wanted:
            found.append(int(entry.name))
    return found + (children_of(found) if found else [])


@pytest.fixture(scope="session")
def integration_home():
    # Not under pytest's tmp_path: that is mode 0700 and the unprivileged PostgreSQL user
    # (when the tests run as root) must be able to reach its data directory.
    home = Path(tempfile.mkdtemp(prefix="mlflow-stack-it-"))
    home.chmod(0o755)
    stacks: list[Stack] = []
    yield home, stacks
    for stack in stacks:
        if stack.state_dir.exists():
            stack.invoke("down", check=False, timeout=120)
            stack.kill_everything()
    shutil.rmtree(home, ignore_errors=True)


def make_stack(integration_home, profile: str) -> Stack:
    home, stacks = integration_home
    stack = Stack(profile, home, base_environment(home))
    stack.env["MLFLOW_STACK_MLFLOW_PORT"] = str(free_port())
    stack.env["MLFLOW_STACK_POSTGRES_PORT"] = str(free_port())
    stacks.append(stack)
    return stack


@pytest.fixture(scope="module")
def ci_stack(integration_home):
    stack = make_stack(integration_home, "ci")
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)
