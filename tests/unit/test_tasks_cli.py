"""The task layer as a user meets it: `invoke` in a subprocess, one-line errors, exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_stack import paths

INVOKE = [sys.executable, "-m", "invoke"]


def run_invoke(*args, env_extra=None, stack_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_STACK_")}
    env["MLFLOW_STACK_HOME"] = str(stack_home)
    env.update(env_extra or {})
    return subprocess.run(
        [*INVOKE, *args],
        cwd=paths.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_list_shows_every_task_with_a_one_line_help(stack_home):
    result = run_invoke("--list", stack_home=stack_home)
    assert result.returncode == 0
    rows = [line for line in result.stdout.splitlines()[2:] if line.strip()]
    names = [line.split()[0] for line in rows if not line.startswith(" " * 6)]
    assert "render" in names and "validate" in names
    for line in rows:
        assert len(line.split()) >= 1
    for name in names:
        help_text = run_invoke("--help", name, stack_home=stack_home).stdout
        assert "Docstring:\n  none" not in help_text, name


@pytest.mark.parametrize(
    ("args", "env_extra", "message"),
    [
        (["render", "-p", "prod"], {}, "unknown profile 'prod'; profiles: ci, demo, dev"),
        (["render", "-p", "../etc"], {}, "invalid profile name '../etc'"),
        (["render", "-p", "dev"], {"MLFLOW_STACK_MLFLOW_PORT": "70000"}, "out of range"),
        (
            ["render", "-p", "demo"],
            {"MLFLOW_STACK_ADMIN_PASSWORD": "admin_password"},
            "refuses a known default password",
        ),
    ],
)
def test_bad_input_is_one_line_exit_1_and_writes_nothing(stack_home, args, env_extra, message):
    result = run_invoke(*args, env_extra=env_extra, stack_home=stack_home)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not stack_home.exists()


@pytest.mark.parametrize(
    ("profile_text", "message"),
    [("mlflow_port = [\n", "dev.toml: malformed TOML"), ("colour = 1\n", "unknown key 'colour'")],
)
def test_broken_profile_files_are_one_line_errors(tmp_path, stack_home, profile_text, message):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "base.toml").write_text((paths.PROFILES_DIR / "base.toml").read_text())
    (profiles / "dev.toml").write_text(profile_text)
    result = run_invoke(
        "render",
        "-p",
        "dev",
        env_extra={"MLFLOW_STACK_PROFILES_DIR": str(profiles)},
        stack_home=stack_home,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not stack_home.exists()


def test_render_check_succeeds_for_every_profile(stack_home):
    for name in ("dev", "ci", "demo"):
        result = run_invoke("render", "-p", name, "--check", stack_home=stack_home)
        assert result.returncode == 0, result.stderr
        assert "hadolint passed" in result.stdout
        assert Path(stack_home, name, "docker-compose.yml").exists()
