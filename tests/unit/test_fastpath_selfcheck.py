"""The start-up self-check: the MLflow internals the fast path mirrors are the reviewed ones."""

from __future__ import annotations

import pytest

from mlflow_stack.auth import selfcheck
from mlflow_stack.errors import StackError


def test_the_installed_mlflow_is_the_reviewed_one():
    """Fails on an MLflow version bump until fastpath.py is reviewed against the new release
    and FINGERPRINTS (printed below on failure) is updated."""
    import mlflow

    current = selfcheck.current_fingerprints()
    table = "".join(f'    "{name}": "{digest}",\n' for name, digest in current.items())
    assert mlflow.__version__ == selfcheck.REVIEWED_MLFLOW_VERSION
    assert current == selfcheck.FINGERPRINTS, "new FINGERPRINTS after review:\n" + table
    assert "missing" not in current.values()
    selfcheck.check()


def test_a_changed_internal_is_refused_naming_the_version(monkeypatch):
    monkeypatch.setitem(selfcheck.FINGERPRINTS, "sender_is_admin", "0" * 16)
    with pytest.raises(StackError) as raised:
        selfcheck.check()
    message = str(raised.value)
    assert "MLflow 3.17.2" in message and "sender_is_admin" in message
    assert "\n" not in message


def test_another_mlflow_version_is_refused(monkeypatch):
    monkeypatch.setattr(selfcheck, "REVIEWED_MLFLOW_VERSION", "3.16.0")
    with pytest.raises(StackError, match=r"reviewed against MLflow 3\.16\.0.*runs MLflow 3\.17\.2"):
        selfcheck.check()
