"""How the tasks show things: aligned tables, and paths relative to the project."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mlflow_stack import paths


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def shown(path: Path) -> str:
    """A path as a user of the project reads it: relative to the project where it is inside."""
    try:
        return str(path.relative_to(paths.PROJECT_ROOT))
    except ValueError:
        return str(path)
