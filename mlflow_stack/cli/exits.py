"""How a task ends: a StackError becomes one line and exit code 1, Ctrl-C exit code 130."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from invoke.exceptions import Exit

from mlflow_stack.errors import StackError


def user_errors(task_function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task body: a StackError becomes `error: <message>` and exit code 1, no traceback."""

    @functools.wraps(task_function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task_function(*args, **kwargs)
        except StackError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper
