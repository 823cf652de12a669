"""The stack's lifecycle on the local runtime: real PostgreSQL, real MLflow, real supervisord."""

from __future__ import annotations

import json
import secrets as secrets_module
import subprocess
import sys
import time
from pathlib import Path

import requests

from mlflow_stack.files import parse_env_file


def assert_run_intact(stack, run_id: str) -> None:
    run = stack.sdk("get", run_id)
    assert run["params"] == {"alpha": "0.5"}
    assert run["metrics"]["loss"] == 0.2
    assert run["loss_steps"] == 5
    assert run["status"] == "FINISHED"


def test_up_is_healthy_and_a_second_up_changes_nothing(ci_stack):
    status = ci_stack.invoke("status")
    assert status.stdout.count("healthy") == 2, status.stdout
    pids_before = ci_stack.processes()
    again = ci_stack.invoke("up")
    assert "already running" in again.stdout
    assert ci_stack.processes() == pids_before


def test_env_makes_the_mlflow_cli_work(ci_stack):
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "experiments", "search"],
        env=ci_stack.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Default" in result.stdout


def test_access_lines_reach_the_log_in_batches_within_a_second(ci_stack):
    # Batched by the server (mlflow_stack/auth/access_log.py), so they are not in the log the
    # moment the answers are, but within the flush interval.
    marker = secrets_module.token_hex(8)
    log = ci_stack.state_dir / "logs" / "mlflow.log"
    with requests.Session() as session:
        for number in range(20):
            answer = session.get(
                f"{ci_stack.url}/health?probe={marker}-{number}",
                timeout=30,
                verify=ci_stack.verify,
            )
            assert answer.status_code == 200
    deadline = time.monotonic() + 5
    while log.read_text(errors="replace").count(marker) < 20:
        assert time.monotonic() < deadline, "the access lines never reached logs/mlflow.log"
        time.sleep(0.1)


def test_secrets_are_not_in_any_command_line(ci_stack):
    secrets = parse_env_file(ci_stack.state_dir / "secrets.env").values()
    for pid in ci_stack.processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert not any(secret in cmdline for secret in secrets), pid


def test_a_run_survives_down_and_up(ci_stack):
    run_id = ci_stack.sdk("log", "down-up")["run_id"]
    ci_stack.invoke("down")
    assert ci_stack.processes() == []
    status = ci_stack.invoke("status", check=False)
    assert status.returncode == 1 and "stopped" in status.stdout
    ci_stack.invoke("up")
    assert_run_intact(ci_stack, run_id)


def test_a_warm_start_execs_the_remembered_server_with_the_same_protections(ci_stack):
    ci_stack.invoke("down")
    ci_stack.invoke("up")  # warm: the launch remembered at the first start is reused
    launch = json.loads((ci_stack.state_dir / "run" / "mlflow-launch.json").read_text())
    assert launch["command"][1:3] == ["-m", "uvicorn"]
    stored = json.dumps(launch)
    assert not any(
        secret in stored for secret in parse_env_file(ci_stack.state_dir / "secrets.env").values()
    )
    # One server process, supervised directly: no `mlflow server` parent left resident.
    status = ci_stack.invoke("status").stdout
    pid = next(line.split()[2] for line in status.splitlines() if line.startswith("mlflow"))
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:3] == [b"-m", b"uvicorn"]
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert b"supervisord" in Path(f"/proc/{ppid}/cmdline").read_bytes()
    # Allowed hosts, the proxied artifact store and the admin still work as configured.
    env = ci_stack.client_env()
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    search = f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search"
    foreign = requests.post(
        search,
        auth=admin,
        json={"max_results": 1},
        timeout=30,
        headers={"Host": "evil.example.com"},
    )
    assert foreign.status_code == 403
    logged = ci_stack.sdk("log", "warm-start")
    assert_run_intact(ci_stack, logged["run_id"])
    assert ci_stack.sdk("artifact", logged["run_id"], "notes/readme.txt")["text"] == (
        "artifact of warm-start"
    )


def test_a_run_survives_restart(ci_stack):
    run_id = ci_stack.sdk("log", "restart")["run_id"]
    ci_stack.invoke("restart")
    assert_run_intact(ci_stack, run_id)
    ci_stack.invoke("restart", "--service", "mlflow")
    assert_run_intact(ci_stack, run_id)


