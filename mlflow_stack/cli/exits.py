"""How a task ends: a StackError becomes one line and exit code 1, Ctrl-C exit code 130.

MLFLOW_STACK_DEBUG=1 shows what the one line hides: every external command as it starts (its
argument list; secrets never travel there) and the traceback of an error.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from invoke.exceptions import Exit

from mlflow_stack.errors import StackError

DEBUG_VARIABLE = "MLFLOW_STACK_DEBUG"
_tracing: list[bool] = []


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").lower() in ("1", "true", "yes")


def _print_commands(event: str, args: tuple[Any, ...]) -> None:
    # The audit event every subprocess raises: (executable, args, cwd, env).
    if event == "subprocess.Popen":
        argv = args[1] if isinstance(args[1], list | tuple) else [args[1]]
        print(f"+ {shlex.join(str(a) for a in argv)}", file=sys.stderr, flush=True)


def trace_commands() -> None:
    """Print each external command on stderr (once per process: audit hooks stay)."""
    if not _tracing:
        sys.addaudithook(_print_commands)
        _tracing.append(True)


def user_errors(task_function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task body: a StackError becomes `error: <message>` and exit code 1, no traceback."""

    @functools.wraps(task_function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = debugging()
        if debug:
            trace_commands()
        try:
            return task_function(*args, **kwargs)
        except StackError as exc:
            if debug:
                raise
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper
