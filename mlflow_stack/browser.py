"""Debian's Chromium and chromedriver for the browser tier (tests/browser): found, or installed.

Installing packages happens only when asked, as for the Docker engine (mlflow_stack/engine.py):
`may_install_browser()` is true on CI (CI=true) or with MLFLOW_STACK_INSTALL_BROWSER=1, and only
root on Debian can do it (apt-get install chromium chromium-driver). No browser is ever downloaded
from anywhere else: Selenium is given both paths, so its Selenium Manager never runs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow_stack.engine import apt_get, can_install
from mlflow_stack.errors import StackError

INSTALL_VARIABLE = "MLFLOW_STACK_INSTALL_BROWSER"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
# Headless, and quiet: nothing of its own is fetched (updates, sync, field trials, QUIC probes).
HEADLESS_ARGUMENTS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)
HOW_TO_GET_ONE = (
    "apt-get install chromium chromium-driver, or, as root on Debian, set "
    f"{INSTALL_VARIABLE}=1 to let the tier install them"
)


@dataclass(frozen=True)
class Browser:
    """The two programs Selenium is given, and whether this run installed them."""

    chromium: Path
    chromedriver: Path
    version: str
    installed: bool


def may_install_browser() -> bool:
    """True on CI (CI=true) or when MLFLOW_STACK_INSTALL_BROWSER=1 asks for it."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(INSTALL_VARIABLE) == "1"


def missing() -> list[str]:
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]


def ensure_browser(allow_install: bool) -> Browser:
    """Chromium and its driver from /usr/bin; installed with apt-get where that is allowed."""
    absent = missing()
    installed = False
    if absent:
        if not allow_install:
            raise StackError(f"{' and '.join(absent)} missing: {HOW_TO_GET_ONE}")
        if not can_install():
            raise StackError(
                f"{' and '.join(absent)} missing and this is not root on Debian: "
                "install chromium and chromium-driver"
            )
        apt_get("update")
        apt_get("install", "-y", *PACKAGES)
        installed = True
        if missing():
            raise StackError(f"apt-get installed {' '.join(PACKAGES)} but {missing()} are absent")
    return Browser(CHROMIUM, CHROMEDRIVER, version(CHROMIUM), installed)


def version(program: Path) -> str:
    """`chromium --version` (Debian's wrapper script prints its own warnings on stderr)."""
    try:
        result = subprocess.run(
            [str(program), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{program} --version failed: {exc}") from None
    if result.returncode != 0:
        raise StackError(f"{program} --version exited {result.returncode}: {result.stderr[-300:]}")
    return result.stdout.strip()


def chromium_arguments(user_data_dir: Path, trusted_keys: Sequence[str] = ()) -> list[str]:
    """The command-line switches of one headless browser with a profile folder of its own.

    `trusted_keys`: base64 SHA-256 hashes of server public keys (a stack's self-signed
    certificate) that the browser accepts without a CA it knows: that one key, not every
    certificate error (Chromium honours the switch only with --user-data-dir)."""
    arguments = [*HEADLESS_ARGUMENTS, f"--user-data-dir={user_data_dir}"]
    if trusted_keys:
        arguments.append(f"--ignore-certificate-errors-spki-list={','.join(trusted_keys)}")
    return arguments
