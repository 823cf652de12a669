"""The verified-password cache: one slow hash per credential, never stale."""

from __future__ import annotations

import statistics
import time

import pytest
from werkzeug.security import generate_password_hash

from mlflow_stack.auth import password_cache
from mlflow_stack.auth.password_cache import VerifiedPasswords

# A cheap method keeps these tests fast; the timing test below uses the default method, scrypt.
FAST = "pbkdf2:sha256:1000"


@pytest.fixture
def slow_checks(monkeypatch):
    """Count the real (slow) hash checks."""
    calls: list[str] = []
    real = password_cache.check_password_hash

    def counting(stored_hash, password):
        calls.append(password)
        return real(stored_hash, password)

    monkeypatch.setattr(password_cache, "check_password_hash", counting)
    return calls


def test_a_verified_password_is_not_hashed_again(slow_checks):
    cache = VerifiedPasswords()
    stored = generate_password_hash("correct horse", method=FAST)

    assert all(cache.verify("alice", stored, "correct horse") for _ in range(5))
    assert slow_checks == ["correct horse"]


def test_wrong_passwords_are_checked_every_time_and_never_cached(slow_checks):
    cache = VerifiedPasswords()
    stored = generate_password_hash("correct horse", method=FAST)

    assert not cache.verify("alice", stored, "guess")
    assert not cache.verify("alice", stored, "guess")
    assert len(slow_checks) == 2
    assert len(cache) == 0


def test_a_changed_stored_hash_misses_the_cache(slow_checks):
    cache = VerifiedPasswords()
    old = generate_password_hash("old password", method=FAST)
    new = generate_password_hash("new password", method=FAST)
    assert cache.verify("alice", old, "old password")

    # The database now holds the new hash: the old password must fail at once.
    assert not cache.verify("alice", new, "old password")
    assert cache.verify("alice", new, "new password")


def test_the_cache_is_per_username(slow_checks):
    cache = VerifiedPasswords()
    stored = generate_password_hash("shared", method=FAST)
    assert cache.verify("alice", stored, "shared")
    assert cache.verify("bob", stored, "shared")
    assert len(slow_checks) == 2


def test_cache_key_holds_no_plaintext_password():
    cache = VerifiedPasswords()
    stored = generate_password_hash("plaintext-pw", method=FAST)
    cache.verify("alice", stored, "plaintext-pw")
    [key] = list(cache._verified.keys())
    assert "plaintext-pw" not in repr(key)
    assert b"plaintext-pw" not in key[2]


def test_hmac_key_differs_per_process_instance():
    assert VerifiedPasswords()._digest("pw") != VerifiedPasswords()._digest("pw")


def test_cache_is_bounded():
    cache = VerifiedPasswords(max_entries=3)
    stored = generate_password_hash("pw", method=FAST)
    for i in range(10):
        cache.verify(f"user{i}", stored, "pw")
    assert len(cache) == 3


@pytest.mark.parametrize("stored_hash", ["not-a-hash", "", "pbkdf2:sha256:1000$salt"])
def test_malformed_stored_hash_is_a_failed_login(stored_hash):
    assert not VerifiedPasswords().verify("alice", stored_hash, "pw")


def test_unknown_user_costs_about_as_much_as_a_wrong_password(monkeypatch):
    # werkzeug's default method (MLflow's create_user) at an eighth of its cost: scrypt with
    # n = 2**12 instead of 2**15, on both sides. A burn that used any other method or cost than
    # the default would still be far off the ratio.
    cheaper_default = "scrypt:4096:8:1"
    default_method = generate_password_hash.__defaults__[0]
    assert default_method == "scrypt"
    real = password_cache.generate_password_hash
    monkeypatch.setattr(
        password_cache,
        "generate_password_hash",
        lambda password, method=default_method, **kw: real(
            password, method=cheaper_default if method == default_method else method, **kw
        ),
    )
    cache = VerifiedPasswords()
    stored = generate_password_hash("the real password", method=cheaper_default)
    cache.burn_equivalent_time("warm-up")  # first call also builds the dummy hash

    def median_seconds(action) -> float:
        # This thread's CPU time: what the checks cost, whatever else the machine runs.
        samples = []
        for _ in range(5):
            start = time.thread_time()
            action()
            samples.append(time.thread_time() - start)
        return statistics.median(samples)

    wrong_password = median_seconds(lambda: cache.verify("alice", stored, "wrong"))
    unknown_user = median_seconds(lambda: cache.burn_equivalent_time("wrong"))
    assert 0.5 < unknown_user / wrong_password < 2.0
