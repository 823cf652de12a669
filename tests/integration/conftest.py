"""The integration tier: a real PostgreSQL and MLflow through the local runtime."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stacks import Stack, make_stack
from tests.throwaway_postgres import postgres  # noqa: F401 - a fixture for this tier


def _stack_up(integration_home, profile: str) -> Iterator[Stack]:
    stack = make_stack(integration_home, profile)
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)


@pytest.fixture(scope="module")
def ci_stack(integration_home):
    """The ci profile, up for one module."""
    yield from _stack_up(integration_home, "ci")


@pytest.fixture(scope="module")
def demo(integration_home):
    """The demo profile (NO_PERMISSIONS by default), up for one module."""
    yield from _stack_up(integration_home, "demo")
