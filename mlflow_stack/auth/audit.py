"""The audit log: one JSON line per state-changing request and per failed authentication.

Written by the project's app once a request has been answered, into one file that every worker
of the server (and the tasks that bypass the server, such as tokens.create) append to. A line is
one write(2) on an O_APPEND descriptor, so lines of several processes never interleave, and a
crash loses at most the line being written. The file is rotated by size under a lock file:
audit.jsonl -> audit.jsonl.1 -> … -> audit.jsonl.N; a process whose file was rotated under it
notices by the inode and reopens. MLFLOW_STACK_AUDIT_STDOUT=1 (compose) also prints each line
to the server's stdout, the container's log stream.

What a line holds is picked field by field: never a request body, header, password, token or
cookie; for a failed login, the username that was tried.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE_VARIABLE = "MLFLOW_STACK_AUDIT_FILE"
MAX_BYTES_VARIABLE = "MLFLOW_STACK_AUDIT_MAX_BYTES"
BACKUPS_VARIABLE = "MLFLOW_STACK_AUDIT_BACKUPS"
STDOUT_VARIABLE = "MLFLOW_STACK_AUDIT_STDOUT"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5

CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# MLflow reads through POST in places (searches, batch gets, GraphQL queries): not changes.
_READING_LAST_SEGMENTS = ("search", "get", "list", "query", "batch-get")
_READING_PATHS = frozenset({"/graphql", "/ajax-api/graphql"})
# The only request fields copied into a line: identifiers, never values or credentials.
RESOURCE_FIELDS = (
    "experiment_id",
    "experiment_ids",
    "run_id",
    "run_uuid",
    "name",
    "new_name",
    "version",
    "model_id",
    "trace_id",
    "username",
    "permission",
    "key",
    "prompt_name",
    "scorer_name",
)
_MAX_FIELD_CHARS = 256
# Who the hook authenticated a request as ({"user", "auth", "token_id"}): a holder that
# audit_native's middleware sets for each request, and the hook fills from whichever thread
# it runs in (a copied context still holds the same dict).
REQUEST_IDENTITY: ContextVar[dict[str, Any] | None] = ContextVar(
    "mlflow_stack_request_identity", default=None
)


def is_state_changing(method: str, path: str) -> bool:
    if method not in CHANGING_METHODS or path in _READING_PATHS:
        return False
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return not any(last == word or last.startswith(word + "-") for word in _READING_LAST_SEGMENTS)


def outcome_of(status: int) -> str:
    if status == 401:
        return "unauthenticated"
    if status == 403:
        return "denied"
    if status < 400:
        return "ok"
    return "failed" if status < 500 else "error"


def resource_ids(*sources: Any) -> dict[str, Any]:
    """The identifiers among a request's JSON body and query arguments (first source wins)."""
    found: dict[str, Any] = {}
    for source in sources:
        # Only the fields present: asking a Werkzeug MultiDict for a missing key costs an
        # exception each time.
        if not source or not hasattr(source, "keys"):
            continue
        present = set(source.keys())
        for field in RESOURCE_FIELDS:
            if field in found or field not in present:
                continue
            value = source.get(field)
            if isinstance(value, str | int) and not isinstance(value, bool):
                found[field] = str(value)[:_MAX_FIELD_CHARS]
            elif isinstance(value, list) and all(isinstance(v, str | int) for v in value):
                found[field] = [str(v)[:_MAX_FIELD_CHARS] for v in value[:20]]
    return found


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Settings:
    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS
    to_stdout: bool = False

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Settings | None:
        env = os.environ if environ is None else environ
        path = env.get(FILE_VARIABLE)
        if not path:
            return None
        return cls(
            Path(path),
            max_bytes=int(env.get(MAX_BYTES_VARIABLE) or DEFAULT_MAX_BYTES),
            backups=int(env.get(BACKUPS_VARIABLE) or DEFAULT_BACKUPS),
            to_stdout=env.get(STDOUT_VARIABLE, "") == "1",
        )


class AuditFile:
    """Appends lines to the audit file, rotating it by size; safe across processes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._inode: int | None = None

    def _open(self) -> int:
        self.settings.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fd, self._inode = fd, os.fstat(fd).st_ino
        return fd

    def _current(self) -> int:
        """Our descriptor, reopened when another process rotated the file under it."""
        if self._fd is None:
            return self._open()
        try:
            on_disk = os.stat(self.settings.path).st_ino
        except FileNotFoundError:
            on_disk = None
        if on_disk != self._inode:
            os.close(self._fd)
            return self._open()
        return self._fd

    def _rotate_if_full(self, fd: int) -> int:
        if os.fstat(fd).st_size < self.settings.max_bytes:
            return fd
        path = self.settings.path
        with open(f"{path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
                if current.st_ino == self._inode and current.st_size >= self.settings.max_bytes:
                    for number in range(self.settings.backups - 1, 0, -1):
                        older = Path(f"{path}.{number}")
                        if older.exists():
                            older.replace(f"{path}.{number + 1}")
                    if self.settings.backups > 0:
                        path.replace(f"{path}.1")
                    else:
                        path.unlink()
            except FileNotFoundError:
                pass
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(fd)
        return self._open()

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            fd = self._rotate_if_full(self._current())
            os.write(fd, line)
        if self.settings.to_stdout:
            sys.stdout.write("audit " + line.decode())
            sys.stdout.flush()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def files_oldest_first(path: Path, backups: int = 99) -> list[Path]:
    rotated = [Path(f"{path}.{n}") for n in range(backups, 0, -1)]
    return [p for p in [*rotated, path] if p.exists()]


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record, oldest first; a torn last line (a crash mid-write) is skipped."""
    for file in files_oldest_first(path):
        with file.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record


def follow_records(path: Path, poll_seconds: float = 0.5) -> Iterator[dict[str, Any]]:
    """New records as they are written, across rotations, until interrupted."""
    position, inode = 0, None
    try:
        stat = os.stat(path)
        position, inode = stat.st_size, stat.st_ino
    except FileNotFoundError:
        pass
    pending = b""
    while True:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            time.sleep(poll_seconds)
            continue
        if stat.st_ino != inode:
            position, inode, pending = 0, stat.st_ino, b""
        if stat.st_size > position:
            with path.open("rb") as source:
                source.seek(position)
                chunk = source.read()
            position += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record
        else:
            time.sleep(poll_seconds)
