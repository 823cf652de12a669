"""Fault injection on the local runtime (`nox -s faults`): kill -9 under load, concurrent
writers, a full artifact disk. The invariant everywhere: what the server acknowledged with
HTTP 200 is stored afterwards, exactly once, and the stack comes back by itself or with
`invoke up`.

Every fault is bounded: load runs until the test stops it or a deadline, each request has a
timeout and each wait a cap. All traffic goes to the stack's own port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from mlflow_stack.runtime.processes import descendants
from tests.integration.load_client import MetricLoad, check_nothing_acknowledged_was_lost
from tests.stacks import Stack, make_stack

RECOVERY_TIMEOUT = 120.0
TMPFS_SIZE = "2m"


# --- fixtures --------------------------------------------------------------------------------


def private_home(prefix: str):
    """Like the session's integration_home, but this module's own: no other module's data
    (or damage, e.g. a rewritten PG_VERSION) in our stacks."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)  # the unprivileged PostgreSQL user must reach pgdata
    stacks: list[Stack] = []
    return home, stacks


def dispose(home: Path, stacks: list[Stack]) -> None:
    for stack in stacks:
        if stack.state_dir.exists():
            stack.invoke("down", check=False, timeout=120)
            stack.kill_everything()
    shutil.rmtree(home, ignore_errors=True)


@dataclass
class Running:
    stack: Stack
    url: str
    admin: tuple[str, str]
    verify: str | bool


def started(stack: Stack) -> Running:
    stack.invoke("up")
    env = stack.client_env()
    return Running(
        stack,
        env["MLFLOW_TRACKING_URI"],
        (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]),
        stack.verify,
    )


@pytest.fixture(scope="module")
def faults_home():
    home, stacks = private_home("mlflow-stack-faults-")
    yield home, stacks
    dispose(home, stacks)


@pytest.fixture(scope="module")
def running_two_workers(faults_home):
    stack = make_stack(faults_home, "demo")
    stack.env["MLFLOW_STACK_WORKERS"] = "2"
    yield started(stack)
    stack.invoke("down", check=False)


@pytest.fixture(scope="module")
def running(faults_home):
    stack = make_stack(faults_home, "ci")
    yield started(stack)
    stack.invoke("down", check=False)


# --- helpers ---------------------------------------------------------------------------------


def status_rows(stack: Stack) -> tuple[int, dict[str, list[str]]]:
    """`invoke status` as {service: [state, pid, port, health]} and its exit code."""
    result = stack.invoke("status", check=False, timeout=60)
    rows = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0] in ("postgres", "mlflow"):
            rows[fields[0]] = fields[1:]
    return result.returncode, rows


def mlflow_pid(stack: Stack) -> int:
    code, rows = status_rows(stack)
    assert code == 0 and rows["mlflow"][3] == "healthy", rows
    return int(rows["mlflow"][1])


def worker_pids(server_pid: int) -> list[int]:
    """The server's worker processes (uvicorn with --workers > 1 spawns them as children)."""
    return [pid for pid in descendants([server_pid]) if alive(pid)]


