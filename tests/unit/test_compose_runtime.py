"""Compose command construction, in-process: subprocess.run is replaced by a recorder.

The same calls run for real on an engine in tests/compose.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.health import Progress
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.runtime import choose_runtime, compose
from mlflow_stack.runtime.compose import ComposeRuntime
from mlflow_stack.tools import compose_binary

PS_OUTPUT = "\n".join(
    json.dumps(row)
    for row in (
        {"Service": "postgres", "State": "running", "ID": "0123456789abcdef", "Health": "healthy"},
        {
            "Service": "mlflow",
            "State": "running",
            "ID": "fedcba9876543210",
            "Health": "healthy",
            "Publishers": [{"URL": "127.0.0.1", "PublishedPort": 5000}],
        },
    )
)


class Engine:
    """Answers like docker and compose would; records every argument list."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.up = True
        self.failing: str | None = None

    def run(self, args, **kwargs):
        args = [str(a) for a in args]
        self.calls.append(args)
        if args[1:2] == ["info"]:
            return subprocess.CompletedProcess(
                args, 0 if self.up else 1, "20.10.24" if self.up else "", ""
            )
        if self.failing and self.failing in args:
            captured = kwargs.get("stderr") is subprocess.PIPE
            return subprocess.CompletedProcess(
                args, 1, "", "no such service: x\n" if captured else None
            )
        stdout = PS_OUTPUT if "ps" in args else ""
        return subprocess.CompletedProcess(args, 0, stdout, "")

    def compose_calls(self) -> list[list[str]]:
        return [c[1:] for c in self.calls if c[0] == str(compose_binary())]


@pytest.fixture
def engine(monkeypatch):
    fake = Engine()
    monkeypatch.setattr(compose.subprocess, "run", fake.run)
    monkeypatch.setattr(compose.shutil, "which", lambda name: f"/usr/bin/{name}")
    return fake


@pytest.fixture
def dev_profile(stack_home):
    profile = load_profile("dev")
    render_profile(profile)
    return profile


def compose_prefix(profile) -> list[str]:
    state = profile.state_dir
    return [
        "-p",
        "mlflow-dev",
        "-f",
        str(state / "docker-compose.yml"),
        "--env-file",
        str(state / "compose.env"),
    ]


def test_every_call_uses_the_pinned_compose_binary_with_project_file_and_env_file(dev_profile):
    command = compose.compose_command(dev_profile, "ps")
    assert command == [str(compose_binary()), *compose_prefix(dev_profile), "ps"]
    assert Path(command[0]).name == "docker-compose" and Path(command[4]).is_absolute()


def test_up_builds_and_waits(engine, dev_profile):
    ComposeRuntime(dev_profile).up(Progress())
    assert engine.compose_calls() == [
        [*compose_prefix(dev_profile), "build"],
        [*compose_prefix(dev_profile), "up", "--detach", "--wait", "--wait-timeout", "300"],
    ]


def test_a_failed_build_is_tried_once_more(engine, dev_profile, monkeypatch):
    builds = []
    answer = engine.run

    def build_fails_once(args, **kwargs):
        if args[-1] == "build":
            builds.append(args)
            if len(builds) == 1:
                return subprocess.CompletedProcess(args, 1, None, None)
        return answer(args, **kwargs)

    monkeypatch.setattr(compose.subprocess, "run", build_fails_once)
    said = io.StringIO()
    ComposeRuntime(dev_profile).up(Progress(stream=said))
    assert len(builds) == 2
    assert engine.compose_calls()[-1][-5:-3] == ["up", "--detach"]
    assert "docker compose build, again" in said.getvalue()


def test_a_build_that_fails_twice_is_a_one_line_error(engine, dev_profile):
    engine.failing = "build"
    with pytest.raises(StackError, match=r"^docker compose build failed \(exit 1\)$"):
        ComposeRuntime(dev_profile).up(Progress())
    builds = [c for c in engine.compose_calls() if c[-1] == "build"]
    assert len(builds) == compose.BUILD_ATTEMPTS == 2
    assert not any("up" in c for c in engine.compose_calls())


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("down", (), ["down", "--remove-orphans"]),
        ("stop", (), ["stop"]),
        ("logs", ("postgres", True, 50), ["logs", "--tail", "50", "--follow", "postgres"]),
        ("logs", (None, False, 100), ["logs", "--tail", "100"]),
        ("remove_volumes", (), ["down", "--volumes", "--remove-orphans"]),
        ("stop_mlflow", (), ["stop", "mlflow"]),
    ],
)
def test_each_operation_builds_its_argument_list(engine, dev_profile, method, args, expected):
    getattr(ComposeRuntime(dev_profile), method)(*args)
    assert engine.compose_calls() == [[*compose_prefix(dev_profile), *expected]]


