"""How tasks.py registers a task: one decorator, the same flags and short flags everywhere.

Every argument is a flag with a default. Invoke's positional arguments swallow the token after the
task's name, so `invoke users.add --help` used to add a user called `--help`; required flags are
checked here instead, with a one-line error. Invoke would also derive short flags from first
letters, which made `-t` mean --token, --tail, --timeout or --token-id depending on the task: the
only short flags are the ones below, each meaning one thing in every task.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from invoke.tasks import Task

from mlflow_stack.cli.exits import user_errors
from mlflow_stack.errors import StackError

SHORT_FLAGS = {"profile": "p", "runtime": "r", "user": "u", "yes": "y", "follow": "f"}


class StackTask(Task[Callable[..., Any]]):
    """An invoke Task whose short flags come from SHORT_FLAGS alone."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short is not None and short not in taken_names:
            opts["names"].append(short)
        return opts


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def missing_flags(
    body: Callable[..., Any], required: Iterable[str], given: dict[str, Any]
) -> list[str]:
    """The required flags a call left at their default of None."""
    parameters = inspect.signature(body).parameters
    return [flag(name) for name in required if given.get(name, parameters[name].default) is None]


def stack_task(
    *,
    name: str | None = None,
    required: tuple[str, ...] = (),
    help: dict[str, str] | None = None,
    iterable: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], StackTask]:
    """Register a task body: every flag documented, `required` checked, errors as one line."""

    def register(body: Callable[..., Any]) -> StackTask:
        parameters = inspect.signature(body).parameters
        for argument in list(parameters)[1:]:
            if parameters[argument].default is inspect.Parameter.empty:
                raise TypeError(f"{body.__name__}: {argument} needs a default (flags only)")
        undocumented = set(list(parameters)[1:]) - set(help or {})
        if undocumented:
            raise TypeError(f"{body.__name__}: no help text for {sorted(undocumented)}")

        @functools.wraps(body)
        def checked(context: Any, **given: Any) -> Any:
            missing = missing_flags(body, required, given)
            if missing:
                raise StackError(
                    f"missing {' and '.join(missing)} (this task's --help lists its flags)"
                )
            return body(context, **given)

        required_help = {
            key: f"(required) {text}" if key in required else text
            for key, text in (help or {}).items()
        }
        return StackTask(
            user_errors(checked),
            name=name,
            help=required_help,
            auto_shortflags=False,
            iterable=list(iterable),  # flags given once per value: --experiment a --experiment b
        )

    return register
