"""Password hashing (argon2id): hashes, and checks that cost the same whether or not an account exists."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    """argon2id with the given parameters; every check costs one verification, a missing account too."""

    def __init__(self, *, time_cost: int, memory_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        # A hash of a random password, made on first need: an unknown account is checked against it, so
        # its answer takes as long as a wrong password's.
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def matches(self, stored: str, password: str) -> bool:
        """Whether `password` is the one `stored` hashes; False for a malformed hash too."""
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def match_nothing(self, password: str) -> None:
        """The work of `matches` for an account that does not exist."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self.matches(self._dummy_hash, password)

    def needs_rehash(self, stored: str) -> bool:
        """Whether `stored` was made with other parameters than ours (False for a malformed hash)."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return False
