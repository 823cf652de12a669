"""`invoke` in a subprocess, the way a user runs it: for the tests' stacks and the bench.

It lives in the package, not in tests/, because the bench (in the package) cannot import the
tests, while the tests import the package anyway.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence

from mlflow_stack import paths, programs


def invoke_argv(args: Sequence[str], profile: str | None = None) -> list[str]:
    """This interpreter's `invoke ARGS [--profile PROFILE]`."""
    profile_flag = ["--profile", profile] if profile is not None else []
    return [sys.executable, "-m", "invoke", *args, *profile_flag]


def run_invoke(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    profile: str | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `invoke ARGS [--profile PROFILE]` from the project root in `env`, output captured;
    its exit code is the caller's to judge."""
    return programs.run(
        invoke_argv(args, profile),
        timeout=timeout,
        env=env,
        stdin=stdin,
        check=False,
        what=f"invoke {' '.join(args[:1])}".rstrip(),
        cwd=paths.PROJECT_ROOT,
    )