def test_render_and_restart_apply_a_rotated_secret_key(ci_stack):
    new_key = f"rotated-{secrets_module.token_hex(16)}"
    ci_stack.env["MLFLOW_STACK_SECRET_KEY"] = new_key
    try:
        ci_stack.invoke("render")
        ci_stack.invoke("restart", "--service", "mlflow")
    finally:
        del ci_stack.env["MLFLOW_STACK_SECRET_KEY"]
    assert parse_env_file(ci_stack.state_dir / "secrets.env")["MLFLOW_STACK_SECRET_KEY"] == new_key
    status = ci_stack.invoke("status").stdout
    mlflow_pid = next(line.split()[2] for line in status.splitlines() if line.startswith("mlflow"))
    environ = Path(f"/proc/{mlflow_pid}/environ").read_bytes().split(b"\0")
    assert f"MLFLOW_FLASK_SERVER_SECRET_KEY={new_key}".encode() in environ


def test_supervisor_brings_mlflow_back_after_kill_9(ci_stack):
    status = ci_stack.invoke("status").stdout
    mlflow_pid = int(
        next(line.split()[2] for line in status.splitlines() if line.startswith("mlflow"))
    )
    subprocess.run(["kill", "-9", str(mlflow_pid)], check=True)
    url = ci_stack.client_env()["MLFLOW_TRACKING_URI"]
    deadline = time.monotonic() + 90
    new_pid = None
    while time.monotonic() < deadline:
        status = ci_stack.invoke("status", check=False).stdout
        row = next(line for line in status.splitlines() if line.startswith("mlflow"))
        if "healthy" in row.split()[-1:] and int(row.split()[2]) != mlflow_pid:
            new_pid = int(row.split()[2])
            break
        time.sleep(1)
    assert new_pid is not None, status
    assert requests.get(f"{url}/health", timeout=5).status_code == 200


def test_a_run_survives_kill_9_of_every_process(ci_stack):
    run_id = ci_stack.sdk("log", "kill-9")["run_id"]
    killed = ci_stack.kill_everything()
    assert len(killed) >= 4  # supervisord, mlflow, uvicorn, postmaster (+ its children)
    time.sleep(1)
    assert ci_stack.processes() == []
    ci_stack.invoke("up")
    assert_run_intact(ci_stack, run_id)


def test_db_probe_passes_and_names_the_failed_check_when_postgres_is_down(ci_stack):
    ok = ci_stack.invoke("db.probe")
    assert "tracking schema at head" in ok.stdout and "FAIL" not in ok.stdout
    ci_stack.invoke("down")
    failed = ci_stack.invoke("db.probe", check=False)
    assert failed.returncode == 1
    assert "db.probe failed: reachable" in failed.stderr
    assert "Traceback" not in failed.stderr
    ci_stack.invoke("up")


def test_backup_clean_volumes_restore_brings_everything_back(ci_stack, tmp_path):
    env = ci_stack.client_env()
    logged = ci_stack.sdk("log", "backup")
    url = env["MLFLOW_TRACKING_URI"]
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    created = requests.post(
        f"{url}/api/2.0/mlflow/users/create",
        auth=admin,
        timeout=30,
        json={"username": "backup-user", "password": "backup-user-pw-123"},
    )
    assert created.status_code == 200, created.text

    backup = tmp_path / "stack.tar.gz"
    ci_stack.invoke("db.backup", "--output", str(backup))
    assert backup.stat().st_mode & 0o077 == 0

    ci_stack.invoke("clean", "--volumes", "--yes")
    assert ci_stack.processes() == []
    assert not (ci_stack.state_dir / "pgdata").exists()
    ci_stack.invoke("up")
    gone = requests.get(
        f"{url}/api/2.0/mlflow/runs/get",
        auth=admin,
        timeout=30,
        params={"run_id": logged["run_id"]},
    )
    assert gone.status_code == 404

    ci_stack.invoke("db.restore", "--source", str(backup))
    assert_run_intact(ci_stack, logged["run_id"])
    assert ci_stack.sdk("artifact", logged["run_id"], "notes/readme.txt")["text"] == (
        "artifact of backup"
    )
    user_login = requests.post(
        f"{url}/api/2.0/mlflow/experiments/search",
        timeout=30,
        auth=("backup-user", "backup-user-pw-123"),
        json={"max_results": 1},
    )
    assert user_login.status_code == 200


def test_clean_refuses_without_yes_and_without_a_terminal(ci_stack):
    before = sorted(p.name for p in ci_stack.state_dir.iterdir())
    refused = ci_stack.invoke("clean", "--volumes", check=False, stdin="y\n")
    assert refused.returncode == 1
    assert "pass --yes" in refused.stderr
    assert sorted(p.name for p in ci_stack.state_dir.iterdir()) == before
    assert ci_stack.invoke("status").returncode == 0


def test_clean_volumes_leaves_no_process_and_no_data(ci_stack):
    ci_stack.invoke("clean", "--volumes", "--yes")
    assert ci_stack.processes() == []
    left = sorted(p.name for p in ci_stack.state_dir.iterdir())
    assert left == ["secrets.env"]
