"""Two profiles at once, ports in use, binaries of another PostgreSQL major."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from tests.stacks import free_port, make_stack

PG15 = Path("/usr/lib/postgresql/15/bin")


def test_ci_and_dev_run_side_by_side(ci_stack, integration_home):
    dev = make_stack(integration_home, "dev")
    try:
        dev.invoke("up")
        for stack in (ci_stack, dev):
            assert stack.invoke("status").stdout.count("healthy") == 2
            env = stack.client_env()
            response = requests.post(
                f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search",
                auth=(env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]),
                json={"max_results": 1},
                verify=stack.verify,
                timeout=30,
            )
            assert response.status_code == 200
        assert set(ci_stack.processes()).isdisjoint(dev.processes())
    finally:
        dev.invoke("down", check=False)


@pytest.mark.parametrize("key", ["mlflow_port", "postgres_port"])
def test_a_port_in_use_is_a_one_line_error_naming_port_and_key(integration_home, key):
    stack = make_stack(integration_home, "demo")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack.env[f"MLFLOW_STACK_{key.upper()}"] = str(port)
        result = stack.invoke("up", check=False)
    stack.invoke("down", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert key in result.stderr and f"MLFLOW_STACK_{key.upper()}" in result.stderr


def test_data_of_another_postgres_major_is_a_clear_error(integration_home):
    stack = make_stack(integration_home, "demo")
    stack.env["MLFLOW_STACK_MLFLOW_PORT"] = str(free_port())
    stack.invoke("up")
    stack.invoke("down")
    if PG15.is_dir():
        stack.env["MLFLOW_STACK_POSTGRES_BIN_DIR"] = str(PG15)
        expected = "was made by PostgreSQL 18 but the binaries"
    else:
        # No second major on this machine: claim the data is from PostgreSQL 15 instead.
        (stack.state_dir / "pgdata" / "PG_VERSION").write_text("15\n")
        expected = "was made by PostgreSQL 15 but the binaries"
    result = stack.invoke("up", check=False)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_postgres_binaries_are_a_clear_error(integration_home, tmp_path):
    stack = make_stack(integration_home, "demo")
    stack.env["MLFLOW_STACK_POSTGRES_BIN_DIR"] = str(tmp_path / "nowhere")
    result = stack.invoke("up", check=False)
    assert result.returncode == 1
    assert "PostgreSQL binaries missing in" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_running_stack_whose_port_setting_changed_is_a_clear_error(integration_home):
    stack = make_stack(integration_home, "dev")
    stack.invoke("up")
    try:
        old_ports = {
            k: stack.env[k] for k in ("MLFLOW_STACK_POSTGRES_PORT", "MLFLOW_STACK_MLFLOW_PORT")
        }
        # Both ports changed: the running stack is not found at the new address, and its
        # PostgreSQL must not be taken for one listening on the new port.
        for key in old_ports:
            stack.env[key] = str(free_port())
        result = stack.invoke("up", check=False)
        assert result.returncode == 1
        old_pg = old_ports["MLFLOW_STACK_POSTGRES_PORT"]
        assert f"is running on port {old_pg}, but postgres_port is now" in result.stderr
        assert result.stderr.strip().count("\n") == 0
        stack.env.update(old_ports)
    finally:
        stack.invoke("down", check=False)
