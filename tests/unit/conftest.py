"""The unit tier runs in-process: any attempt to start a program fails the test that made it."""

from __future__ import annotations

import subprocess

# MLflow's import asks `uname -p` (platform.platform, for its telemetry): let it, once, here,
# before the guard below is in place.
import mlflow.exceptions  # noqa: F401
import pytest


class ProgramStarted(AssertionError):
    """A unit test started a program: it belongs in the tools, integration or compose tier."""


@pytest.fixture(autouse=True)
def no_programs(monkeypatch):
    def refuse(*args, **kwargs):
        raise ProgramStarted(f"unit tests start no program: {args[:1]}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
