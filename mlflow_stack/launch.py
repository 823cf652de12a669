"""Start `mlflow server` for supervisord, first ending what a killed predecessor left behind.

`mlflow server` runs uvicorn as a child process. When the server itself is killed with SIGKILL,
that child lives on, still holding the port, and the restarted server cannot bind it while the
orphan keeps answering with the old process. supervisord starts each program in a process group
of its own, so the group id names everything one start left behind: this launcher records it and
ends a previous group before it execs the new server (same pid, so supervisord tracks it).

usage: python -m mlflow_stack.launch GROUP_FILE -- MLFLOW_SERVER_ARGS...
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


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


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit(__doc__)
    group_file = Path(argv[0])
    try:
        previous = int(group_file.read_text().strip())
    except (OSError, ValueError):
        previous = None
    if previous and previous != os.getpgrp():
        end_group(previous)
    group_file.write_text(f"{os.getpgrp()}\n")
    # exec, not a child: supervisord must keep tracking (and signalling) this very pid.
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", *argv[2:]])  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])
