"""A stack driven like a user drives it: `invoke` in subprocesses, on free ports (every tier
but unit)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_stack.invoking import run_invoke
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import load_profile
from mlflow_stack.runtime.processes import descendants

SDK_CLIENT = Path(__file__).parent / "integration" / "sdk_client.py"


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
    # What a bare `up` runs on: a tier's stacks must not move to docker because an engine
    # happens to answer on this machine (`auto` would pick it).
    runtime: str = "local"

    @property
    def state_dir(self) -> Path:
        return self.home / self.profile

    @property
    def tls(self) -> str:
        """The profile's tls mode as this stack runs it (profile file and env overrides)."""
        return load_profile(self.profile, self.env).tls

    @property
    def url(self) -> str:
        """The MLflow server's base URL: https where the profile speaks TLS (demo and sso do)."""
        scheme = "http" if self.tls == "off" else "https"
        return f"{scheme}://127.0.0.1:{self.env['MLFLOW_STACK_MLFLOW_PORT']}"

    @property
    def verify(self) -> str | bool:
        """requests' `verify` for the server: the profile's CA under tls = self-signed. Pass it
        on every request: REQUESTS_CA_BUNDLE, where set, overrides a Session's own `verify`."""
        if self.tls == "self-signed":
            return str(StackLayout(self.state_dir).tls_dir / "ca.crt")
        return True

    def invoke(
        self, *args: str, check: bool = True, timeout: float = 240, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if args[:1] == ("up",) and "--runtime" not in args:
            args = (*args, "--runtime", self.runtime)
        # `invoke --list` and the like take no --profile.
        profile = self.profile if args and not args[0].startswith("-") else None
        result = run_invoke(args, env=self.env, timeout=timeout, profile=profile, stdin=stdin)
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
        return sorted(set(owners) | set(descendants(owners)))

    def kill_everything(self) -> list[int]:
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids


def make_stack(integration_home, profile: str) -> Stack:
    home, stacks = integration_home
    stack = Stack(profile, home, base_environment(home))
    stack.env["MLFLOW_STACK_MLFLOW_PORT"] = str(free_port())
    stack.env["MLFLOW_STACK_POSTGRES_PORT"] = str(free_port())
    stacks.append(stack)
    return stack


def expire_token(auth_db_url: str, token_id: int) -> None:
    """Move a token's expiry into the past in the auth database: the server's expiry check,
    without sleeping until the token runs out."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from mlflow_stack.auth.schema import access_tokens

    engine = sa.create_engine(auth_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                access_tokens.update()
                .where(access_tokens.c.id == token_id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        engine.dispose()
