"""The MLflow UI of the ci profile (basic auth) in a real browser: signed in, it shows who is
signed in and offers Logout (users/current answers is_basic_auth: true)."""

from __future__ import annotations

import pytest

from mlflow_stack.files import parse_env_file
from tests.stacks import Stack, make_stack


@pytest.fixture(scope="module")
def ci_stack(integration_home, browser_programs) -> Stack:
    stack = make_stack(integration_home, "ci")
    stack.invoke("up")
    yield stack
    stack.invoke("down", check=False)


def test_a_basic_auth_user_sees_logout(ci_stack, chrome):
    ui = f"http://127.0.0.1:{ci_stack.env['MLFLOW_STACK_MLFLOW_PORT']}"
    password = parse_env_file(ci_stack.state_dir / "secrets.env")["MLFLOW_STACK_ADMIN_PASSWORD"]
    chrome.send_basic_auth("admin", password)
    chrome.open(ui + "/")

    account = chrome.account_menu()
    assert account.get_attribute("aria-label") == "Account menu for admin"
    assert chrome.signed_in_user() == "admin"
    assert "Default" in chrome.experiment_names()
    items = chrome.open_account_menu()
    assert {"Account", "Manage", "Logout"} <= set(items), items
    assert items["Logout"].get_attribute("data-component-id") == "mlflow.sidebar.logout"
    chrome.snapshot("basic-auth-account-menu")
    assert not chrome.wrong_api_answers(ui)
