"""Login throttling: failed attempts per email and per client address in a sliding window."""

from __future__ import annotations

import time
from collections import defaultdict, deque


class LoginRateLimiter:
    """In-process; each web process throttles on its own (good enough against guessing)."""

    def __init__(self, *, attempts: int, window_seconds: float = 60.0) -> None:
        self.attempts = attempts
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str, now: float) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures

    def retry_after(self, *keys: str) -> float | None:
        """Seconds until another attempt is allowed, or None when it is allowed now."""
        now = time.monotonic()
        waits = []
        for key in keys:
            failures = self._trim(key, now)
            if len(failures) >= self.attempts:
                waits.append(failures[0] + self.window - now)
        return max(waits) if waits else None

    def record_failure(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            self._failures[key].append(now)

    def reset(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
