"""Single sign-on in a real browser, on the sso profile (2 workers, the dev OpenID Provider on
the local runtime): a page load goes to the provider's login form; signed in, the UI shows the
user; the UI's own Logout ends the session here and at the provider, and the next page load
goes to the login form again."""

from __future__ import annotations

import pytest

from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.tls import public_key_pin
from tests.browser.ui import LOGIN_FIELD, SIGN_OUT
from tests.stacks import Stack, free_port, make_stack


@pytest.fixture(scope="module")
def sso_stack(integration_home, browser_programs) -> Stack:
    stack = make_stack(integration_home, "sso")
    stack.env["MLFLOW_STACK_OIDC_PROVIDER_PORT"] = str(free_port())
    stack.invoke("up", timeout=600)
    yield stack
    stack.invoke("down", check=False, timeout=300)


@pytest.fixture
def trusted_keys(sso_stack) -> tuple[str, ...]:
    """sso speaks HTTPS: the browser accepts its server's key, and only that."""
    assert sso_stack.tls == "self-signed"
    return (public_key_pin(StackLayout(sso_stack.state_dir).tls_dir / "server.crt"),)


def test_sso_login_logout_in_the_browser(sso_stack, chrome):
    ui = sso_stack.url
    assert ui.startswith("https://")
    provider = f"http://127.0.0.1:{sso_stack.env['MLFLOW_STACK_OIDC_PROVIDER_PORT']}"
    secrets = parse_env_file(sso_stack.state_dir / "secrets.env")

    chrome.open(ui + "/")
    chrome.at(provider)
    chrome.snapshot("provider-login-form")
    chrome.sign_in("alice", secrets["MLFLOW_STACK_OIDC_DEV_USER_PASSWORD"])

    chrome.account_menu()
    chrome.at(ui, "/")
    assert chrome.signed_in_user() == "alice"
    # The experiments list rendered: the UI's API calls got JSON, not the login page.
    assert "Default" in chrome.experiment_names()
    assert not chrome.wrong_api_answers(ui)
    chrome.snapshot("sso-logged-in")

    items = chrome.open_account_menu()
    assert "Logout" in items, items
    items["Logout"].click()
    # The UI logs out by asking users/current as a made-up user, then reloading: that first
    # answer must already end the session (Chromium sends the made-up credentials only after
    # a 401 challenge, so the request carries nothing but the session cookie).
    probe = chrome.wait(lambda _: chrome.logout_probe_answers(ui))
    assert probe[0][0] == 401, f"the UI's Logout did not end the session: {probe}"
    # The provider asks before it ends its own session (oidc-provider's end-session form).
    chrome.at(provider, "/session/end")
    chrome.snapshot("provider-sign-out-form")
    chrome.clickable(SIGN_OUT).click()
    chrome.at(ui, "/oidc/logged-out")

    chrome.open(ui + "/")
    chrome.at(provider)
    chrome.visible(LOGIN_FIELD)
    chrome.snapshot("provider-login-form-after-logout")
    assert not chrome.wrong_api_answers(ui)
