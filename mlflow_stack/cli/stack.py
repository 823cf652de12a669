"""A profile's stack as the tasks after `up` meet it: its runtime, its auth database."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow_stack.endpoints import DatabaseEndpoint, Endpoints
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile
from mlflow_stack.runtime import Runtime, check_runtime, make_runtime, remembered_runtime
from mlflow_stack.secrets import load_secrets


def existing_runtime(profile: Profile, requested: str = "auto") -> Runtime:
    """The runtime of a stack that was brought up before (for down, status, logs, …)."""
    check_runtime(requested)
    if not profile.layout.compose_file.exists():
        raise StackError(
            f"profile {profile.name} has not been brought up: run `invoke up -p {profile.name}`"
        )
    name = requested if requested != "auto" else (remembered_runtime(profile) or "local")
    secrets = load_secrets(profile)
    return make_runtime(profile, secrets, name)


def is_running(profile: Profile, runtime_name: str) -> bool:
    """Whether the profile's stack was rendered and is up and healthy on that runtime."""
    if not profile.layout.compose_file.exists():
        return False
    secrets = load_secrets(profile)
    return make_runtime(profile, secrets, runtime_name).is_running()


@contextmanager
def auth_database(profile: Profile) -> Iterator[str]:
    """The URL of the stack's auth database as this machine reaches it, valid inside the block."""
    stack = existing_runtime(profile)
    secrets = load_secrets(profile)
    with stack.database_endpoint() as endpoint:
        check_reachable(profile, endpoint, "auth database")
        yield Endpoints.of(profile).auth_database_uri(secrets, endpoint)


def check_reachable(profile: Profile, endpoint: DatabaseEndpoint, what: str = "database") -> None:
    """A StackError naming `invoke up` unless `endpoint` accepts a TCP connection."""
    try:
        socket.create_connection((endpoint.host, endpoint.port), timeout=5).close()
    except OSError:
        raise StackError(
            f"the {what} of profile {profile.name} is not reachable on {endpoint}: "
            f"run `invoke up -p {profile.name}`"
        ) from None
