"""The start-up self-check: the MLflow internals the fast path mirrors are the reviewed ones."""

from __future__ import annotations

import pytest

from mlflow_stack.auth import selfcheck
from mlflow_stack.errors import StackError


@pytest.fixture(scope="module")
def installed_fingerprints() -> dict[str, str]:
    """The installed MLflow's fingerprints, read once (each read parses MLflow's sources)."""
    return selfcheck.current_fingerprints()


@pytest.fixture
def read_once(monkeypatch, installed_fingerprints):
    monkeypatch.setattr(selfcheck, "current_fingerprints", lambda: dict(installed_fingerprints))


def test_the_installed_mlflow_is_the_reviewed_one(installed_fingerprints):
    """Fails on an MLflow version bump until fastpath.py is reviewed against the new release
    and FINGERPRINTS (printed below on failure) is updated."""
    import mlflow

    current = installed_fingerprints
    table = "".join(f'    "{name}": "{digest}",\n' for name, digest in current.items())
    assert mlflow.__version__ == selfcheck.REVIEWED_MLFLOW_VERSION
    assert current == selfcheck.FINGERPRINTS, "new FINGERPRINTS after review:\n" + table
    assert "missing" not in current.values()
    selfcheck.check()


def test_a_changed_internal_is_refused_naming_the_version(monkeypatch, read_once):
    monkeypatch.setitem(selfcheck.FINGERPRINTS, "sender_is_admin", "0" * 16)
    with pytest.raises(StackError) as raised:
        selfcheck.check()
    message = str(raised.value)
    assert "MLflow 3.17.2" in message and "sender_is_admin" in message
    assert "\n" not in message


def test_another_mlflow_version_is_refused(monkeypatch, read_once):
    monkeypatch.setattr(selfcheck, "REVIEWED_MLFLOW_VERSION", "3.16.0")
    with pytest.raises(StackError, match=r"reviewed against MLflow 3\.16\.0.*runs MLflow 3\.17\.2"):
        selfcheck.check()


# --- which after-request handlers an admin skips (auth/admin_noops.py) ----------------------


def test_an_admin_skips_exactly_the_handlers_that_return_at_once_for_admins():
    from mlflow.server import auth as mlflow_auth

    from mlflow_stack.auth import admin_noops

    skipped = admin_noops.handlers(mlflow_auth)
    # `if sender_is_admin(): return` first, directly or through the one helper it calls.
    assert mlflow_auth.filter_search_experiments in skipped
    assert mlflow_auth.redact_trace_info_metadata in skipped
    # These write permissions for whoever created the resource, admins included.
    assert mlflow_auth.set_can_manage_experiment_permission not in skipped
    assert mlflow_auth.delete_scorer_permissions_cascade not in skipped


def test_a_handler_that_only_looks_like_an_admin_early_return_is_kept():
    from mlflow_stack.auth.admin_noops import returns_at_once_for_admins

    def sender_is_admin():
        return True

    def returns_a_value(resp):
        if sender_is_admin():
            return resp

    def checks_with_an_argument(resp):
        if sender_is_admin(resp):
            return

    def does_more_first(resp):
        resp.headers["x"] = "1"
        if sender_is_admin():
            return

    def returns_at_once(resp):
        """A docstring does not count as a statement."""
        if sender_is_admin():
            return
        resp.headers["x"] = "1"

    class Module:
        pass

    for handler in (returns_a_value, checks_with_an_argument, does_more_first, len):
        assert not returns_at_once_for_admins(Module, handler), handler
    assert returns_at_once_for_admins(Module, returns_at_once)


def test_no_module_of_the_package_is_over_about_400_lines():
    from pathlib import Path

    import mlflow_stack

    package = Path(mlflow_stack.__file__).parent
    lengths = {
        str(path.relative_to(package)): len(path.read_text(encoding="utf-8").splitlines())
        for path in package.rglob("*.py")
    }
    assert lengths["auth/fastpath.py"] < 400
    assert {name: n for name, n in lengths.items() if n > 405} == {}
