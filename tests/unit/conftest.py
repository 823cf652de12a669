"""The unit tier runs in-process: any attempt to start a program fails the test that made it."""

from __future__ import annotations

import gc
import subprocess

import jinja2
import jinja2.bccache
import pytest

# The tier holds MLflow, SQLAlchemy and pandas in memory, hundreds of thousands of objects that
# live to the end: at the default thresholds the cyclic collector walks them some two thousand
# times a run (about 4 s). Fewer young collections, and what is loaded by then frozen out of
# the old ones (here and once collected), leave it under a second; garbage is still collected.
gc.set_threshold(50_000, 20, 100)

# Two imports start a program, once: MLflow's asks `uname -p` (platform.platform, for its
# telemetry), and matplotlib's (the bench's chart) runs `fc-list` to build its font cache where
# fontconfig is installed and no cache exists yet. Let them, here, before the guard below.
import matplotlib.font_manager  # noqa: E402, F401
import mlflow.exceptions  # noqa: E402, F401

gc.freeze()


def pytest_collection_finish(session):
    gc.freeze()


class ProgramStarted(AssertionError):
    """A unit test started a program: it belongs in the tools, integration or compose tier."""


@pytest.fixture(autouse=True)
def no_programs(monkeypatch):
    def refuse(*args, **kwargs):
        raise ProgramStarted(f"unit tests start no program: {args[:1]}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


class CompiledTemplates(jinja2.BytecodeCache):
    """Each template compiled once per session instead of once per render (most of a render's
    time). A bucket is keyed by the template's name and checked against its source's checksum,
    so an edited template is compiled again; what a render produces is unchanged."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self.code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


@pytest.fixture(scope="session", autouse=True)
def templates_compiled_once():
    from mlflow_stack import k8s, render

    cache = CompiledTemplates()
    make = render.template_environment

    def template_environment() -> jinja2.Environment:
        env = make()
        env.bytecode_cache = cache
        return env

    with pytest.MonkeyPatch.context() as patch:
        # k8s imported the function by name: both references get the cached one.
        patch.setattr(render, "template_environment", template_environment)
        patch.setattr(k8s, "template_environment", template_environment)
        yield cache


@pytest.fixture(scope="session", autouse=True)
def no_fsync():
    """Rendering writes over a thousand files here, each flushed to disk by write_atomic: a
    unit test cannot observe durability, and on a slow disk the flushes alone take seconds.
    The write is still to a temporary file, then one rename."""
    import os

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        yield
