"""A real Docker engine for the compose tier: the one that answers, else one this session starts.

With no engine answering, the session installs Debian's docker.io and starts dockerd itself
only where that is allowed (CI=true, or MLFLOW_STACK_START_ENGINE=1, as root on Debian), and
stops it by pid at the end. Anywhere else the tier is skipped, loudly; in CI a skip is a failure.
Images the compose file names that cannot be pulled are replaced by local stand-ins built from
a bootstrapped Debian (mlflow_stack/standins.py); the summary says which were used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlflow_stack.profile import load_profile

HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
_IMAGES: dict[str, str] = {}
_ENGINE: list[str] = []
FIGURES: dict[str, float] = {}  # filled by test_compose_timings


def host_ca_bundle() -> str | None:
    """The CA bundle this machine trusts: behind a TLS-intercepting proxy, builds need it."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        *HOST_CA_BUNDLES,
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session", autouse=True)
def docker_engine():
    from mlflow_stack.engine import ensure_engine, may_start_engine, stop_engine
    from mlflow_stack.errors import StackError

    try:
        started = ensure_engine(allow_install=may_start_engine())
    except StackError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a Docker engine for the compose tier: {exc}", pytrace=False)
        pytest.skip(f"no Docker engine: {exc}")
    _ENGINE.append(f"started dockerd (pid {started.pid})" if started else "engine already running")
    try:
        yield started
    finally:
        if started is not None:
            stop_engine(started)


@pytest.fixture(scope="session")
def compose_images(docker_engine):
    """The images every profile's compose file names: present, pulled, or local stand-ins."""
    from mlflow_stack.standins import ensure_images

    base = load_profile("ci")
    ca_bundle = host_ca_bundle()
    _IMAGES.update(
        ensure_images(
            base.postgres_image, base.python_image, Path(ca_bundle) if ca_bundle else None
        )
    )
    return dict(_IMAGES)


def pytest_terminal_summary(terminalreporter):
    if _ENGINE or _IMAGES or FIGURES:
        terminalreporter.section("compose tier: engine, images, start times")
        for line in _ENGINE:
            terminalreporter.write_line(line)
        for image, origin in sorted(_IMAGES.items()):
            terminalreporter.write_line(f"{image}: {origin}")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
