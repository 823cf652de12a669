"""The compose runtime on a real Docker engine: start, smoke, survive, back up, harden.

Every test drives `invoke` in a subprocess, as a user would, against stacks on free ports in a
scratch MLFLOW_STACK_HOME, each in a Compose project of its own (compose_project), so the tier
never touches a user's stack or volumes of the same profile on the same engine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

import pytest
import requests

from mlflow_stack import paths
from tests.compose.conftest import host_ca_bundle
from tests.stacks import Stack, base_environment, free_port

# The hostile values of the render tests: every character that has broken a setup script.
HOSTILE_ADMIN_PASSWORD = "p%a$s@w:o/r#d'\"; ü ${X}"
HOSTILE_DB_PASSWORD = "${MLFLOW_STACK_DB_PASSWORD:-x} $HOME % @'\""


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result


def project(stack: Stack) -> str:
    return stack.env["MLFLOW_STACK_COMPOSE_PROJECT"]


def compose_stack(tmp_path_factory, profile: str, **environment: str) -> Stack:
    home = tmp_path_factory.mktemp(f"compose-{profile}")
    stack = Stack(profile, home, base_environment(home), runtime="docker")
    stack.env.update(
        MLFLOW_STACK_MLFLOW_PORT=str(free_port()),
        MLFLOW_STACK_POSTGRES_PORT=str(free_port()),
        MLFLOW_STACK_COMPOSE_PROJECT=f"mlflow-test-{profile}-{uuid.uuid4().hex[:6]}",
        **environment,
    )
    bundle = host_ca_bundle()
    if bundle:
        stack.env["MLFLOW_STACK_CA_BUNDLE"] = bundle
    return stack


def container_id(stack: Stack, service: str) -> str:
    output = docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project(stack)}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    ).stdout.split()
    assert len(output) == 1, f"{service}: {output}"
    return output[0]


def search_with_token(stack: Stack, token: str) -> int:
    """The status code of an experiment search authenticated by `token` alone."""
    url = f"http://127.0.0.1:{stack.env['MLFLOW_STACK_MLFLOW_PORT']}"
    return requests.post(
        f"{url}/api/2.0/mlflow/experiments/search",
        json={"max_results": 10},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).status_code


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def wait_healthy(stack: Stack, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = stack.invoke("status", check=False)
        if status.returncode == 0:
            return status.stdout
        time.sleep(2)
    raise AssertionError(f"not healthy after {timeout} s:\n{status and status.stdout}")


@pytest.fixture(scope="module")
def ci(compose_images, tmp_path_factory):
    stack = compose_stack(tmp_path_factory, "ci")
    try:
        stack.invoke("up", "--runtime", "docker", timeout=1200)
        yield stack
    finally:
        stack.invoke("clean", "--volumes", "--yes", check=False, timeout=300)


@pytest.fixture(scope="module")
def demo(compose_images, tmp_path_factory):
    stack = compose_stack(
        tmp_path_factory,
        "demo",
        MLFLOW_STACK_ADMIN_PASSWORD=HOSTILE_ADMIN_PASSWORD,
        MLFLOW_STACK_DB_PASSWORD=HOSTILE_DB_PASSWORD,
        # No tls override: demo defaults to HTTPS, through the container (the certificate and
        # key reach its private tmpfs).
    )
    try:
        stack.invoke("up", "--runtime", "docker", timeout=1200)
        yield stack
    finally:
        stack.invoke("clean", "--volumes", "--yes", check=False, timeout=300)


def run_smoke(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlflow_stack.smoke", "--profile", stack.profile],
        cwd=paths.PROJECT_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_all_smoke_checks_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # pytest's last line: all 16 checks passed, none skipped (the token checks ran).
    assert re.fullmatch(r"=+ 16 passed in [\d.]+s =+", result.stdout.strip().splitlines()[-1])


def test_ci_is_healthy_on_the_docker_runtime(ci):
    status = ci.invoke("status").stdout
    assert "(docker runtime)" in status
    assert len(re.findall(r"\brunning\b.*\bhealthy\b", status)) == 2, status
    # ci does not publish PostgreSQL: only MLflow's port is on the host.
    ports = inspect(container_id(ci, "postgres"))["NetworkSettings"]["Ports"] or {}
    assert not any(ports.values()), ports


def test_smoke_passes_on_ci_with_postgres_unpublished(ci):
    assert_all_smoke_checks_passed(run_smoke(ci))


def test_smoke_passes_on_demo_with_hostile_passwords(demo):
    assert_all_smoke_checks_passed(run_smoke(demo))


def test_demo_serves_verified_https_and_the_sdk_logs_over_it(demo):
    env = demo.client_env()
    assert env["MLFLOW_TRACKING_URI"].startswith("https://127.0.0.1:")
    assert demo.sdk("log", "compose-tls", env=env)["run_id"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(env["MLFLOW_TRACKING_URI"] + "/health", verify=True, timeout=10)
    health = requests.get(
        env["MLFLOW_TRACKING_URI"] + "/health",
        verify=env["MLFLOW_TRACKING_SERVER_CERT_PATH"],
        timeout=10,
    )
    assert health.status_code == 200
    assert health.headers["Strict-Transport-Security"].startswith("max-age=")


def test_the_audit_log_on_compose_has_changes_and_failed_logins_and_no_secret(demo):
    env = demo.client_env()
    url, ca = env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    name = f"compose-audited-{uuid.uuid4().hex[:8]}"
    wrong = f"wrong-{uuid.uuid4().hex[:12]}"
    created = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": name},
        auth=("admin", HOSTILE_ADMIN_PASSWORD),
        verify=ca,
        timeout=30,
    )
    assert created.status_code == 200, created.text
    refused = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": f"{name}-refused"},
        auth=("admin", wrong),
        verify=ca,
        timeout=30,
    )
    assert refused.status_code == 401
    printed = demo.invoke("audit", "--json").stdout
    records = [json.loads(line) for line in printed.splitlines() if line.strip()]
    made = [r for r in records if r.get("name") == name]
    assert len(made) == 1 and made[0]["user"] == "admin" and made[0]["outcome"] == "ok", made
    failed = [r for r in records if r.get("name") == f"{name}-refused"]
    assert len(failed) == 1 and failed[0]["outcome"] == "unauthenticated", failed
    assert failed[0]["user"] == "admin" and failed[0]["auth"] == "password"
    assert [r["name"] for r in demo_audit(demo, "--failed") if r.get("name", "").startswith(name)]
    # The same lines go to the container's log stream; no password in either.
    logs = demo.invoke("logs", "--service", "mlflow", "--tail", "5000").stdout
    assert name in logs
    for secret in (HOSTILE_ADMIN_PASSWORD, HOSTILE_DB_PASSWORD, wrong):
        assert secret not in printed and secret not in logs


def demo_audit(stack: Stack, *flags: str) -> list[dict]:
    printed = stack.invoke("audit", "--json", *flags).stdout
    return [json.loads(line) for line in printed.splitlines() if line.strip()]


def test_hostile_passwords_log_in_through_the_containers(demo):
    url = demo.client_env()["MLFLOW_TRACKING_URI"]
    response = requests.get(
        f"{url}/api/2.0/mlflow/users/get",
        params={"username": "admin"},
        auth=("admin", HOSTILE_ADMIN_PASSWORD),
        verify=demo.client_env()["MLFLOW_TRACKING_SERVER_CERT_PATH"],
        timeout=30,
    )
    assert response.status_code == 200, response.text
    probe = demo.invoke("db.probe").stdout
    assert "ok   authenticates: logged in as mlflow (password authentication)" in probe
    assert "ok   auth schema at head" in probe
    # The database password, typed as-is, opens psql inside the postgres container too.
    login = subprocess.run(
        [
            "docker",
            "exec",
            "-i",
            "-e",
            "PGPASSWORD",
            container_id(demo, "postgres"),
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "mlflow",
            "-d",
            "mlflow_auth",
            "-tAc",
            "SELECT count(*) FROM users WHERE username = 'admin'",
        ],
        env={**demo.env, "PGPASSWORD": HOSTILE_DB_PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert login.stdout.strip() == "1", login.stderr


def test_mlflow_container_runs_unprivileged_with_a_private_auth_config(ci):
    container = container_id(ci, "mlflow")

    def inside(*command: str) -> str:
        return docker("exec", container, *command).stdout.strip()

    assert inside("stat", "-c", "%u %a", "/mlflow/config/auth_config.ini") == "10001 400"
    assert inside("stat", "-c", "%u %a", "/mlflow/config") == "10001 700"
    server = dict(
        line.split(":\t", 1)
        for line in inside("cat", "/proc/1/status").splitlines()
        if ":\t" in line
    )
    assert server["Uid"].split()[:2] == ["10001", "10001"]
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(server[capabilities], 16) == 0, (capabilities, server[capabilities])
    assert server["NoNewPrivs"] == "1"
    # The INI's content was handed over in a variable that the server no longer carries.
    assert "MLFLOW_STACK_AUTH_CONFIG_INI" not in inside("cat", "/proc/1/environ")
    config = inspect(container)
    assert config["HostConfig"]["ReadonlyRootfs"] is True
    assert config["Config"]["User"] == "10001:10001"
    # On the host, every rendered file that holds a secret is the owner's alone.
    for name in ("docker-compose.yml", "auth_config.ini", "secrets.env"):
        assert (ci.state_dir / name).stat().st_mode & 0o077 == 0, name


def test_db_and_token_tasks_work_without_a_published_postgres(ci):
    assert "ok   tracking schema at head" in ci.invoke("db.probe").stdout
    assert "accepts connections" in ci.invoke("db.wait", "--timeout", "30").stdout
    answer = ci.invoke("db.psql", "--database", "auth", stdin="SELECT 40 + 2 AS answer;\n")
    assert re.search(r"^\s*42$", answer.stdout, re.M), answer.stdout
    created = json.loads(ci.invoke("tokens.create", "--user", "admin", "--json").stdout)
    listed = json.loads(ci.invoke("tokens.list", "--json").stdout)
    assert created["id"] in [token["id"] for token in listed]
    url = f"http://127.0.0.1:{ci.env['MLFLOW_STACK_MLFLOW_PORT']}/api/2.0/mlflow/experiments/search"
    bearer = {"Authorization": f"Bearer {created['token']}"}
    assert (
        requests.post(url, json={"max_results": 10}, headers=bearer, timeout=30).status_code == 200
    )
    ci.invoke("tokens.revoke", "--token-id", str(created["id"]))
    assert (
        requests.post(url, json={"max_results": 10}, headers=bearer, timeout=30).status_code == 401
    )
    # No relay container outlives a task.
    assert not docker("ps", "-aq", "--filter", f"name={project(ci)}-db-relay").stdout.strip()


def test_logs_and_restart_of_one_service(ci):
    logs = ci.invoke("logs", "--service", "mlflow", "--tail", "20").stdout
    assert "mlflow" in logs.lower()
    before = inspect(container_id(ci, "mlflow"))["State"]["StartedAt"]
    ci.invoke("restart", "--service", "mlflow", timeout=300)
    assert inspect(container_id(ci, "mlflow"))["State"]["StartedAt"] != before
    wait_healthy(ci)


def crash(container: str) -> None:
    """kill -9 of the container's main process from the host: a crash, as the engine sees it.

    (`docker kill` is a deliberate stop to the engine: no restart policy restarts after it,
    `unless-stopped` and `always` alike, as test_docker_kill_is_a_stop_that_up_repairs shows.)
    """
    pid = inspect(container)["State"]["Pid"]
    subprocess.run(["kill", "-9", str(pid)], check=True)


def test_a_logged_run_survives_down_up_and_crashes(ci):
    env = ci.client_env()
    logged = ci.sdk("log", "compose-durability", env=env)

    def run_is_intact() -> None:
        got = ci.sdk("get", logged["run_id"], env=env)
        assert got["params"] == {"alpha": "0.5"} and got["loss_steps"] == 5
        artifact = ci.sdk("artifact", logged["run_id"], "notes/readme.txt", env=env)
        assert artifact["text"] == "artifact of compose-durability"

    ci.invoke("down", timeout=300)
    ci.invoke("up", timeout=600)
    run_is_intact()
    for service in ("mlflow", "postgres"):
        container = container_id(ci, service)
        restarts = inspect(container)["RestartCount"]
        crash(container)
        deadline = time.monotonic() + 60
        while inspect(container)["RestartCount"] == restarts and time.monotonic() < deadline:
            time.sleep(0.5)
        assert inspect(container)["RestartCount"] == restarts + 1, f"{service} was not restarted"
        status = wait_healthy(ci)
        assert re.search(rf"^{service}\s+running\s+\S+\s+\S+\s+healthy", status, re.M), status
        run_is_intact()


def test_docker_kill_is_a_stop_that_up_repairs(ci):
    env = ci.client_env()
    logged = ci.sdk("log", "compose-docker-kill", env=env)
    for service in ("mlflow", "postgres"):
        container = container_id(ci, service)
        restarts = inspect(container)["RestartCount"]
        docker("kill", container)
        time.sleep(3)  # long enough for a restart policy to act, were it going to
        state = inspect(container)["State"]
        assert state["Status"] == "exited" and inspect(container)["RestartCount"] == restarts
        status = ci.invoke("status", check=False)
        assert status.returncode == 1
        assert re.search(rf"^{service}\s+exited", status.stdout, re.M), status.stdout
        ci.invoke("up", timeout=600)
        wait_healthy(ci)
        assert ci.sdk("get", logged["run_id"], env=env)["loss_steps"] == 5


def test_backup_clean_volumes_up_restore(ci, tmp_path):
    env = ci.client_env()
    logged = ci.sdk("log", "compose-backup", env=env)
    created = json.loads(ci.invoke("tokens.create", "--user", "admin", "--json").stdout)
    backup = tmp_path / "ci.tar.gz"
    ci.invoke("db.backup", "--output", str(backup), timeout=300)
    assert backup.stat().st_mode & 0o777 == 0o600

    ci.invoke("clean", "--volumes", "--yes", timeout=300)
    volumes = docker(
        "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project(ci)}"
    )
    assert not volumes.stdout.strip(), volumes.stdout
    ci.invoke("up", "--runtime", "docker", timeout=600)
    with pytest.raises(AssertionError):
        ci.sdk("get", logged["run_id"], env=ci.client_env())

    ci.invoke("db.restore", "--source", str(backup), timeout=600)
    env = ci.client_env()
    got = ci.sdk("get", logged["run_id"], env=env)
    assert got["params"] == {"alpha": "0.5"} and got["loss_steps"] == 5
    artifact = ci.sdk("artifact", logged["run_id"], "notes/readme.txt", env=env)
    assert artifact["text"] == "artifact of compose-backup"
    url = f"http://127.0.0.1:{ci.env['MLFLOW_STACK_MLFLOW_PORT']}/api/2.0/mlflow/experiments/search"
    bearer = {"Authorization": f"Bearer {created['token']}"}
    assert (
        requests.post(url, json={"max_results": 10}, headers=bearer, timeout=30).status_code == 200
    )
