"""The one runner for external programs: argument lists in, one-line StackErrors out.

Every wrapper of the package (apt-get, docker, debootstrap, tar, the PostgreSQL programs) runs
through `run`; a program that takes over the terminal (psql for a person) through `attach`.
`MLFLOW_STACK_DEBUG=1` prints each command as it starts (mlflow_stack.cli.exits).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from mlflow_stack.errors import StackError


def last_line(text: str | None) -> str:
    """The last line that says something (docker ends its errors with a pointer to --help)."""
    lines = [
        line.strip()
        for line in (text or "").splitlines()
        if line.strip() and not line.startswith(("Run '", "See '"))
    ]
    return lines[-1] if lines else "no output"


def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    check: bool = True,
    what: str | None = None,
    cwd: Path | None = None,
    run_as: tuple[int, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to its end; its output is captured, or appended to `log`.

    `timeout`: seconds, or None for work whose length only the data decides (a dump).
    `stdin`: text fed to the program, which otherwise reads nothing. `what`: how the messages
    name the command (default: the program's file name). `run_as`: (uid, gid) to switch to,
    with no supplementary groups. With `check`, a non-zero exit raises
    "<what> failed (exit N): <last line of stderr | see LOG>".
    """
    name = what or Path(argv[0]).name
    with ExitStack() as files:
        # Output goes to files, never pipes: a daemon the program leaves behind (pg_ctl start)
        # inherits them, and a pipe would keep this call waiting for it.
        captured: tuple[IO[str], IO[str]] | None = None
        out: IO[str]
        err: IO[str] | int
        if log is None:
            captured = (
                files.enter_context(tempfile.TemporaryFile("w+")),
                files.enter_context(tempfile.TemporaryFile("w+")),
            )
            out, err = captured
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            out, err = files.enter_context(log.open("a")), subprocess.STDOUT
        try:
            result = subprocess.run(
                list(argv),
                input=stdin,
                stdin=subprocess.DEVNULL if stdin is None else None,
                stdout=out,
                stderr=err,
                text=True,
                env=None if env is None else dict(env),
                cwd=cwd,
                timeout=timeout,
                check=False,
                # None for each: run as the caller, as without these arguments.
                user=run_as[0] if run_as else None,
                group=run_as[1] if run_as else None,
                extra_groups=[] if run_as else None,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"{name} did not finish within {timeout:.0f} s") from None
        stdout = stderr = ""
        if captured is not None:
            for stream in captured:
                stream.seek(0)
            stdout, stderr = captured[0].read(), captured[1].read()
    if check and result.returncode != 0:
        detail = f"see {log}" if log is not None else last_line(stderr)
        raise StackError(f"{name} failed (exit {result.returncode}): {detail}")
    return subprocess.CompletedProcess(result.args, result.returncode, stdout, stderr)


def attach(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
    """Run `argv` on this terminal (a person types into it) until it ends; its exit code."""
    return subprocess.run(
        list(argv), env=None if env is None else dict(env), check=False
    ).returncode
