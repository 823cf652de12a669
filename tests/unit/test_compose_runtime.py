"""Compose command construction, against a fake `docker` on PATH that records its arguments."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlflow_stack import paths
from mlflow_stack.errors import StackError
from mlflow_stack.health import Progress
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.runtime import choose_runtime
from mlflow_stack.runtime.compose import ComposeRuntime

FAKE_DOCKER = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    if args[:1] == ["info"]:
        if os.environ.get("FAKE_DOCKER_ENGINE") == "down":
            sys.exit("Cannot connect to the Docker daemon")
        print("28.2.2")
    elif args[:2] == ["compose", "version"]:
        if os.environ.get("FAKE_DOCKER_COMPOSE") == "missing":
            sys.exit("docker: 'compose' is not a docker command.")
        print("Docker Compose version v2.40.3")
    elif "ps" in args:
        print(json.dumps({{"Service": "postgres", "State": "running", "ID": "0123456789abcdef",
                          "Health": "healthy", "Publishers": []}}))
        print(json.dumps({{"Service": "mlflow", "State": "running", "ID": "fedcba9876543210",
                          "Health": "healthy",
                          "Publishers": [{{"URL": "127.0.0.1", "PublishedPort": 5000}}]}}))
    """
)


@pytest.fixture
def fake_docker(tmp_path, monkeypatch, stack_home):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return calls


@pytest.fixture
def dev_profile(stack_home):
    profile = load_profile("dev")
    render_profile(profile)
    return profile


def compose_prefix(profile) -> list[str]:
    state = profile.state_dir
    return [
        "compose",
        "-p",
        "mlflow-dev",
        "-f",
        str(state / "docker-compose.yml"),
        "--env-file",
        str(state / "compose.env"),
    ]


def compose_calls(calls) -> list[list[str]]:
    return [c for c in calls() if c[:1] == ["compose"] and c[1:2] != ["version"]]


def test_up_builds_and_waits(fake_docker, dev_profile):
    ComposeRuntime(dev_profile).up(Progress())
    assert compose_calls(fake_docker) == [
        [
            *compose_prefix(dev_profile),
            "up",
            "--build",
            "--detach",
            "--wait",
            "--wait-timeout",
            "300",
        ]
    ]


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("down", (), ["down", "--remove-orphans"]),
        ("stop", (), ["stop"]),
        ("restart", (None,), ["restart"]),
        ("restart", ("mlflow",), ["restart", "mlflow"]),
        ("logs", ("postgres", True, 50), ["logs", "--tail", "50", "--follow", "postgres"]),
        ("logs", (None, False, 100), ["logs", "--tail", "100"]),
        ("remove_volumes", (), ["down", "--volumes", "--remove-orphans"]),
    ],
)
def test_each_operation_builds_its_argument_list(fake_docker, dev_profile, method, args, expected):
    getattr(ComposeRuntime(dev_profile), method)(*args)
    assert compose_calls(fake_docker) == [[*compose_prefix(dev_profile), *expected]]


def test_status_reads_compose_ps(fake_docker, dev_profile):
    rows = ComposeRuntime(dev_profile).status()
    assert [(r.service, r.state, r.process, r.health) for r in rows] == [
        ("postgres", "running", "0123456789ab", "healthy"),
        ("mlflow", "running", "fedcba987654", "healthy"),
    ]
    assert rows[1].port == "127.0.0.1:5000"
    assert compose_calls(fake_docker)[0][-4:] == ["ps", "--all", "--format", "json"]


def test_unknown_service_is_refused(fake_docker, dev_profile):
    with pytest.raises(StackError, match="unknown service 'web'; services: postgres, mlflow"):
        ComposeRuntime(dev_profile).restart("web")


def test_missing_docker_names_the_local_runtime(dev_profile, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="docker is not installed.*--runtime local"):
        ComposeRuntime(dev_profile).up(Progress())


def test_missing_compose_plugin_names_the_local_runtime(fake_docker, dev_profile, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_COMPOSE", "missing")
    with pytest.raises(StackError, match="compose plugin is missing.*--runtime local"):
        ComposeRuntime(dev_profile).up(Progress())
    assert compose_calls(fake_docker) == []


def test_engine_down_names_the_local_runtime(fake_docker, dev_profile, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_ENGINE", "down")
    with pytest.raises(StackError, match="engine does not answer.*--runtime local"):
        ComposeRuntime(dev_profile).down()
    assert compose_calls(fake_docker) == []


def test_auto_picks_docker_only_when_an_engine_answers(fake_docker, dev_profile, monkeypatch):
    assert choose_runtime(dev_profile, "auto") == "docker"
    monkeypatch.setenv("FAKE_DOCKER_ENGINE", "down")
    assert choose_runtime(dev_profile, "auto") == "local"
    assert choose_runtime(dev_profile, "docker") == "docker"
    with pytest.raises(StackError, match="unknown runtime 'podman'"):
        choose_runtime(dev_profile, "podman")


def test_tasks_reach_the_fake_docker_through_invoke(fake_docker, dev_profile):
    env = dict(os.environ)
    for task in (["down"], ["logs", "--service", "mlflow", "--tail", "5"], ["status"]):
        result = subprocess.run(
            [sys.executable, "-m", "invoke", *task, "--runtime", "docker"],
            cwd=paths.PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    calls = compose_calls(fake_docker)
    prefix = compose_prefix(dev_profile)
    assert [*prefix, "down", "--remove-orphans"] in calls
    assert [*prefix, "logs", "--tail", "5", "mlflow"] in calls
    assert [*prefix, "ps", "--all", "--format", "json"] in calls


def test_compose_file_paths_are_absolute(dev_profile):
    prefix = compose_prefix(dev_profile)
    assert Path(prefix[4]).is_absolute() and Path(prefix[6]).is_absolute()
