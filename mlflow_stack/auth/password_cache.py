"""Basic-auth password verification that pays the slow hash once per credential.

MLflow stores werkzeug password hashes (scrypt: ~0.1 s per check, by design) and its
default hook re-checks on every call, several times per request. We remember a
successful check under ``(username, stored_hash, HMAC(password))``: the stored hash is
re-read from the database on every request, so a changed password changes the key and
a deleted user has no stored hash at all. The cache can therefore never accept a
credential the database no longer would, on any worker, and needs no invalidation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from cachetools import LRUCache
from werkzeug.security import check_password_hash, generate_password_hash

# Distinct active credentials per worker; bounded so a credential-stuffing burst
# (which never gets cached anyway) or many users cannot grow memory without limit.
MAX_CACHED_CREDENTIALS = 10_000


class VerifiedPasswords:
    def __init__(self, max_entries: int = MAX_CACHED_CREDENTIALS) -> None:
        self._verified: LRUCache[tuple[str, str, bytes], bool] = LRUCache(maxsize=max_entries)
        # LRUCache is not thread-safe and Flask handlers run in a thread pool.
        self._lock = threading.Lock()
        # Per-process secret: the cache key holds no plaintext, and a memory dump does
        # not give an offline-guessable digest of the password.
        self._hmac_key = secrets.token_bytes(32)
        self._dummy_hash: str | None = None

    def verify(self, username: str, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash`` (the user's current hash)."""
        key = (username, stored_hash, self._digest(password))
        with self._lock:
            if self._verified.get(key):
                return True
        # The slow check runs outside the lock so different credentials verify in parallel.
        if not _check(stored_hash, password):
            return False  # failures are not cached: a wrong guess always costs a full check
        with self._lock:
            self._verified[key] = True
        return True

    def burn_equivalent_time(self, password: str) -> None:
        """Spend what a failed check costs, so an unknown username answers no faster
        than a known one with a wrong password (no username oracle through timing)."""
        if self._dummy_hash is None:
            # Same default method and cost as MLflow's create_user (werkzeug's default).
            self._dummy_hash = generate_password_hash(secrets.token_urlsafe(16))
        _check(self._dummy_hash, password)

    def __len__(self) -> int:
        return len(self._verified)

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._hmac_key, password.encode("utf-8"), hashlib.sha256).digest()


def _check(stored_hash: str, password: str) -> bool:
    try:
        return check_password_hash(stored_hash, password)
    except (ValueError, TypeError, AttributeError):
        # A malformed stored hash (e.g. edited by hand) is a failed login, not a 500.
        return False
