"""Shared test fixtures: where the real photos are, and the model version every test serves."""

from __future__ import annotations

import socket
from pathlib import Path

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
