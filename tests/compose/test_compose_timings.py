"""dev on the docker runtime: the containers setup guides name, and start times next to local's.

The figures (cold and warm `invoke up` on each runtime, the MLflow image's size) are written to
bench/results/compose-<time>.json and shown in the session's summary; they are measured, never
asserted against a bound.
"""

from __future__ import annotations

import json
import time

from mlflow_stack import paths
from tests.compose import conftest as compose_conftest
from tests.compose.test_compose_stack import compose_stack, docker
from tests.stacks import make_stack


def timed_up(stack, *args: str) -> float:
    started = time.monotonic()
    stack.invoke("up", *args, timeout=1200)
    return round(time.monotonic() - started, 1)


def test_dev_names_its_containers_as_setup_guides_do(compose_images, tmp_path_factory):
    stack = compose_stack(tmp_path_factory, "dev")
    try:
        stack.invoke("up", "--runtime", "docker", timeout=1200)
        # The troubleshooting steps users copy from guides, verbatim.
        ready = docker("exec", "mlflow-postgres", "pg_isready", "-U", "mlflow")
        assert "accepting connections" in ready.stdout
        health = docker(
            "exec",
            "mlflow-server",
            "python",
            "-c",
            "import urllib.request; print(urllib.request.urlopen("
            f"'http://127.0.0.1:{stack.env['MLFLOW_STACK_MLFLOW_PORT']}/health').read().decode())",
        )
        assert health.stdout.strip() == "OK"
    finally:
        stack.invoke("clean", "--volumes", "--yes", check=False, timeout=300)


def test_start_times_and_image_size_are_reported(
    compose_images, tmp_path_factory, integration_home
):
    figures: dict[str, float] = {}
    docker_stack = compose_stack(tmp_path_factory, "ci")
    try:
        # Cold: no containers, no volumes (a first initdb and MLflow's migrations); the image
        # is built already, as on every start but the very first.
        figures["docker_cold_up_s"] = timed_up(docker_stack, "--runtime", "docker")
        docker_stack.invoke("down", timeout=300)
        figures["docker_warm_up_s"] = timed_up(docker_stack)
        assert docker_stack.invoke("status", check=False).returncode == 0  # healthy again
        size = docker("image", "inspect", "--format", "{{.Size}}", "mlflow-stack/mlflow:3.17.2")
        figures["mlflow_image_mb"] = round(int(size.stdout.strip()) / 1e6, 1)
    finally:
        docker_stack.invoke("clean", "--volumes", "--yes", check=False, timeout=300)

    local_stack = make_stack(integration_home, "ci")
    try:
        figures["local_cold_up_s"] = timed_up(local_stack, "--runtime", "local")
        local_stack.invoke("down", timeout=300)
        figures["local_warm_up_s"] = timed_up(local_stack)
    finally:
        local_stack.invoke("down", check=False, timeout=300)

    report = {
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "images": compose_images,
        **figures,
    }
    results = paths.PROJECT_ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (results / f"compose-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    compose_conftest.FIGURES.update(figures)
