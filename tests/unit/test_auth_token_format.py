"""Token format, hashing and the active/expired/revoked rule."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlflow_stack.auth.token_format import (
    ACTIVE,
    EXPIRED,
    MAX_TOKEN_LENGTH,
    REVOKED,
    TOKEN_PREFIX,
    as_utc,
    generate_token,
    hash_token,
    looks_like_token,
    token_state,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_generated_tokens_are_prefixed_random_and_urlsafe():
    tokens = {generate_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert token.startswith(TOKEN_PREFIX)
        body = token[len(TOKEN_PREFIX) :]
        assert len(body) == 43  # 32 random bytes, base64url without padding
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert looks_like_token(token)


def test_hash_is_sha256_hex_of_the_whole_token():
    token = "mlst_example"
    assert hash_token(token) == hashlib.sha256(b"mlst_example").hexdigest()
    assert len(hash_token(generate_token())) == 64
    assert hash_token("mlst_a") != hash_token("mlst_b")


@pytest.mark.parametrize(
    "candidate",
    [None, "", "mlst_", "ghp_abcdef", "MLST_abc", " mlst_abc", "mlst_" + "x" * MAX_TOKEN_LENGTH],
)
def test_foreign_or_malformed_bearer_values_are_not_tokens(candidate):
    assert not looks_like_token(candidate)


def test_as_utc_treats_naive_as_utc_and_converts_aware():
    assert as_utc(None) is None
    assert as_utc(datetime(2030, 1, 1, 12, 0)) == NOW
    plus_two = timezone(timedelta(hours=2))
    converted = as_utc(datetime(2030, 1, 1, 14, 0, tzinfo=plus_two))
    assert converted == NOW
    assert converted.tzinfo == UTC


def test_token_without_expiry_or_revocation_is_active():
    assert token_state(None, None, NOW) == ACTIVE


def test_token_expires_exactly_at_expires_at():
    assert token_state(NOW + timedelta(microseconds=1), None, NOW) == ACTIVE
    assert token_state(NOW, None, NOW) == EXPIRED
    assert token_state(NOW - timedelta(days=1), None, NOW) == EXPIRED


def test_revocation_wins_over_expiry_and_future_expiry():
    assert token_state(NOW + timedelta(days=1), NOW, NOW) == REVOKED
    assert token_state(NOW - timedelta(days=1), NOW, NOW) == REVOKED


def test_naive_database_timestamps_compare_as_utc():
    # SQLite returns naive datetimes for what we wrote as UTC.
    naive_past = datetime(2030, 1, 1, 11, 59)
    assert token_state(naive_past, None, NOW) == EXPIRED
    assert token_state(datetime(2030, 1, 1, 12, 1), None, NOW) == ACTIVE


def test_default_now_is_the_current_time():
    assert token_state(datetime.now(UTC) - timedelta(seconds=1), None) == EXPIRED
    assert token_state(datetime.now(UTC) + timedelta(hours=1), None) == ACTIVE
