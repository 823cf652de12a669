"""The proxied artifact store on S3: a local-runtime stack with artifacts_store = "s3" against a
real local S3 server (moto's, a subprocess on a free port), driven through the MLflow SDK as an
authenticated user.

moto is a stand-in: it does not check request signatures. What it does prove: the server signs
with the credentials file it is pointed at (the stack's environment has no other credentials,
so without the file boto3 would refuse to send anything), the bytes round-trip, a file over
8 MiB goes up in parts, the objects land under the prefix, and the key values appear in no
rendered file and no log.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.stacks import free_port, make_stack

ACCESS_KEY = "AKIAINTEGRATIONS3KEY"
SECRET_KEY = "it/S3-secret+Key=0b1c2d3e4f5a6b7c8d9e"
BUCKET = "mlflow-it-artifacts"
PREFIX = "stacks/ci"
REGION = "us-east-1"
BIG_SIZE = 9 * 1024 * 1024 + 12345  # over boto3's 8 MiB multipart threshold
MOTO_READY_SECONDS = 30.0

# The SDK as a user's script: log both files into one run, download them again.
SDK_SCRIPT = """\
import json, sys
import mlflow
from mlflow import MlflowClient

small, big, target = sys.argv[1:4]
experiment = mlflow.set_experiment("it-s3-artifacts")
with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
    mlflow.log_artifact(small, "files")
    mlflow.log_artifact(big, "files")
local = MlflowClient().download_artifacts(run.info.run_id, "files", target)
print(json.dumps({
    "run_id": run.info.run_id,
    "experiment_id": experiment.experiment_id,
    "artifact_uri": run.info.artifact_uri,
    "downloaded": local,
}))
"""


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """moto's S3 server on a free loopback port, stopped by its pid at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + MOTO_READY_SECONDS
        while True:
            try:
                s3_client(endpoint).list_buckets()
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    message = f"moto did not start:\n{log.read_text()[-2000:]}"
                    raise AssertionError(message) from None
                time.sleep(0.2)  # polling for readiness, not waiting for an expiry
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_stack(integration_home, moto_endpoint, tmp_path_factory):
    """A ci stack (local runtime) whose artifacts go to the moto bucket."""
    s3_client(moto_endpoint).create_bucket(Bucket=BUCKET)
    credentials = tmp_path_factory.mktemp("aws") / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n",
        encoding="utf-8",
    )
    credentials.chmod(0o600)
    stack = make_stack(integration_home, "ci")
    # Only the file may hold credentials: none in the environment, no config file, and no
    # instance-metadata lookup (it would leave the machine).
    for key in [k for k in stack.env if k.startswith("AWS_") and k != "AWS_CA_BUNDLE"]:
        del stack.env[key]
    stack.env |= {
        "AWS_CONFIG_FILE": str(credentials.with_name("absent-config")),
        "AWS_EC2_METADATA_DISABLED": "true",
        "MLFLOW_STACK_ARTIFACTS_STORE": "s3",
        "MLFLOW_STACK_S3_BUCKET": BUCKET,
        "MLFLOW_STACK_S3_PREFIX": PREFIX,
        "MLFLOW_STACK_S3_ENDPOINT_URL": moto_endpoint,
        "MLFLOW_STACK_S3_REGION": REGION,
        "MLFLOW_STACK_S3_CREDENTIALS_FILE": str(credentials),
    }
    stack.invoke("up")
    try:
        yield stack, credentials
    finally:
        stack.invoke("down", check=False)


@pytest.fixture(scope="module")
def logged(s3_stack, tmp_path_factory):
    """Both files logged through the SDK and downloaded again."""
    stack, _ = s3_stack
    folder = tmp_path_factory.mktemp("artifacts")
    small = folder / "small.txt"
    small.write_bytes(b"a small artifact on S3\n")
    big = folder / "big.bin"
    big.write_bytes(os.urandom(BIG_SIZE))
    target = folder / "downloaded"
    target.mkdir()
    env = stack.client_env()
    assert env.get("MLFLOW_TRACKING_USERNAME") or env.get("MLFLOW_TRACKING_TOKEN")
    result = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT, str(small), str(big), str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    return run, {"small.txt": small, "big.bin": big}, Path(run["downloaded"])


def test_both_files_round_trip_byte_identical(logged):
    run, sent, downloaded = logged
    assert run["artifact_uri"].startswith("mlflow-artifacts:")  # proxied through the server
    for name, original in sent.items():
        back = downloaded / name
        assert back.stat().st_size == original.stat().st_size
        digest = hashlib.sha256(back.read_bytes()).hexdigest()
        assert digest == hashlib.sha256(original.read_bytes()).hexdigest(), name


def test_the_objects_are_in_the_bucket_under_the_prefix(logged, moto_endpoint):
    run, _, _ = logged
    client = s3_client(moto_endpoint)
    listed = client.list_objects_v2(Bucket=BUCKET)
    keys = {item["Key"]: item for item in listed.get("Contents", [])}
    folder = f"{PREFIX}/{run['experiment_id']}/{run['run_id']}/artifacts/files"
    assert set(keys) == {f"{folder}/small.txt", f"{folder}/big.bin"}
    assert keys[f"{folder}/big.bin"]["Size"] == BIG_SIZE
    # An object uploaded in parts has the ETag "<md5 of the parts' md5s>-<parts>".
    assert keys[f"{folder}/big.bin"]["ETag"].strip('"').endswith("-2")
    assert "-" not in keys[f"{folder}/small.txt"]["ETag"]


def test_the_server_is_given_the_file_by_reference(s3_stack, logged):
    # The running server (uvicorn, exec'd by the launcher) as MLflow configured it: the bucket
    # as its destination and the file's path, never a key, in its environment.
    stack, credentials = s3_stack
    servers = []
    for pid in stack.processes():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(b"_MLFLOW_SERVER_ARTIFACT_DESTINATION=") for e in environ):
            servers.append(environ)
    assert servers, "no MLflow server process found"
    for environ in servers:
        assert f"_MLFLOW_SERVER_ARTIFACT_DESTINATION=s3://{BUCKET}/{PREFIX}".encode() in environ
        assert f"AWS_SHARED_CREDENTIALS_FILE={credentials}".encode() in environ
        assert any(e.startswith(b"MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:") for e in environ)
        assert not [
            e for e in environ if e.startswith((b"AWS_SECRET_ACCESS_KEY", b"AWS_ACCESS_KEY_ID"))
        ]


def test_no_key_value_in_any_rendered_file_or_log(s3_stack, logged):
    stack, _ = s3_stack
    root = stack.state_dir
    skipped = {root / "pgdata", root / "pgsocket"}  # PostgreSQL's own (it never sees S3)
    searched = []
    for path in root.rglob("*"):
        if not path.is_file() or any(folder in path.parents for folder in skipped):
            continue
        data = path.read_bytes()
        searched.append(path.relative_to(root).as_posix())
        for value in (SECRET_KEY, SECRET_KEY.replace("/", "%2F"), ACCESS_KEY):
            assert value.encode() not in data, path
    assert "local/mlflow.env" in searched and "local/supervisord.conf" in searched
    assert "docker-compose.yml" in searched
    assert any(name.startswith("logs/mlflow") for name in searched)
