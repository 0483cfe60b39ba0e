"""Per-client rate limiting for the guest endpoint: a token bucket per client IP, shared by all workers.

The buckets live in an anonymous shared memory map made when the app is built; gunicorn preloads the
app in its master, so every forked worker sees the same buckets and one client gets one budget, not
one per worker. The client IP is the socket peer, or, only when the peer is a configured trusted proxy,
the nearest untrusted address in X-Forwarded-For (so a client cannot pick its own bucket).
"""

from __future__ import annotations

import hashlib
import ipaddress
import mmap
import multiprocessing
import struct
import time
from collections.abc import Callable

from orchestrator.errors import RateLimited

# One slot: key hash (8 bytes, 0 = empty), tokens (double), last refill (double).
_SLOT = struct.Struct("<Qdd")
# Slots in the table; a full bucket is the same as no bucket, so stale slots are simply reused.
DEFAULT_SLOTS = 65536
# Slots probed per key before the fullest of them is taken over.
PROBES = 8


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
    ) -> None:
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._slots = slots
        # MAP_SHARED anonymous memory and a process-shared lock: both survive fork() into workers.
        self._table = mmap.mmap(-1, slots * _SLOT.size, flags=mmap.MAP_SHARED)
        self._lock = multiprocessing.get_context("fork").Lock()

    def check(self, key: str) -> None:
        """Take one token for `key`; raises RateLimited with Retry-After when none is left."""
        wanted = _key_hash(key)
        now = self._clock()
        with self._lock:
            offset, carried = self._find(wanted, now)
            _, tokens, stamp = _SLOT.unpack_from(self._table, offset)
            if not carried:
                tokens, stamp = self.burst, now
            tokens = self._refilled(tokens, stamp, now)
            if tokens < 1.0:
                _SLOT.pack_into(self._table, offset, wanted, tokens, now)
                raise RateLimited(retry_after_s=(1.0 - tokens) / self.rate_per_s)
            _SLOT.pack_into(self._table, offset, wanted, tokens - 1.0, now)

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
