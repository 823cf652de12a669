"""The escaping filters: the only place any rendered file escapes anything.

Each is a Jinja filter (`FILTERS`, by the name templates use) and a plain function, tested with
hostile values; a value one format cannot hold faithfully is a RenderError, never mangled.
"""

from __future__ import annotations

import json
import shlex
from urllib.parse import quote

from mlflow_stack.errors import StackError


class RenderError(StackError):
    """A value cannot be written faithfully into one of the rendered formats."""


def ini_value(value: object) -> str:
    """A value for MLflow's configparser: '%' doubled (interpolation); newlines cannot exist."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise RenderError("a value for auth_config.ini contains a newline")
    if text != text.strip():
        raise RenderError("a value for auth_config.ini starts or ends with white space")
    return text.replace("%", "%%")


def compose_value(value: object) -> str:
    """Compose interpolates '$'; '$$' is its literal dollar sign."""
    return str(value).replace("$", "$$")


def yaml_string(value: object) -> str:
    """A double-quoted YAML scalar: JSON's string syntax is a subset of YAML's."""
    return json.dumps(str(value), ensure_ascii=False)


def urlquote(value: object) -> str:
    """Percent-encode everything outside the unreserved set, for a URI's userinfo."""
    return quote(str(value), safe="")


def supervisor_arg(value: object) -> str:
    """One argument in supervisord's `command=`: shell-quoted, then '%' doubled (its expansion)."""
    return shlex.quote(str(value)).replace("%", "%%")


def shell_word(value: object) -> str:
    """One word for bash: single-quoted where it needs quoting."""
    return shlex.quote(str(value))


def postgres_conf_string(value: object) -> str:
    """A quoted postgresql.conf string value."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


FILTERS = {
    "ini": ini_value,
    "compose": compose_value,
    "yaml": yaml_string,
    "urlquote": urlquote,
    "supervisor_arg": supervisor_arg,
    "pgconf": postgres_conf_string,
    "shell": shell_word,
}
