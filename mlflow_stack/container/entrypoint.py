"""The MLflow container's entry point: write auth_config.ini where only the server can read it.

usage: python -m mlflow_stack.container.entrypoint mlflow server OPTIONS...

The compose file hands MLflow's basic-auth configuration (it holds the admin and database
passwords) over in the variable AUTH_CONFIG_VARIABLE. Compose `configs:` with inline content
cannot be used with a read-only root filesystem, and a bind mount would keep the host file's
0600 root owner, unreadable to the server's user. So this process, already running as that user,
writes it to a private tmpfs (mode 0400 in a 0700 folder), drops the variable from its
environment and execs the server, which keeps the container's pid 1 and its signals.
"""

from __future__ import annotations

import os
import sys

AUTH_CONFIG_VARIABLE = "MLFLOW_STACK_AUTH_CONFIG_INI"
PATH_VARIABLE = "MLFLOW_AUTH_CONFIG_PATH"
# With TLS, the server's certificate chain and key, written beside auth_config.ini
# (mlflow_stack/render.py names the same files in uvicorn's --ssl-certfile/--ssl-keyfile).
TLS_FILES = {"MLFLOW_STACK_TLS_CERT_PEM": "tls.crt", "MLFLOW_STACK_TLS_KEY_PEM": "tls.key"}


def write_private(path: str, content: str) -> None:
    """Replace `path` with `content`, readable by this user alone, in one step."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    partial = f"{path}.{os.getpid()}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.replace(partial, path)


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m mlflow_stack.container.entrypoint PROGRAM ARGS...")
    content = os.environ.pop(AUTH_CONFIG_VARIABLE, None)
    path = os.environ.get(PATH_VARIABLE)
    if content is not None:
        if not path:
            sys.exit(f"error: {AUTH_CONFIG_VARIABLE} is set but {PATH_VARIABLE} is not")
        write_private(path, content)
    for variable, name in TLS_FILES.items():
        pem = os.environ.pop(variable, None)
        if pem is not None:
            if not path:
                sys.exit(f"error: {variable} is set but {PATH_VARIABLE} is not")
            write_private(os.path.join(os.path.dirname(path), name), pem)
    from mlflow_stack.container.migrate import migrate_on_start

    migrate_on_start()
    os.execvp(argv[0], argv)  # noqa: S606 - the server becomes pid 1 and gets its signals


if __name__ == "__main__":
    main(sys.argv[1:])
