"""The body of `invoke gc`: empty MLflow's trash on either runtime, after asking.

The work is `mlflow_stack.gc` (MLflow's garbage collection, the store URI read from the
environment). Here it is started where the artifacts are: a child process on the local
runtime, a one-off container with the artifacts volume on compose. The store URI, which holds
the database password, travels only in that process's environment: on compose it is already
the MLflow service's, so not even the environment of `docker compose` carries it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlflow_stack import gc
from mlflow_stack.cli.prompts import confirm_deletion
from mlflow_stack.cli.stack import check_reachable, existing_runtime
from mlflow_stack.endpoints import Endpoints
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile, load_profile
from mlflow_stack.render import CONTAINER_ARTIFACTS
from mlflow_stack.runtime import Runtime
from mlflow_stack.secrets import load_secrets

KINDS = (("runs", "run"), ("experiments", "experiment"), ("logged_models", "logged model"))


def gc_options(older_than: str | None, experiments: Sequence[str]) -> list[str]:
    """The arguments of `mlflow_stack.gc` after --artifacts-root; checked here first, so that a
    bad age is one line before anything starts."""
    options = []
    if older_than:
        try:
            gc.age_milliseconds(older_than)
        except gc.Refused as exc:
            raise StackError(str(exc)) from None
        options += ["--older-than", older_than]
    for experiment in experiments:
        if not experiment.strip():
            raise StackError("--experiment needs an experiment ID or name")
        options += ["--experiment", experiment]
    return options


def local_command(profile: Profile, options: Sequence[str]) -> list[str]:
    """The gc process of the local runtime: no secret in it (the URI is in its environment)."""
    root = str(profile.layout.artifacts)
    return [sys.executable, "-m", "mlflow_stack.gc", "--artifacts-root", root, *options]


def local_environment(store_uri: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    env[gc.STORE_VARIABLE] = store_uri
    return env


def compose_arguments(options: Sequence[str]) -> list[str]:
    """`docker compose` arguments of the one-off gc container: the MLflow service's image,
    environment (its store URI) and artifacts volume, and `python -` reading mlflow_stack/gc.py
    on stdin, so the image needs no copy of it."""
    from mlflow_stack.runtime.compose import one_off_arguments

    return one_off_arguments("python", "-", "--artifacts-root", CONTAINER_ARTIFACTS, *options)


def parse_result(stdout: str) -> dict[str, int]:
    """The counts `mlflow_stack.gc` prints as its last line."""
    lines = stdout.strip().splitlines()
    try:
        counts = json.loads(lines[-1]) if lines else None
    except ValueError:
        counts = None
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        raise StackError("the garbage collection printed no result: run it again")
    return counts


def _error_line(stderr: str, returncode: int) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    detail = errors[-1].removeprefix("error: ") if errors else f"exit {returncode}"
    return f"garbage collection failed: {detail}"


def _run_local(profile: Profile, stack: Runtime, options: Sequence[str]) -> str:
    secrets = load_secrets(profile)
    with stack.database_endpoint() as endpoint:
        check_reachable(profile, endpoint)
        uri = Endpoints.of(profile).tracking_uri(secrets, endpoint)
        result = subprocess.run(
            local_command(profile, options),
            env=local_environment(uri),
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(_error_line(result.stderr, result.returncode))
    return result.stdout


def _run_compose(stack: Runtime, options: Sequence[str]) -> str:
    from mlflow_stack.runtime.compose import ComposeRuntime

    assert isinstance(stack, ComposeRuntime)  # noqa: S101 - make_runtime's docker runtime
    with Path(gc.__file__).open("rb") as script:
        result = stack.run(*compose_arguments(options), stdin=script, capture=True, check=False)
    stdout = (result.stdout or b"").decode(errors="replace")
    if result.returncode != 0:
        stderr = (result.stderr or b"").decode(errors="replace")
        raise StackError(_error_line(stderr, result.returncode))
    return stdout


def summary(counts: dict[str, int]) -> str:
    def count(kind: str, noun: str) -> str:
        n = counts.get(kind, 0)
        return f"{n} {noun}{'' if n == 1 else 's'}"

    removed = ", ".join(count(kind, noun) for kind, noun in KINDS)
    folders = counts.get("folders", 0)
    return f"removed {removed} ({folders} artifact folder{'' if folders == 1 else 's'})"


def collect(
    profile_name: str,
    older_than: str | None = None,
    experiments: Sequence[str] = (),
    yes: bool = False,
    runtime: str = "auto",
    interactive: bool | None = None,
) -> dict[str, int]:
    """Empty the profile's trash (all of it, or what is older than `older_than`, or only the
    given deleted experiments); print and return what was removed."""
    profile = load_profile(profile_name)
    options = gc_options(older_than, experiments)
    stack = existing_runtime(profile, runtime)
    scope = (
        f"the deleted experiments {', '.join(experiments)} (with their runs and models)"
        if experiments
        else "every deleted run, experiment and logged model"
    )
    age = f" deleted more than {older_than} ago" if older_than else ""
    confirm_deletion(
        f"Permanently delete {scope}{age} of profile {profile.name}, with their artifacts?",
        yes,
        interactive,
    )
    stdout = (
        _run_compose(stack, options)
        if stack.name == "docker"
        else (_run_local(profile, stack, options))
    )
    counts = parse_result(stdout)
    print(f"{summary(counts)} from the trash of profile {profile.name}")
    return counts
