"""Starting and stopping a dockerd by pid, on a second daemon beside the engine the tier uses.

The second daemon has its own socket, folders and bridge, so the tier's engine is untouched;
it shows that `stop_engine` leaves neither dockerd nor its containerd behind. Never start it
with --bridge=none: Engine 20.10 then deletes the host's docker0, the other daemon's bridge.
Runs only where the tier may start engines (CI=true or MLFLOW_STACK_START_ENGINE=1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from mlflow_stack import engine
from mlflow_stack.debian_root import mounts_under
from mlflow_stack.runtime.compose import engine_answers
from mlflow_stack.runtime.processes import process_alive

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not engine.may_start_engine()
    or shutil.which("dockerd") is None
    or shutil.which("ip") is None,
    reason="needs root, dockerd, ip and CI=true or MLFLOW_STACK_START_ENGINE=1",
)


@pytest.fixture
def own_bridge():
    name = f"msd{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "delete", name], check=False)


def test_a_started_dockerd_and_its_containerd_stop_by_pid(monkeypatch, own_bridge):
    # Short: a unix socket path under exec-root must stay below 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="msd-", dir="/tmp"))
    socket = f"unix://{folder}/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", socket)
    started = engine.start_dockerd(
        (
            *("--host", socket, "--pidfile", f"{folder}/docker.pid"),
            *("--data-root", f"{folder}/data", "--exec-root", f"{folder}/exec"),
            *("--bridge", own_bridge, "--iptables=false", "--ip-masq=false"),
        )
    )
    children: list[tuple[int, str]] = []
    try:
        assert engine_answers()
        children = engine.children_of(started.pid)
        names = [Path(f"/proc/{pid}/comm").read_text().strip() for pid, _ in children]
        assert "containerd" in names
    finally:
        engine.stop_engine(started)
        try:
            assert not process_alive(started.pid)
            assert not any(process_alive(pid) for pid, _ in children)
            assert not Path(f"/proc/{started.pid}").exists(), "dockerd was left a zombie"
            assert not engine_answers()
            assert started.log_path.exists()
        finally:
            # Only when nothing is mounted there any more, so rmtree stays inside the folder.
            if not mounts_under(folder):
                shutil.rmtree(folder)
            shutil.rmtree(started.log_path.parent)
    assert mounts_under(folder) == []
