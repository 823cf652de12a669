"""The smoke suite and check_access.py against a real stack: they pass, twice, and can fail."""

from __future__ import annotations

import re
import subprocess
import sys

import requests

from mlflow_stack import paths

CHECK_ACCESS = paths.PROJECT_ROOT / "scripts" / "check_access.py"


def run_smoke(stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlflow_stack.smoke", "--profile", stack.profile, *args],
        cwd=paths.PROJECT_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_check_access_passes_with_invoke_env(ci_stack):
    result = subprocess.run(
        [sys.executable, str(CHECK_ACCESS)],
        env=ci_stack.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "✓ All tests passed! Token-based access is working correctly."
    assert any(line.startswith("✓ Created experiment with ID: ") for line in lines)


def test_check_access_fails_with_a_wrong_password(ci_stack):
    env = ci_stack.client_env()
    env["MLFLOW_TRACKING_PASSWORD"] = "not-the-password"
    result = subprocess.run(
        [sys.executable, str(CHECK_ACCESS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("✗ Authentication")
    assert "Traceback" not in result.stderr


def test_smoke_passes_twice_and_leaves_nothing_behind(ci_stack):
    env = ci_stack.client_env()
    url = env["MLFLOW_TRACKING_URI"]
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    for attempt in (1, 2):
        result = run_smoke(ci_stack)
        assert result.returncode == 0, f"attempt {attempt}:\n{result.stdout[-4000:]}"
        # The last line is pytest's: every check passed, none skipped (the token checks ran).
        assert re.fullmatch(r"=+ \d+ passed in [\d.]+s =+", result.stdout.strip().splitlines()[-1])
    # The stack was running before, so smoke left it running.
    assert ci_stack.invoke("status").returncode == 0
    active = (
        requests.post(
            f"{url}/api/2.0/mlflow/experiments/search",
            auth=admin,
            timeout=30,
            json={"max_results": 1000},
        )
        .json()
        .get("experiments", [])
    )
    assert not [e for e in active if e["name"].startswith("smoke-")]
    users = requests.get(f"{url}/api/2.0/mlflow/users/list", auth=admin, timeout=30).json()
    assert not [u for u in users.get("users", []) if u["username"].startswith("smoke-")]
    tokens = ci_stack.invoke("tokens.list", "--json", check=False)
    if tokens.returncode == 0:
        assert "smoke-" not in tokens.stdout


def test_smoke_fails_against_a_wrong_password(ci_stack):
    env = dict(ci_stack.client_env(), MLFLOW_TRACKING_PASSWORD="not-the-password")
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_stack.smoke", "--url", env["MLFLOW_TRACKING_URI"]],
        cwd=paths.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode != 0
    assert "test_authentication_accepted" in result.stdout
