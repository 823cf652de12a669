"""Fixtures shared by every test folder, and each test's tier marker taken from its folder."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.stacks import Stack


@pytest.fixture
def stack_home(tmp_path, monkeypatch):
    """A scratch .stack/ folder, and no MLFLOW_STACK_* variable of the caller's leaking in."""
    import os

    for var in list(os.environ):
        if var.startswith("MLFLOW_STACK_"):
            monkeypatch.delenv(var)
    home = tmp_path / "stack"
    monkeypatch.setenv("MLFLOW_STACK_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def integration_home():
    """A state folder per test module: stacks of the same profile in two modules (the sso
    integration and browser tests, say) share no data."""
    # Not under pytest's tmp_path: that is mode 0700 and the unprivileged PostgreSQL user
    # (when the tests run as root) must be able to reach its data directory.
    home = Path(tempfile.mkdtemp(prefix="mlflow-stack-it-"))
    home.chmod(0o755)
    stacks: list[Stack] = []
    yield home, stacks
    for stack in stacks:
        if stack.state_dir.exists():
            stack.invoke("down", check=False, timeout=120)
            stack.kill_everything()
    shutil.rmtree(home, ignore_errors=True)


TIERS = ("unit", "differential", "tools", "integration", "compose", "browser", "smoke")


def pytest_collection_modifyitems(items):
    """`-m integration` and friends select by folder: a test's tier is where it lives."""
    for item in items:
        parts = Path(str(item.path)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(tier)
                break
