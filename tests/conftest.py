"""Fixtures shared by every test folder."""

import pytest


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
