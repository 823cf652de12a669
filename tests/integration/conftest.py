"""The integration tier: a real PostgreSQL and MLflow through the local runtime."""

from __future__ import annotations

import pytest

from tests.stacks import make_stack
from tests.throwaway_postgres import postgres  # noqa: F401 - a fixture for this tier


@pytest.fixture(scope="module")
def ci_stack(integration_home):
    stack = make_stack(integration_home, "ci")
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)


@pytest.fixture(scope="module")
def demo(integration_home):
    """The demo profile (NO_PERMISSIONS by default), up for one module."""
    stack = make_stack(integration_home, "demo")
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)
