"""Per-client rate limiting for the guest endpoint: a token bucket per client IP, shared by all workers.

The buckets live in an anonymous shared memory map made when the app is built; gunicorn preloads the
app in its master, so every forked worker sees the same buckets and one client gets one budget, not
one per worker. A worker killed inside the shared lock cannot wedge the others: the lock is taken with
a short timeout, released when its recorded holder is dead, and otherwise the request fails open
(both counted in metrics). The client IP is the socket peer, or, only when the peer is a configured
trusted proxy, the nearest untrusted address in X-Forwarded-For (so a client cannot pick its own bucket).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import mmap
import multiprocessing
import os
import struct
import time
from collections.abc import Callable

from orchestrator.errors import RateLimited
from orchestrator.web import metrics
from orchestrator.web.processes import alive

logger = logging.getLogger(__name__)

# One slot: key hash (8 bytes, 0 = empty), tokens (double), last refill (double).
_SLOT = struct.Struct("<Qdd")
# Slots in the table; a full bucket is the same as no bucket, so stale slots are simply reused.
DEFAULT_SLOTS = 65536
# Slots probed per key before the fullest of them is taken over.
PROBES = 8
# The lock guards a few microseconds of work; waiting this long means its holder is stalled or dead.
DEFAULT_LOCK_TIMEOUT_S = 0.1
# The process id of the lock's holder, 0 when free.
_HOLDER = struct.Struct("<q")


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


def _key_hash(key: str) -> int:
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return digest or 1  # 0 marks an empty slot


class RateLimiter:
    """Token buckets: `per_minute` sustained, `burst` at once, per key; safe across threads and forks."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        slots: int = DEFAULT_SLOTS,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst)
        self.lock_timeout_s = lock_timeout_s
        self._clock = clock
        self._slots = slots
        # MAP_SHARED anonymous memory and process-shared locks: all survive fork() into workers.
        self._table = mmap.mmap(-1, slots * _SLOT.size, flags=mmap.MAP_SHARED)
        self._holder = mmap.mmap(-1, _HOLDER.size, flags=mmap.MAP_SHARED)
        context = multiprocessing.get_context("fork")
        self._lock = context.Lock()
        # Taken (never waited for) by the one process that releases a dead holder's lock.
        self._rescue = context.Lock()

    def check(self, key: str) -> None:
        """Take one token for `key`; raises RateLimited with Retry-After when none is left.

        When the shared lock cannot be had within `lock_timeout_s` the request is let through unlimited.
        """
        wanted = _key_hash(key)
        if not self._acquire():
            return
        try:
            # Read inside the lock, so stamps are written in the order the buckets change.
            now = self._clock()
            offset, carried = self._find(wanted, now)
            _, tokens, stamp = _SLOT.unpack_from(self._table, offset)
            if not carried:
                tokens, stamp = self.burst, now
            tokens = self._refilled(tokens, stamp, now)
            if tokens < 1.0:
                _SLOT.pack_into(self._table, offset, wanted, tokens, now)
                raise RateLimited(retry_after_s=(1.0 - tokens) / self.rate_per_s)
            _SLOT.pack_into(self._table, offset, wanted, tokens - 1.0, now)
        finally:
            _HOLDER.pack_into(self._holder, 0, 0)
            self._lock.release()

    def _acquire(self) -> bool:
        """Take the shared lock, releasing it first if its holder died; False means fail open."""
        if self._lock.acquire(timeout=self.lock_timeout_s):
            _HOLDER.pack_into(self._holder, 0, os.getpid())
            return True
        if self._release_dead_holder() and self._lock.acquire(timeout=self.lock_timeout_s):
            _HOLDER.pack_into(self._holder, 0, os.getpid())
            metrics.RATE_LIMIT_LOCK_TIMEOUTS.labels("released").inc()
            return True
        metrics.RATE_LIMIT_LOCK_TIMEOUTS.labels("failed_open").inc()
        logger.warning("rate limiter lock busy for %.2f s: request let through", self.lock_timeout_s)
        return False

    def _release_dead_holder(self) -> bool:
        """Release the lock if the process recorded as holding it has died; True if it may be free now."""
        (holder,) = _HOLDER.unpack_from(self._holder, 0)
        if holder == 0 or alive(holder):
            # 0: free, or taken by a process that has not written its id yet (or died before it did).
            return False
        if not self._rescue.acquire(block=False):
            return False  # another process is releasing it right now
        try:
            # The holder is cleared before the lock is released, so a second rescuer sees another id
            # (or none) here and cannot release a lock that a live process has taken since.
            if _HOLDER.unpack_from(self._holder, 0)[0] == holder:
                logger.error("process %d died holding the rate limiter's lock; releasing it", holder)
                _HOLDER.pack_into(self._holder, 0, 0)
                with contextlib.suppress(ValueError):  # released already
                    self._lock.release()
            return True
        finally:
            self._rescue.release()

    def _refilled(self, tokens: float, stamp: float, now: float) -> float:
        return min(self.burst, tokens + max(0.0, now - stamp) * self.rate_per_s)

    def _find(self, wanted: int, now: float) -> tuple[int, bool]:
        """The slot for `wanted`, and whether the bucket stored there carries over to it.

        Its own slot carries over. Otherwise the probed slot with the most tokens is taken (an empty or
        refilled one is as good as a fresh bucket, so nothing is lost); if even that one is limited, the
        newcomer inherits it: the table cannot tell a newcomer from a limited client it forgot, and a
        forgotten client must not come back with a full burst.
        """
        start = wanted % self._slots
        offsets = [((start + probe) % self._slots) * _SLOT.size for probe in range(PROBES)]
        levels = []
        for offset in offsets:
            stored, tokens, stamp = _SLOT.unpack_from(self._table, offset)
            if stored == wanted:
                return offset, True
            levels.append(self.burst if stored == 0 else self._refilled(tokens, stamp, now))
        fullest = max(range(PROBES), key=levels.__getitem__)
        return offsets[fullest], levels[fullest] < 1.0
