"""Flag values turned into checked values, before anything is contacted (no network, no files)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from mlflow_stack.errors import StackError
from mlflow_stack.profile import USERNAME

# What --level accepts, and what MLflow stores for it. MLflow 3.17 no longer grants
# NO_PERMISSIONS on a resource; its explicit "no access, whatever default_permission says"
# is DENY.
LEVELS = {
    "READ": "READ",
    "USE": "USE",
    "EDIT": "EDIT",
    "MANAGE": "MANAGE",
    "NO_PERMISSIONS": "DENY",
    "DENY": "DENY",
}
EXPIRES = re.compile(r"([1-9][0-9]{0,5})([dhm])")
EXPIRES_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
MAX_EXPIRY = timedelta(days=3650)

Number = TypeVar("Number", int, float)


def _number(flag: str, text: object, convert: Callable[[str], Number], kind: str) -> Number:
    try:
        return convert(str(text).strip())
    except ValueError:
        raise StackError(f"{flag} takes {kind}, got {text!r}") from None


def whole_number(flag: str, text: object) -> int:
    """A flag's value as a whole number of 0 or more; a one-line error otherwise."""
    value = _number(flag, text, int, "a whole number")
    if value < 0:
        raise StackError(f"{flag} must be 0 or more, got {value}")
    return value


def seconds(flag: str, text: object) -> float:
    """A flag's value as a positive number of seconds (2.5 is fine); a one-line error otherwise."""
    value = _number(flag, text, float, "a number of seconds")
    if not 0 < value < float("inf"):
        raise StackError(f"{flag} must be more than 0 seconds, got {text!r}")
    return value


def check_username(username: str | None) -> str:
    if not username:
        raise StackError("a username is required (--user)")
    if not USERNAME.fullmatch(username):
        raise StackError(
            f"invalid username {username!r}: up to 64 letters, digits, '_', '.', '@' and '-', "
            "starting with a letter or digit"
        )
    return username


def parse_expires(text: str | None) -> timedelta | None:
    """`30d`, `12h`, `45m` -> a lifetime; None or empty -> the token does not expire."""
    if text is None or str(text).strip() == "":
        return None
    match = EXPIRES.fullmatch(str(text).strip())
    if not match:
        raise StackError(
            f"invalid --expires {text!r}: a whole number of days, hours or minutes, "
            "e.g. 30d, 12h or 45m"
        )
    lifetime = timedelta(**{EXPIRES_UNITS[match[2]]: int(match[1])})
    if lifetime > MAX_EXPIRY:
        raise StackError(f"--expires {text} is too long (at most {MAX_EXPIRY.days}d)")
    return lifetime


def parse_level(level: str | None) -> str:
    """The permission MLflow stores for a --level (NO_PERMISSIONS is DENY in MLflow 3.17)."""
    key = (level or "").strip().upper()
    if key not in LEVELS:
        raise StackError(
            f"invalid --level {level!r}: choose READ, EDIT, MANAGE or NO_PERMISSIONS "
            "(also DENY, which is what NO_PERMISSIONS is stored as, and USE on the gateway's "
            "secrets, model definitions and endpoints)"
        )
    return LEVELS[key]


def parse_token_id(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise StackError(
            f"a token id is a number (see `invoke tokens.list`), got {text!r}"
        ) from None
