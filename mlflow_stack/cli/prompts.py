"""What the tasks ask a person: a confirmation, a password, an access token.

Each reads stdin or prompts on the terminal (on stderr, so that `eval "$(invoke env)"` captures
only the exports), and refuses to guess without a terminal.
"""

from __future__ import annotations

import getpass
import secrets as random_source
import sys
from typing import IO

from mlflow_stack.errors import StackError
from mlflow_stack.secrets import check_password

GENERATED_PASSWORD_BYTES = 18  # 24 URL-safe characters


def _is_terminal(stdin: IO[str] | None, interactive: bool | None) -> bool:
    if interactive is not None:
        return interactive
    return (sys.stdin if stdin is None else stdin).isatty()


def confirm_deletion(question: str, yes: bool, interactive: bool | None = None) -> None:
    """Return when deleting was confirmed (--yes, or y on the terminal); raise otherwise."""
    if yes:
        return
    if not _is_terminal(None, interactive):
        raise StackError(
            "refusing to delete without confirmation and without a terminal: pass --yes"
        )
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise StackError("nothing deleted")


def password_of(username: str) -> str:
    """A user's current password, prompted without echo."""
    return getpass.getpass(f"password of {username}: ", stream=sys.stderr)


def read_new_password(
    password_stdin: bool,
    stdin: IO[str] | None = None,
    interactive: bool | None = None,
) -> tuple[str, bool]:
    """(password, generated): from stdin, prompted twice on a terminal, or generated."""
    stdin = sys.stdin if stdin is None else stdin
    if password_stdin:
        password = stdin.read()
        # One trailing newline is how `echo` and files end; a newline inside is refused below.
        password = password.removesuffix("\n").removesuffix("\r")
        if not password:
            raise StackError("--password-stdin: nothing on stdin")
        return check_password(password), False
    if _is_terminal(stdin, interactive):
        password = getpass.getpass("new password: ", stream=sys.stderr)
        check_password(password)
        if getpass.getpass("repeat it: ", stream=sys.stderr) != password:
            raise StackError("the passwords do not match; nothing changed")
        return password, False
    return random_source.token_urlsafe(GENERATED_PASSWORD_BYTES), True


def read_token(stdin: IO[str] | None = None, interactive: bool | None = None) -> str:
    """An access token for `invoke env --token`: from stdin, or prompted on a terminal."""
    from mlflow_stack.auth.token_format import TOKEN_PREFIX, looks_like_token

    stdin = sys.stdin if stdin is None else stdin
    if _is_terminal(stdin, interactive):
        token = getpass.getpass("access token: ", stream=sys.stderr).strip()
    else:
        token = stdin.read().strip()
    if not looks_like_token(token) or any(ch.isspace() for ch in token):
        raise StackError(
            f"no access token on stdin (tokens start with {TOKEN_PREFIX}): "
            "`invoke tokens.create --user U --json | jq -r .token | invoke env --token`"
        )
    return token
