"""Rate limiting per client IP, with X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import os
import signal

import pytest

from orchestrator.errors import RateLimited
from orchestrator.web.ratelimit import RateLimiter, client_ip
from tests.conftest import Clock, StallingClock, hold_lock_in_a_process


def test_burst_then_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("1.2.3.4")
    with pytest.raises(RateLimited) as refused:
        limiter.check("1.2.3.4")
    assert refused.value.retry_after_s == pytest.approx(1.0)
    limiter.check("5.6.7.8")  # another client is still served
    clock.now += 1.0
    limiter.check("1.2.3.4")


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("10.0.0.5", "203.0.113.9", (), "10.0.0.5"),  # no trusted proxy: header ignored
        ("10.0.0.5", "203.0.113.9", ("10.0.0.0/8",), "203.0.113.9"),
        ("10.0.0.5", "198.51.100.1, 203.0.113.9", ("10.0.0.0/8",), "203.0.113.9"),  # spoofed first hop
        ("10.0.0.5", "198.51.100.1, 10.0.0.7", ("10.0.0.0/8",), "198.51.100.1"),  # two proxies
        ("192.0.2.1", "203.0.113.9", ("10.0.0.0/8",), "192.0.2.1"),  # peer not a proxy
        ("10.0.0.5", None, ("10.0.0.0/8",), "10.0.0.5"),
    ],
)
def test_client_ip(peer: str, forwarded: str | None, trusted: tuple[str, ...], expected: str) -> None:
    assert client_ip(peer, forwarded, trusted) == expected


def test_buckets_are_shared_with_forked_workers() -> None:
    import os

    limiter = RateLimiter(per_minute=1, burst=2)
    limiter.check("9.9.9.9")
    pid = os.fork()
    if pid == 0:  # a worker takes the second token
        try:
            limiter.check("9.9.9.9")
            os._exit(0)
        except RateLimited:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(RateLimited):
        limiter.check("9.9.9.9")  # the parent sees the worker's spend


def test_many_clients_fit_and_collisions_never_grant_a_fresh_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, slots=64)
    for i in range(500):  # far more clients than slots; none limited, so each may be forgotten
        limiter.check(f"10.1.{i // 256}.{i % 256}")
    for _ in range(2):
        limiter.check("203.0.113.7")
    with pytest.raises(RateLimited):
        limiter.check("203.0.113.7")


def test_eviction_never_resets_a_limited_client() -> None:
    clock = Clock()
    # Eight slots and eight probes: every key's probe window is the whole table.
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock, slots=8)
    for _ in range(3):
        limiter.check("203.0.113.1")
    with pytest.raises(RateLimited):
        limiter.check("203.0.113.1")
    for i in range(20):  # other clients fill the window and keep arriving: someone must be evicted
        clock.now += 0.01
        limiter.check(f"198.51.100.{i}")
    with pytest.raises(RateLimited):
        limiter.check("203.0.113.1")


def test_when_every_bucket_is_limited_a_newcomer_cannot_be_told_from_a_forgotten_client() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock, slots=8)
    clients = [f"203.0.113.{i}" for i in range(8)]
    for client in clients:
        limiter.check(client)  # each spends its only token: the whole table is limited
    # A newcomer takes over a limited bucket, and so starts limited: it could be one of these
    # clients come back after being forgotten.
    with pytest.raises(RateLimited):
        limiter.check("198.51.100.1")
    for client in clients:  # and none of them, forgotten or not, got a fresh bucket
        with pytest.raises(RateLimited):
            limiter.check(client)
    clock.now += 1.0  # a second refills one token at 60 per minute
    limiter.check("198.51.100.1")


def test_a_stalled_holder_makes_requests_fail_open_and_a_dead_one_is_released() -> None:
    clock = StallingClock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock, lock_timeout_s=0.05)
    holder = hold_lock_in_a_process(limiter, clock)
    try:
        for _ in range(3):  # the holder is alive: nothing is released, every request is let through
            limiter.check("203.0.113.5")
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    limiter.check("203.0.113.5")  # the dead holder's lock is released and the limit applies again
    with pytest.raises(RateLimited):
        limiter.check("203.0.113.5")