def is_uvicorn(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_new_healthy_mlflow(stack: Stack, old_pid: int) -> int:
    """Poll `invoke status` until MLflow is healthy under a pid other than old_pid."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    rows: dict = {}
    while time.monotonic() < deadline:
        code, rows = status_rows(stack)
        row = rows.get("mlflow")
        if code == 0 and row and row[3] == "healthy" and row[1] != str(old_pid):
            return int(row[1])
        time.sleep(1)
    raise AssertionError(f"MLflow not healthy with a new pid within {RECOVERY_TIMEOUT} s: {rows}")


def new_run(running: Running, label: str) -> tuple[str, str]:
    name = f"faults-{label}-{uuid.uuid4().hex[:8]}"
    created = requests.post(
        f"{running.url}/api/2.0/mlflow/experiments/create",
        json={"name": name},
        auth=running.admin,
        verify=running.verify,
        timeout=30,
    )
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    run = requests.post(
        f"{running.url}/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment_id, "run_name": name},
        auth=running.admin,
        verify=running.verify,
        timeout=30,
    )
    assert run.status_code == 200, run.text
    return experiment_id, run.json()["run"]["info"]["run_id"]


def log_one_metric(running: Running, run_id: str, key: str) -> requests.Response:
    return requests.post(
        f"{running.url}/api/2.0/mlflow/runs/log-metric",
        json={"run_id": run_id, "key": key, "value": 1.0, "timestamp": 0, "step": 0},
        auth=running.admin,
        verify=running.verify,
        timeout=30,
    )


def wait_for_new_workers(stack: Stack, server_pid: int, old_workers: list[int]) -> list[int]:
    """Poll until the same server answers healthy again with workers other than old_workers."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    workers: list[int] = []
    while time.monotonic() < deadline:
        workers = worker_pids(server_pid)
        fresh = [pid for pid in workers if pid not in old_workers]
        if fresh and status_rows(stack)[1].get("mlflow", [None, None])[1] == str(server_pid):
            with contextlib.suppress(requests.RequestException):
                if (
                    requests.get(
                        f"{stack_url(stack)}/health", verify=stack.verify, timeout=5
                    ).status_code
                    == 200
                ):
                    return workers
        time.sleep(0.5)
    raise AssertionError(f"no new healthy workers within {RECOVERY_TIMEOUT} s: {workers}")


def stack_url(stack: Stack) -> str:
    return stack.client_env()["MLFLOW_TRACKING_URI"]


def kill_mlflow_under_load(running: Running, label: str, kill_server: bool) -> dict:
    """Load, kill -9 the supervised server or its workers, wait for recovery, check."""
    _, run_id = new_run(running, label)
    old_pid = mlflow_pid(running.stack)
    # The launcher makes the supervised process the uvicorn server itself.
    assert is_uvicorn(old_pid), f"the supervised MLflow process {old_pid} is not uvicorn"
    old_workers = worker_pids(old_pid)
    if not kill_server:
        assert old_workers, f"no worker processes under the MLflow server {old_pid}"
    load = MetricLoad(
        running.url, running.admin, run_id, label, writers=3, verify=running.verify
    ).start()
    try:
        assert load.wait_for_acks(30, timeout=20), load.summary()
        acked_before_kill = load.acked_count()
        for pid in [old_pid] if kill_server else old_workers:
            os.kill(pid, signal.SIGKILL)
        if kill_server:
            # supervisord starts a new server (the launcher ends the old one's workers).
            new_pid = wait_for_new_healthy_mlflow(running.stack, old_pid)
        else:
            # uvicorn's own supervisor replaces its workers; the server keeps its pid.
            new_pid = old_pid
            wait_for_new_workers(running.stack, old_pid, old_workers)
        recovered_at = time.monotonic()
        # The writers, which never stopped, get through to the recovered server.
        assert load.wait_for_acks(20, timeout=30, after=recovered_at), load.summary()
    finally:
        load.stop()
    assert acked_before_kill > 0
    # Nothing killed is left over (an orphan would keep answering on the port).
    gone = [old_pid, *old_workers] if kill_server else old_workers
    assert not [pid for pid in gone if alive(pid)]
    assert is_uvicorn(new_pid)
    assert (
        requests.get(f"{running.url}/health", verify=running.verify, timeout=5).status_code == 200
    )
    return check_nothing_acknowledged_was_lost(load)


# --- kill -9 ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_of_the_mlflow_server_under_load_loses_no_acknowledged_write(running):
    kill_mlflow_under_load(running, "kill-server", kill_server=True)


@pytest.mark.slow
def test_kill_9_of_the_workers_under_load_loses_no_acknowledged_write(running_two_workers):
    kill_mlflow_under_load(running_two_workers, "kill-workers", kill_server=False)


@pytest.mark.slow
def test_kill_9_of_a_multi_worker_server_ends_its_workers_too(running_two_workers):
    kill_mlflow_under_load(running_two_workers, "kill-server-2w", kill_server=True)


@pytest.mark.slow
def test_kill_9_of_the_postmaster_is_probed_recovered_and_loses_nothing(running):
    stack = running.stack
    _, run_id = new_run(running, "kill-postgres")
    pid_file = stack.state_dir / "pgdata" / "postmaster.pid"
    postmaster = int(pid_file.read_text().splitlines()[0])
    assert alive(postmaster)
    load = MetricLoad(
        running.url, running.admin, run_id, "kill-postgres", writers=3, verify=running.verify
    ).start()
    try:
        assert load.wait_for_acks(30, timeout=20), load.summary()
        acked_before_kill = load.acked_count()
        os.kill(postmaster, signal.SIGKILL)
        killed_at = time.monotonic()
        # Keep writing into the outage for a moment: errors, not hangs, and no false 200.
        time.sleep(3)
    finally:
        load.stop()
    assert acked_before_kill > 0
    assert load.acks_after(killed_at + 1) == 0, load.summary()

    probe = stack.invoke("db.probe", check=False)
    assert probe.returncode == 1, probe.stdout + probe.stderr
    assert "db.probe failed: reachable" in probe.stderr, probe.stderr
    assert "Traceback" not in probe.stderr
    code, rows = status_rows(stack)
    assert code == 1 and rows["postgres"][3] != "healthy", rows

    stack.invoke("up")
    code, rows = status_rows(stack)
    assert code == 0, rows
    assert int(pid_file.read_text().splitlines()[0]) != postmaster
    # The first write after `up` works: no stale pooled connection answers for the new cluster.
    first = log_one_metric(running, run_id, "after-recovery")
    assert first.status_code == 200, first.text
    assert stack.invoke("db.probe").returncode == 0
    check_nothing_acknowledged_was_lost(load)


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_writers_store_exactly_what_was_acknowledged(running):
    _, run_id = new_run(running, "concurrent")
    load = MetricLoad(
        running.url,
        running.admin,
        run_id,
        "concurrent",
        writers=2,
        batch_writers=2,
        verify=running.verify,
    ).start()
    try:
        time.sleep(10)
    finally:
        load.stop()
    summary = load.summary()
    for key, numbers in summary.items():
        assert numbers["acked"] > 0, (key, summary)
        # No fault was injected: every request must have been answered with 200.
        assert numbers["acked"] == numbers["attempted"], (key, summary)
    report = check_nothing_acknowledged_was_lost(load, exact=True)
    assert sum(r["stored"] for r in report.values()) == load.acked_count()


# --- full disk -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_disk_stack(faults_home):
    home, _ = faults_home
    mount_point = home / "artifacts-tmpfs"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("cannot mount a tmpfs for the artifact store: no `mount` command")
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs for the artifact store (`mount -t tmpfs` exited "
            f"{mounted.returncode}: {(mounted.stderr or mounted.stdout).strip()})"
        )
    stack = make_stack(faults_home, "dev")
    stack.env["MLFLOW_STACK_ARTIFACTS_DESTINATION"] = str(mount_point)
    try:
        yield started(stack), mount_point
    finally:
        stack.invoke("down", check=False)
        unmounted = subprocess.run(
            ["umount", str(mount_point)], capture_output=True, check=False, timeout=30
        )
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=30)


