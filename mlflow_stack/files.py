"""Atomic file writes and the quoted KEY="value" files that hold secrets and environments."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mlflow_stack.errors import StackError

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: Path, content: str, mode: int = PUBLIC_MODE) -> None:
    """Replace `path` in one step: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600, so a secret is never readable by others, even briefly.
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def format_env_file(values: Mapping[str, str], header: str) -> str:
    """KEY="value" lines with JSON string quoting, so any value round-trips (not a shell file)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        try:
            value = json.loads(raw) if sep else None
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, str) or not key.strip():
            raise StackError(f'{path}: line {number} is not KEY="value"')
        values[key.strip()] = value
    return values
