"""Per-client rate limiting for the guest endpoint: a token bucket per client IP.

The client IP is the socket peer, or, only when the peer is a configured trusted proxy, the nearest
untrusted address in X-Forwarded-For (so a client cannot pick its own bucket by sending the header).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from orchestrator.errors import RateLimited

# Buckets kept at most; the least recently used are dropped first (a full bucket costs nothing to drop).
MAX_BUCKETS = 100_000


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """The address to rate-limit: trust X-Forwarded-For only when the peer is a trusted proxy."""
    peer = remote_addr or "unknown"
    if not forwarded_for or not _trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    # Walk from the nearest hop outwards, skipping our own proxies.
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, trusted_proxies: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in trusted_proxies:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


class RateLimiter:
    """Token buckets: `per_minute` sustained, `burst` at once, per key; thread-safe."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, key: str) -> None:
        """Take one token for `key`; raises RateLimited with Retry-After when none is left."""
        now = self._clock()
        with self._lock:
            tokens, stamp = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait_s = (1.0 - tokens) / self.rate_per_s
                raise RateLimited(retry_after_s=wait_s)
            self._buckets[key] = (tokens - 1.0, now)
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
