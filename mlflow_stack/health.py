"""Probes and waits: is the MLflow server up, does it authenticate, how long did a step take."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import requests

from mlflow_stack.endpoints import Endpoints
from mlflow_stack.profile import Profile


def mlflow_url(profile: Profile) -> str:
    """The MLflow server as this machine reaches it (mlflow_stack.endpoints derives it)."""
    return Endpoints.of(profile).mlflow_url


def mlflow_is_healthy(profile: Profile, timeout: float = 2) -> bool:
    try:
        response = requests.get(
            f"{mlflow_url(profile)}/health", timeout=timeout, verify=Endpoints.of(profile).verify
        )
    except requests.RequestException:
        return False
    return response.status_code == 200


def mlflow_accepts(profile: Profile, username: str, password: str, timeout: float = 10) -> bool:
    """An authenticated request, so that a healthy server that refuses the admin is noticed."""
    try:
        response = requests.post(
            f"{mlflow_url(profile)}/api/2.0/mlflow/experiments/search",
            json={"max_results": 1},
            auth=(username, password),
            timeout=timeout,
            verify=Endpoints.of(profile).verify,
        )
    except requests.RequestException:
        return False
    return response.status_code == 200


@dataclass
class Progress:
    """Prints which step runs and the time elapsed since the command started."""

    started: float = field(default_factory=time.monotonic)
    stream: TextIO = sys.stdout

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, message: str) -> None:
        print(f"[{self.elapsed():5.1f}s] {message}", file=self.stream, flush=True)


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    progress: Progress | None = None,
    label: str = "",
    interval: float = 0.25,
    report_every: float = 5.0,
) -> bool:
    """Poll `check` until it is true or `timeout` passes; reports progress every few seconds."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + report_every
    while True:
        if check():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if progress and label and now >= next_report:
            progress.step(f"still waiting for {label}")
            next_report = now + report_every
        time.sleep(interval)
