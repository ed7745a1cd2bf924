"""Password hashing (argon2id via pwdlib), opaque tokens and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

SESSION_TOKEN_BYTES = 32
API_TOKEN_PREFIX = "fs_"


class PasswordHasher:
    """argon2id hashing with a dummy hash so unknown emails cost as much as wrong passwords."""

    def __init__(self, *, time_cost: int, memory_cost: int) -> None:
        self._hash = PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost),))
        self._dummy = self._hash.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, password_hash: str | None) -> bool:
        if password_hash is None:
            self._hash.verify(password, self._dummy)
            return False
        return self._hash.verify(password, password_hash)


def new_session_token() -> str:
    return secrets.token_urlsafe(SESSION_TOKEN_BYTES)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(SESSION_TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_for(secret: bytes, session_token_hash: str) -> str:
    """The CSRF token is bound to the session: an HMAC of its hash, never stored."""
    return hmac.new(secret, b"csrf:" + session_token_hash.encode(), hashlib.sha256).hexdigest()


def csrf_matches(secret: bytes, session_token_hash: str, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(csrf_token_for(secret, session_token_hash), presented)
