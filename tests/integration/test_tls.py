"""HTTPS on the local runtime (tls = self-signed on the ci profile): the SDK verifies the
server with what `invoke env` exports, plain HTTP gets no answer, TLS below 1.2 and foreign
host names are refused, and the tasks and smoke work over HTTPS."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import warnings

import pytest
import requests

from tests.integration.test_smoke_suite import CHECK_ACCESS, run_smoke
from tests.stacks import Stack, make_stack


@pytest.fixture(scope="module")
def tls_stack(integration_home):
    stack = make_stack(integration_home, "ci")
    stack.env["MLFLOW_STACK_TLS"] = "self-signed"
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)


def port(stack: Stack) -> int:
    return int(stack.env["MLFLOW_STACK_MLFLOW_PORT"])


def test_the_sdk_logs_a_run_over_verified_https(tls_stack):
    env = tls_stack.client_env()
    assert env["MLFLOW_TRACKING_URI"] == f"https://127.0.0.1:{port(tls_stack)}"
    ca = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    assert "MLFLOW_TRACKING_INSECURE_TLS" not in env
    logged = tls_stack.sdk("log", "over-tls", env=env)
    assert logged["run_id"]
    answer = requests.get(
        f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/runs/get",
        params={"run_id": logged["run_id"]},
        auth=(env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]),
        verify=ca,
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    # Without the CA, verification fails: the certificate is the profile's own.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(env["MLFLOW_TRACKING_URI"] + "/health", timeout=10)


def test_plain_http_on_the_port_gets_no_answer_from_mlflow(tls_stack):
    with socket.create_connection(("127.0.0.1", port(tls_stack)), timeout=10) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        received = b""
        try:
            while chunk := conn.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert not received.startswith(b"HTTP/"), received[:200]
    assert b"OK" not in received


def handshake(stack: Stack, server_name: str, **options) -> None:
    ca = stack.client_env()["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    context = ssl.create_default_context(cafile=ca)
    for key, value in options.items():
        setattr(context, key, value)
    with (
        socket.create_connection(("127.0.0.1", port(stack)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name),
    ):
        pass


def test_only_tls_1_2_and_up_and_only_the_allowed_hosts(tls_stack):
    handshake(tls_stack, "localhost")
    handshake(tls_stack, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls_stack, "mlflow.evil.example")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ssl.SSLError):
            handshake(
                tls_stack,
                "localhost",
                minimum_version=ssl.TLSVersion.TLSv1,
                maximum_version=ssl.TLSVersion.TLSv1_1,
            )


def test_tasks_smoke_and_check_access_work_over_https(tls_stack):
    assert "healthy" in tls_stack.invoke("status").stdout
    tls_stack.invoke("users.add", "--user", "tilda", stdin="")
    assert "tilda" in tls_stack.invoke("users.list").stdout
    smoked = run_smoke(tls_stack)
    assert smoked.returncode == 0, smoked.stdout[-3000:] + smoked.stderr[-3000:]
    assert " passed" in smoked.stdout
    checked = subprocess.run(
        [sys.executable, str(CHECK_ACCESS)],
        env=tls_stack.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
