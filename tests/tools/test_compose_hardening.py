"""Hardening of the rendered Compose stack, read back through the real Compose v2 binary.

Every profile is rendered into a scratch MLFLOW_STACK_HOME and `docker compose config --format
json` (no engine needed) says what Docker would actually run: who the image runs as, which
privileges and mounts the services get, what is published where, and that no secret sits in a
command line.
"""

from __future__ import annotations

import json
import re

import pytest

from mlflow_stack import render
from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.validate import run_compose_config
from tests.rendering import service_argv

PROFILES = ("dev", "ci", "demo")
# Where each service keeps data that must outlive its container.
DATA_TARGETS = {"postgres": "/var/lib/postgresql", "mlflow": render.CONTAINER_ARTIFACTS}


def rendered(name: str) -> tuple[object, dict]:
    profile = load_profile(name)
    render_profile(profile)
    return profile, json.loads(run_compose_config(profile.state_dir, "--format", "json"))


@pytest.fixture(params=PROFILES)
def stack(request, stack_home):
    return rendered(request.param)


def secret_values(profile) -> list[str]:
    values = parse_env_file(profile.state_dir / "secrets.env").values()
    assert values, "secrets.env holds no secret"
    return [value for value in values if value]


def last_user(dockerfile: str) -> str:
    users = [
        line.split(None, 1)[1].strip()
        for line in dockerfile.splitlines()
        if re.match(r"^\s*USER\s+\S", line, flags=re.IGNORECASE)
    ]
    assert users, "the Dockerfile never switches away from root (no USER instruction)"
    return users[-1]


def test_the_mlflow_image_runs_as_a_numeric_non_root_user(stack):
    profile, _ = stack
    user = last_user((profile.state_dir / StackLayout.DOCKERFILE).read_text())
    uid, _, gid = user.partition(":")
    # Numeric: Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit(), f"USER {user}: not numeric"
    assert int(uid) != 0, f"USER {user}: root"
    if gid:
        assert gid.isdigit() and int(gid) != 0, f"USER {user}: root group"


def test_the_mlflow_image_does_not_switch_back_to_root_after_the_last_user(stack):
    profile, _ = stack
    lines = (profile.state_dir / StackLayout.DOCKERFILE).read_text().splitlines()
    users = [i for i, line in enumerate(lines) if line.strip().upper().startswith("USER ")]
    assert users, "the Dockerfile never switches away from root (no USER instruction)"
    last = users[-1]
    # A RUN after the last USER runs as that user, fine; a later stage (FROM) would reset it.
    assert not any(line.strip().upper().startswith("FROM ") for line in lines[last:])


def test_every_service_has_no_new_privileges(stack):
    _, config = stack
    assert config["services"], "no services"
    for name, service in config["services"].items():
        assert "no-new-privileges:true" in (service.get("security_opt") or []), name


def test_every_service_has_a_healthcheck_and_a_restart_policy(stack):
    _, config = stack
    for name, service in config["services"].items():
        check = service.get("healthcheck") or {}
        assert not check.get("disable"), name
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name


def test_configuration_bind_mounts_are_read_only(stack):
    _, config = stack
    binds = {
        (name, mount["target"]): mount
        for name, service in config["services"].items()
        for mount in service.get("volumes") or []
        if mount["type"] == "bind"
    }
    assert ("postgres", "/docker-entrypoint-initdb.d") in binds
    for key, mount in binds.items():
        # Nothing the stack binds in from the host may be written by a container.
        assert mount.get("read_only") is True, key


def test_data_lives_in_named_volumes(stack):
    _, config = stack
    declared = config.get("volumes") or {}
    for name, target in DATA_TARGETS.items():
        mounts = [m for m in config["services"][name].get("volumes") or [] if m["target"] == target]
        assert len(mounts) == 1, (name, target)
        assert mounts[0]["type"] == "volume", (name, mounts[0])
        assert mounts[0]["source"] in declared, (name, mounts[0]["source"])


def test_the_mlflow_container_has_a_read_only_root_file_system(stack):
    _, config = stack
    assert config["services"]["mlflow"].get("read_only") is True


def test_postgres_is_published_only_in_dev_and_only_on_loopback(stack):
    profile, config = stack
    ports = config["services"]["postgres"].get("ports") or []
    if profile.name == "dev":
        assert ports, "dev publishes PostgreSQL for db.* tasks"
        for port in ports:
            assert port.get("host_ip") == "127.0.0.1", port
    else:
        assert ports == [], f"{profile.name} publishes PostgreSQL: {ports}"
    for port in config["services"]["mlflow"].get("ports") or []:
        # MLflow is published on the profile's bind_address only (never all interfaces).
        assert port.get("host_ip") == profile.bind_address, port
        assert port.get("host_ip") not in (None, "", "0.0.0.0", "::"), port  # noqa: S104


def test_no_secret_in_any_command_entrypoint_or_healthcheck(stack):
    profile, config = stack
    secrets = secret_values(profile)
    for name, service in config["services"].items():
        joined = service_argv(service)
        for secret in secrets:
            assert secret not in joined, f"a secret is on the command line of {name}"


def test_the_image_bakes_in_no_secret(stack):
    profile, _ = stack
    dockerfile = (profile.state_dir / StackLayout.DOCKERFILE).read_text()
    for secret in secret_values(profile):
        assert secret not in dockerfile
