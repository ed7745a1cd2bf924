"""Login throttling: failed attempts per e-mail and per client address in a sliding window,
counted in the database, so that every web process sees the same count and nothing grows in
memory. Keys are stored as SHA-256 hashes (no e-mail or address at rest)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.auth.models import LoginFailure
from flowstudio.db import utcnow


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class LoginRateLimiter:
    """At most `attempts` failures per key within `window_seconds`."""

    def __init__(self, *, attempts: int, window_seconds: float = 60.0) -> None:
        self.attempts = attempts
        self.window = timedelta(seconds=window_seconds)

    async def retry_after(self, db: AsyncSession, *keys: str) -> float | None:
        """Seconds until another attempt is allowed, or None when it is allowed now."""
        now = utcnow()
        rows = await db.execute(
            select(LoginFailure.key_hash, func.count(), func.min(LoginFailure.failed_at))
            .where(
                LoginFailure.key_hash.in_([_hash(k) for k in keys]),
                LoginFailure.failed_at > now - self.window,
            )
            .group_by(LoginFailure.key_hash)
        )
        waits = []
        for _key, count, oldest in rows:
            if count >= self.attempts:
                waits.append((oldest + self.window - now).total_seconds())
        return max(max(waits), 0.0) if waits else None

    async def record_failure(self, db: AsyncSession, *keys: str) -> None:
        """Count a failure against each key, in the caller's transaction, and forget failures
        older than the window (an index range: the table holds one window at most)."""
        now = utcnow()
        await db.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - self.window))
        await db.execute(
            insert(LoginFailure), [{"key_hash": _hash(k), "failed_at": now} for k in keys]
        )

    async def reset(self, db: AsyncSession, *keys: str) -> None:
        await db.execute(
            delete(LoginFailure).where(LoginFailure.key_hash.in_([_hash(k) for k in keys]))
        )