def test_restart_of_one_service_waits_until_it_is_healthy(engine, dev_profile):
    ComposeRuntime(dev_profile).restart("mlflow")
    calls = engine.compose_calls()
    assert calls[0] == [*compose_prefix(dev_profile), "restart", "mlflow"]
    assert calls[1][-4:] == ["ps", "--all", "--format", "json"]


def test_status_reads_compose_ps(engine, dev_profile):
    rows = ComposeRuntime(dev_profile).status()
    assert [(r.service, r.state, r.process, r.health) for r in rows] == [
        ("postgres", "running", "0123456789ab", "healthy"),
        ("mlflow", "running", "fedcba987654", "healthy"),
    ]
    assert rows[1].port == "127.0.0.1:5000"


def test_a_published_postgres_is_reached_directly(engine, dev_profile):
    with ComposeRuntime(dev_profile).database_endpoint() as endpoint:
        assert (endpoint.host, endpoint.port) == ("127.0.0.1", dev_profile.postgres_port)
    assert engine.compose_calls() == []


def test_an_unpublished_postgres_is_reached_through_a_relay_that_is_removed(
    engine, stack_home, monkeypatch
):
    profile = load_profile("ci")
    render_profile(profile)
    monkeypatch.setattr(ComposeRuntime, "_relay_port", lambda self, name: 49153)
    with ComposeRuntime(profile).database_endpoint() as endpoint:
        assert (endpoint.host, endpoint.port) == ("127.0.0.1", 49153)
        run = engine.compose_calls()[0]
    name = run[run.index("--name") + 1]
    assert name.startswith("mlflow-ci-db-relay-")
    assert run[run.index("--publish") + 1] == "127.0.0.1::15432"
    assert run[-5:] == ["mlflow_stack.container.relay", "15432", "postgres", "5432", "120"]
    assert engine.calls[-1] == ["/usr/bin/docker", "rm", "--force", name]


def test_a_failed_call_is_one_line_naming_the_subcommand(engine, dev_profile):
    engine.failing = "restart"
    # Not captured: Compose printed its own message already.
    with pytest.raises(StackError, match=r"^docker compose restart failed \(exit 1\)$"):
        ComposeRuntime(dev_profile).restart(None)
    engine.failing = "ps"
    with pytest.raises(
        StackError, match=r"^docker compose ps failed \(exit 1\): no such service: x$"
    ):
        ComposeRuntime(dev_profile).status()


def test_unknown_service_is_refused(engine, dev_profile):
    with pytest.raises(StackError, match="unknown service 'web'; services: postgres, mlflow"):
        ComposeRuntime(dev_profile).restart("web")
    assert engine.compose_calls() == []


def test_missing_docker_names_the_local_runtime(dev_profile, monkeypatch):
    monkeypatch.setattr(compose.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="docker is not installed.*--runtime local"):
        ComposeRuntime(dev_profile).up(Progress())


def test_engine_down_names_the_local_runtime(engine, dev_profile):
    engine.up = False
    with pytest.raises(StackError, match="engine does not answer.*--runtime local"):
        ComposeRuntime(dev_profile).down()
    assert engine.compose_calls() == []


def test_auto_picks_docker_only_when_an_engine_answers(engine, dev_profile):
    assert choose_runtime(dev_profile, "auto") == "docker"
    engine.up = False
    assert choose_runtime(dev_profile, "auto") == "local"
    assert choose_runtime(dev_profile, "docker") == "docker"
    with pytest.raises(StackError, match="unknown runtime 'podman'"):
        choose_runtime(dev_profile, "podman")


def test_user_command_is_what_a_user_types_for_the_same_call(dev_profile):
    line = compose.user_command(dev_profile, "exec", "postgres", "pg_isready")
    assert line.startswith("docker compose -p mlflow-dev -f ")
    assert line.endswith(" exec postgres pg_isready")