def artifact_url(running: Running, experiment_id: str, run_id: str, path: str) -> str:
    return (
        f"{running.url}/api/2.0/mlflow-artifacts/artifacts/"
        f"{experiment_id}/{run_id}/artifacts/{path}"
    )


@pytest.mark.slow
def test_a_full_artifact_disk_is_a_clear_error_and_the_server_keeps_serving(full_disk_stack):
    running, mount_point = full_disk_stack
    # The stack's artifacts really live on the small file system.
    assert os.stat(mount_point).st_dev != os.stat(mount_point.parent).st_dev
    capacity = shutil.disk_usage(mount_point).total
    experiment_id, run_id = new_run(running, "full-disk")
    # Control: an upload that fits works, so a failure below is about space, not size limits.
    fits = os.urandom(capacity // 4)
    put = requests.put(
        artifact_url(running, experiment_id, run_id, "fits.bin"),
        data=fits,
        auth=running.admin,
        verify=running.verify,
        timeout=30,
    )
    assert put.status_code == 200, put.text[:300]
    used_before = shutil.disk_usage(mount_point).used

    too_big = os.urandom(2 * capacity + 1024 * 1024)
    started_at = time.monotonic()
    try:
        response = requests.put(
            artifact_url(running, experiment_id, run_id, "big.bin"),
            data=too_big,
            auth=running.admin,
            verify=running.verify,
            timeout=60,
        )
    except requests.ConnectionError as exc:  # an answer was owed, not a dropped connection
        pytest.fail(f"the upload got no HTTP answer: {exc}")
    elapsed = time.monotonic() - started_at
    assert elapsed < 60
    assert 400 <= response.status_code < 600, (response.status_code, response.text[:300])
    assert response.status_code != 200
    # The failed upload left no partial file behind to keep the disk full.
    assert shutil.disk_usage(mount_point).used <= used_before + 64 * 1024, os.listdir(mount_point)

    assert (
        requests.get(f"{running.url}/health", verify=running.verify, timeout=5).status_code == 200
    )
    small = b"still serving\n"
    put = requests.put(
        artifact_url(running, experiment_id, run_id, "small.txt"),
        data=small,
        auth=running.admin,
        verify=running.verify,
        timeout=30,
    )
    assert put.status_code == 200, (put.status_code, put.text[:300], os.listdir(mount_point))
    got = requests.get(
        artifact_url(running, experiment_id, run_id, "small.txt"),
        auth=running.admin,
        verify=running.verify,
        timeout=30,
    )
    assert got.status_code == 200 and got.content == small
    logged = log_one_metric(running, run_id, "after-full-disk")
    assert logged.status_code == 200, logged.text
    # The operator can tell why: the server's log names the cause (it arrives a little after
    # the response, through supervisord).
    log = running.stack.state_dir / "logs" / "mlflow.log"
    deadline = time.monotonic() + 15
    while b"No space left on device" not in log.read_bytes():
        assert time.monotonic() < deadline, "logs/mlflow.log does not say the disk was full"
        time.sleep(0.5)
