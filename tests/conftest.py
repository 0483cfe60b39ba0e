"""Shared test fixtures: where the real photos are, and the model version every test serves."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Protocol

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
MODEL_REPO = ROOT / "model_repo"


def data_dir(*parts: str) -> Path:
    """A folder of ../shared/data; skips the test, saying why, when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test data not found at {path} (expected ../shared/data beside the repository)")
    return path


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class StallingClock(Clock):
    """A hand-moved clock that, in a process that sets `stall_fd`, says so on that pipe and never returns:
    given to a RateLimiter, it leaves that process inside the limiter's lock."""

    def __init__(self, now: float = 100.0) -> None:
        super().__init__(now)
        self.stall_fd: int | None = None

    def __call__(self) -> float:
        if self.stall_fd is not None:
            os.write(self.stall_fd, b"in")
            while True:
                time.sleep(60)
        return self.now


class Limiter(Protocol):
    def check(self, key: str) -> None: ...


def hold_lock_in_a_process(limiter: Limiter, clock: StallingClock) -> int:
    """Fork a process that stalls inside `limiter`'s lock (its clock is `clock`); returns its pid once in."""
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:
        clock.stall_fd = told
        try:
            limiter.check("192.0.2.1")
        finally:
            os._exit(1)
    os.close(told)
    assert os.read(ready, 2) == b"in"
    os.close(ready)
    return pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return data_dir("faces")


@pytest.fixture(scope="session")
def nonfaces_dir() -> Path:
    return data_dir("nonfaces")


@pytest.fixture(scope="session")
def awkward_dir() -> Path:
    return data_dir("awkward")
