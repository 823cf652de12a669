"""When the engine helper may start a daemon, and what it says when it may not."""

from __future__ import annotations

import os

import pytest

from mlflow_stack import engine
from mlflow_stack.errors import StackError


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "TRUE"}, True),
        ({"CI": "1"}, False),
        ({"MLFLOW_STACK_START_ENGINE": "1"}, True),
        ({"MLFLOW_STACK_START_ENGINE": "yes"}, False),
    ],
)
def test_may_start_engine(monkeypatch, environment, expected):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MLFLOW_STACK_START_ENGINE", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert engine.may_start_engine() is expected


def test_an_answering_engine_is_used_as_is(monkeypatch):
    monkeypatch.setattr(engine, "engine_answers", lambda: True)
    monkeypatch.setattr(engine, "install_packages", lambda: pytest.fail("must not install"))
    assert engine.ensure_engine(allow_install=True) is None


def test_no_engine_and_not_allowed_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(engine, "engine_answers", lambda: False)
    with pytest.raises(StackError, match="MLFLOW_STACK_START_ENGINE=1") as raised:
        engine.ensure_engine(allow_install=False)
    assert "\n" not in str(raised.value)


def test_no_engine_off_debian_or_as_a_user(monkeypatch):
    monkeypatch.setattr(engine, "engine_answers", lambda: False)
    monkeypatch.setattr(engine, "can_install", lambda: False)
    with pytest.raises(StackError, match="not root on Debian"):
        engine.ensure_engine(allow_install=True)


def test_allowed_installs_then_starts(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(engine, "engine_answers", lambda: False)
    monkeypatch.setattr(engine, "can_install", lambda: True)
    monkeypatch.setattr(engine, "install_packages", lambda: calls.append("install"))
    started = engine.StartedEngine(12345, tmp_path / "dockerd.log")
    monkeypatch.setattr(engine, "start_dockerd", lambda: calls.append("start") or started)
    assert engine.ensure_engine(allow_install=True) is started
    assert calls == ["install", "start"]


def test_children_and_start_time_come_from_proc():
    parent = os.getppid()
    assert os.getpid() in [pid for pid, _ in engine.children_of(parent)]
    assert engine.start_time(os.getpid()) is not None
    assert engine.start_time(2**22 + 1) is None


def test_apt_get_runs_noninteractive_and_fails_in_one_line(monkeypatch):
    from tests.unit.test_programs import FakeRun

    fake = FakeRun()
    monkeypatch.setattr(engine.programs.subprocess, "run", fake)
    engine.apt_get("update")
    call = fake.last
    assert call["argv"] == ["apt-get", "update"]
    assert call["env"]["DEBIAN_FRONTEND"] == "noninteractive"
    assert call["stdin"] is engine.programs.subprocess.DEVNULL
    assert call["timeout"] == engine.APT_TIMEOUT_SECONDS
    fake.code, fake.stderr = 100, "Reading package lists...\nE: Unable to locate package nope\n"
    with pytest.raises(StackError) as error:
        engine.apt_get("install", "-y", "nope")
    assert str(error.value) == "apt-get install failed (exit 100): E: Unable to locate package nope"
    fake.times_out = True
    with pytest.raises(StackError, match=r"^apt-get update did not finish within 900 s$"):
        engine.apt_get("update")
