"""What a personal access token looks like, how it is hashed, and when it is usable.

Pure functions only (no database, no Flask), so the hook and the store agree on one
definition and the rules are unit-testable on their own.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import overload

# The prefix lets the hook reject foreign bearer tokens without a database round trip
# and lets secret scanners recognise a leaked token.
TOKEN_PREFIX = "mlst_"  # noqa: S105 (a prefix, not a secret)
# 32 random bytes = 256 bits: guessing is hopeless, so a fast hash is enough (a slow,
# salted hash would only add latency to every request).
TOKEN_RANDOM_BYTES = 32
# Generated tokens are 48 characters; anything far longer is not ours and is refused
# before it is hashed.
MAX_TOKEN_LENGTH = 128

ACTIVE = "active"
REVOKED = "revoked"
EXPIRED = "expired"


def generate_token() -> str:
    """A new plaintext token. It is shown to the user once and never stored."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def hash_token(token: str) -> str:
    """The value stored in ``token_hash``: sha256 hex of the whole token string."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(candidate: str | None) -> bool:
    """Whether a bearer credential can be one of ours (cheap pre-check, no lookup)."""
    return (
        candidate is not None
        and candidate.startswith(TOKEN_PREFIX)
        and len(TOKEN_PREFIX) < len(candidate) <= MAX_TOKEN_LENGTH
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
@overload
def as_utc(moment: datetime | None) -> datetime | None: ...


def as_utc(moment: datetime | None) -> datetime | None:
    """Timezone-aware UTC. SQLite hands back naive datetimes; we only ever write UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def token_state(
    expires_at: datetime | None, revoked_at: datetime | None, now: datetime | None = None
) -> str:
    """``active``, ``revoked`` or ``expired``. Revocation wins over expiry; a token
    expires at its ``expires_at`` instant (not one tick later)."""
    if revoked_at is not None:
        return REVOKED
    now = as_utc(now) if now is not None else utcnow()
    expires_at = as_utc(expires_at)
    if expires_at is not None and now >= expires_at:
        return EXPIRED
    return ACTIVE
