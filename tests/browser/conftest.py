"""The browser tier: a real headless Chromium (Debian's chromium + chromium-driver) against real
stacks on the local runtime.

With the programs missing, the session installs them itself only where that is allowed (CI=true,
or MLFLOW_STACK_INSTALL_BROWSER=1, as root on Debian: mlflow_stack/browser.py). Anywhere else
the tier is skipped, loudly; in CI a skip is a failure. Selenium is handed both paths, so its
Selenium Manager never runs and nothing is downloaded. Screenshots (and each page's HTML) go to
MLFLOW_STACK_BROWSER_SCREENSHOTS (default: <tmp>/mlflow-stack-browser); a failing test leaves one
of the page it failed on.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from mlflow_stack.browser import Browser, chromium_arguments, ensure_browser, may_install_browser
from mlflow_stack.errors import StackError
from tests.browser.ui import Page

# Selenium Manager is skipped when the driver's path is given; offline, it could not download
# anything even if some code path did run it.
os.environ["SE_OFFLINE"] = "true"

SCREENSHOTS = Path(
    os.environ.get("MLFLOW_STACK_BROWSER_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / "mlflow-stack-browser"
)
_SUMMARY: list[str] = []
_TAKEN: list[Path] = []


@pytest.fixture(scope="session")
def browser_programs() -> Browser:
    try:
        found = ensure_browser(allow_install=may_install_browser())
    except StackError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Chromium for the browser tier: {exc}", pytrace=False)
        pytest.skip(f"no Chromium: {exc}")
    how = "installed with apt-get" if found.installed else "already installed"
    _SUMMARY.append(f"{found.version} ({found.chromium}, {found.chromedriver}; {how})")
    return found


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.browser_failed = report.failed
    return report


@pytest.fixture
def trusted_keys() -> tuple[str, ...]:
    """Public-key pins of the stack servers a module's browser accepts (a module whose stack
    speaks HTTPS with a self-signed certificate overrides this)."""
    return ()


@pytest.fixture
def chrome(browser_programs, tmp_path, request, trusted_keys):
    """A fresh headless Chromium (own profile folder) for one test, quit at its end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(browser_programs.chromium)
    for argument in chromium_arguments(tmp_path / "chromium-profile", trusted_keys):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(
        executable_path=str(browser_programs.chromedriver),
        log_output=str(tmp_path / "chromedriver.log"),
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    started = time.monotonic()
    try:
        yield Page(driver, SCREENSHOTS, _TAKEN)
    finally:
        try:
            if getattr(request.node, "browser_failed", False):
                Page(driver, SCREENSHOTS, _TAKEN).snapshot(f"{request.node.name}-failed")
        finally:
            driver.quit()
        _SUMMARY.append(f"{request.node.name}: browser part {time.monotonic() - started:.1f} s")


def pytest_terminal_summary(terminalreporter):
    if _SUMMARY or _TAKEN:
        terminalreporter.section("browser tier: Chromium, times, screenshots")
        for line in _SUMMARY:
            terminalreporter.write_line(line)
        for path in _TAKEN:
            terminalreporter.write_line(f"screenshot: {path}")
