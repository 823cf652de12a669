"""A wait that runs out is an error naming what to do, never a silent carry-on (in-process:
the processes and the clock are replaced)."""

from __future__ import annotations

import subprocess

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.runtime import local, postgres
from mlflow_stack.secrets import load_secrets


@pytest.fixture
def runtime(stack_home, monkeypatch) -> local.LocalRuntime:
    profile = load_profile("ci")
    render_profile(profile)
    monkeypatch.setattr(local.health, "wait_until", lambda *args, **kwargs: False)
    return local.LocalRuntime(profile, load_secrets(profile))


def test_supervisord_without_a_pid_file_is_an_error(runtime, monkeypatch):
    monkeypatch.setattr(
        local.programs, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", "")
    )
    with pytest.raises(StackError, match="supervisord started but wrote no pid file within 10 s"):
        runtime._start_supervisor()


def test_supervisord_that_does_not_stop_is_an_error(runtime, monkeypatch):
    killed = []
    monkeypatch.setattr(local.LocalRuntime, "supervisor_pid", lambda self: 4242)
    monkeypatch.setattr(local.LocalRuntime, "_supervisorctl", lambda self, *a, **k: None)
    monkeypatch.setattr(local.os, "kill", lambda pid, sig: killed.append(pid))
    with pytest.raises(StackError, match=r"supervisord \(pid 4242\) .* did not stop: stop it"):
        runtime._stop_supervisor()
    assert killed == [4242]


def test_a_postmaster_that_does_not_go_away_is_an_error(runtime, monkeypatch):
    cluster = runtime.postgres
    for name in ("_prepare_dirs", "check_version", "_install_settings"):
        monkeypatch.setattr(postgres.PostgresCluster, name, lambda self: None)
    monkeypatch.setattr(postgres.PostgresCluster, "is_running", lambda self: False)
    monkeypatch.setattr(postgres.PostgresCluster, "_pid_file_pid", lambda self: 31337)
    monkeypatch.setattr(postgres, "port_is_free", lambda host, port: True)
    monkeypatch.setattr(postgres, "wait_until", lambda *args, **kwargs: False)
    started = []
    monkeypatch.setattr(postgres.PostgresCluster, "run", lambda self, *a, **k: started.append(a))
    with pytest.raises(StackError, match=r"PostgreSQL server \(pid 31337\) .* still exiting"):
        cluster.start()
    assert started == []


def test_the_process_tree_helper_finds_children_and_groups_of_this_process():
    import os

    from mlflow_stack.runtime import processes

    me = os.getpid()
    parent = os.getppid()
    assert me in [pid for pid, _ in processes.children_of(parent)]
    assert me in processes.descendants([parent])
    assert me not in processes.group_members(os.getpgid(me))  # itself left out
    assert processes.start_time(me) == processes.stat_fields(me)[19]
