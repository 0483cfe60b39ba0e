"""A circuit breaker for the model server, so a dead server costs microseconds per request, not timeouts.

Closed: calls go through. After `failures` consecutive failures it opens for `open_s`, refusing calls
at once; then one trial call is let through (half-open): success closes it, failure re-opens it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitOpen(Exception):
    """The breaker is open; `retry_after_s` says when a trial call will be allowed."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"model server circuit open for {retry_after_s:.1f} s more")
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """Counts consecutive failures of one dependency; thread-safe."""

    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.open_s = open_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at < self.open_s:
                return "open"
            return "half-open"

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go through now."""
        with self._lock:
            if self._opened_at is None:
                return
            remaining = self.open_s - (self._clock() - self._opened_at)
            if remaining > 0:
                raise CircuitOpen(remaining)
            if self._trial_running:
                raise CircuitOpen(min(1.0, self.open_s))
            self._trial_running = True

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            self._trial_running = False
            if self._opened_at is not None or self._consecutive >= self.failures:
                self._opened_at = self._clock()

    def record_neutral(self) -> None:
        """A call that ended without telling anything about the server's health (e.g. a bad request)."""
        with self._lock:
            self._trial_running = False
