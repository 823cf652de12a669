"""Facts about processes, read from /proc."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True for a live process; false for none and for a zombie.

    A killed daemon stays a zombie until init reaps it, and kill(pid, 0) still succeeds on a
    zombie: a stale pid file would then look like a running server.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")
