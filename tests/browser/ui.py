"""One headless Chromium driven by Selenium, and the MLflow UI's landmarks it looks for.

Selectors are the UI's own stable hooks, not its generated CSS classes: the account menu's
trigger is the sidebar button labelled "Account menu for <user>" (MLflow 3.17's sidebar), its
items carry `data-component-id` (mlflow.sidebar.account/manage/logout), the experiments table's
links carry `data-testid="experiment-list-item-link"`; the provider's forms are plain HTML forms
(inputs named login and password; the sign-out button named logout).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from mlflow_stack.auth.sso import UI_LOGOUT_USER_PREFIX

ACCOUNT_MENU = (By.CSS_SELECTOR, "button[aria-label^='Account menu for']")
MENU_ITEM = "[role='menuitem'][data-component-id='{}']"
LOGOUT_ITEM = (By.CSS_SELECTOR, MENU_ITEM.format("mlflow.sidebar.logout"))
EXPERIMENT_LINK = (By.CSS_SELECTOR, "a[data-testid='experiment-list-item-link']")
LOGIN_FIELD = (By.NAME, "login")
PASSWORD_FIELD = (By.NAME, "password")
SUBMIT = (By.CSS_SELECTOR, "button[type='submit']")
SIGN_OUT = (By.CSS_SELECTOR, "button[name='logout'][value='yes']")
API_PREFIXES = ("/api/", "/ajax-api/")


class Page:
    def __init__(self, driver: WebDriver, screenshots: Path, taken: list[Path]) -> None:
        self.driver = driver
        self.screenshots = screenshots
        self.taken = taken
        self._events: list[dict[str, Any]] = []
        driver.execute_cdp_cmd("Network.enable", {})

    # -- driving ---------------------------------------------------------------------------
    def open(self, url: str) -> None:
        self.driver.get(url)

    def send_basic_auth(self, username: str, password: str) -> None:
        """An Authorization header on every request of this browser (CDP). Credentials in the
        URL would do for the page itself, but the UI builds its API URLs from
        window.location.href and fetch() refuses URLs that carry credentials."""
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )

    def wait(self, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
        return WebDriverWait(self.driver, timeout).until(condition)

    def visible(self, locator: tuple[str, str], timeout: float = 30) -> WebElement:
        return self.wait(EC.visibility_of_element_located(locator), timeout)

    def clickable(self, locator: tuple[str, str], timeout: float = 30) -> WebElement:
        return self.wait(EC.element_to_be_clickable(locator), timeout)

    def at(self, origin: str, path: str | None = None, timeout: float = 30) -> None:
        """Wait until the browser shows a page of `origin` (and `path`, if given)."""

        def arrived(driver: WebDriver) -> bool:
            current = urlsplit(driver.current_url)
            same = f"{current.scheme}://{current.netloc}" == origin
            return same and (path is None or current.path == path)

        try:
            self.wait(arrived, timeout)
        except Exception as exc:
            raise AssertionError(
                f"expected {origin}{path or ''}, the browser is at {self.driver.current_url}"
            ) from exc

    def snapshot(self, name: str) -> Path:
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        (self.screenshots / f"{name}.html").write_text(self.driver.page_source)
        self.taken.append(path)
        return path

    # -- the MLflow UI -----------------------------------------------------------------------
    def account_menu(self) -> WebElement:
        return self.clickable(ACCOUNT_MENU, timeout=60)

    def signed_in_user(self) -> str:
        """The user the sidebar shows (the trigger holds an avatar initial, then the name)."""
        return self.account_menu().find_element(By.TAG_NAME, "span").text.strip()

    def open_account_menu(self) -> dict[str, WebElement]:
        """Open the sidebar's account menu: its visible items by their text."""
        self.account_menu().click()
        self.visible((By.CSS_SELECTOR, "[role='menu'] [role='menuitem']"))
        items = self.driver.find_elements(By.CSS_SELECTOR, "[role='menu'] [role='menuitem']")
        return {item.text.strip(): item for item in items if item.is_displayed()}

    def experiment_names(self) -> list[str]:
        """The Home page's recent experiments, once the list has rendered."""
        self.visible(EXPERIMENT_LINK, timeout=60)
        return [link.text for link in self.driver.find_elements(*EXPERIMENT_LINK)]

    # -- the provider's forms ----------------------------------------------------------------
    def sign_in(self, username: str, password: str) -> None:
        self.visible(LOGIN_FIELD).send_keys(username)
        self.driver.find_element(*PASSWORD_FIELD).send_keys(password)
        self.driver.find_element(*SUBMIT).click()

    # -- what the network saw ----------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        """Chromium's network events so far (the driver hands each out once: kept here)."""
        for entry in self.driver.get_log("performance"):
            self._events.append(json.loads(entry["message"])["message"])
        return self._events

    def api_answers(self, origin: str) -> list[tuple[int, str, str]]:
        """(status, MIME type, URL) of every answer to an API call of the UI on `origin`, and
        each redirect such a call got (an API call must never be sent to a login page)."""
        answers = []
        for event in self.events():
            params = event.get("params", {})
            if event.get("method") == "Network.responseReceived":
                response = params["response"]
                url = response["url"]
                status, mime = response["status"], response.get("mimeType", "")
            elif event.get("method") == "Network.requestWillBeSent" and params.get(
                "redirectResponse"
            ):
                response = params["redirectResponse"]
                url, status, mime = response["url"], response["status"], "redirect"
            else:
                continue
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.hostname}:{parts.port}" != origin:
                continue
            if parts.path.startswith(API_PREFIXES):
                answers.append((status, mime, url))
        return answers

    def logout_probe_answers(self, origin: str) -> list[tuple[int, str, str]]:
        """The answers to the UI's Logout: users/current asked as a made-up user (see below)."""
        return [a for a in self.api_answers(origin) if _is_logout_probe(a[2])]

    def wrong_api_answers(self, origin: str) -> list[tuple[int, str, str]]:
        """API answers that were not JSON 200s, leaving out the UI's logout probe (it asks
        users/current as a made-up user, to make the browser forget credentials)."""
        return [
            answer
            for answer in self.api_answers(origin)
            if (answer[0], answer[1]) != (200, "application/json")
            and not _is_logout_probe(answer[2])
        ]


def _is_logout_probe(url: str) -> bool:
    return (urlsplit(url).username or "").startswith(UI_LOGOUT_USER_PREFIX)
