"""Shared test fixtures: where the real photos are, and the model version every test serves.

Locally a test whose prerequisite is missing (../shared/data, TensorFlow) skips and says what is
missing; under CI=true the run fails instead, so a CI run can never pass by skipping half the suite.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    from scripts.stack import ModelServerProcess, OrchestratorProcess

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
MODEL_REPO = ROOT / "model_repo"
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
# Modules the model server, export and the wire test need; the orchestrator needs neither.
TENSORFLOW_MODULES = ("tensorflow", "tensorflow_serving")
# pytest.importorskip's message when the import fails.
_IMPORT_SKIP = "could not import"


def missing(reason: str) -> NoReturn:
    """Skip the test (or the module, at import) saying `reason`; under CI=true, fail it instead."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing prerequisite fails the run)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def data_dir(*parts: str) -> Path:
    """A folder of ../shared/data; skips the test, saying why, when it is absent (fails under CI=true)."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        missing(f"test data not found at {path} (expected ../shared/data beside the repository)")
    return path


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI=true, stop at once, naming what is missing, rather than fail test by test."""
    if not IN_CI:
        return
    problems = [f"test data not found at {DATA}"] if not DATA.is_dir() else []
    problems += [
        f"{name} is not installed" for name in TENSORFLOW_MODULES if importlib.util.find_spec(name) is None
    ]
    if problems:
        pytest.exit("CI=true: " + "; ".join(problems), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Under CI=true, a test module that pytest.importorskip skipped fails to collect instead."""
    outcome: Any = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and _IMPORT_SKIP in _skip_reason(report):
        report.outcome = "failed"
        report.longrepr = f"{_skip_reason(report)} (CI=true: a missing prerequisite fails the run)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI=true, a test that pytest.importorskip skipped, or that a module's own skip marker skipped
    for want of ../shared/data, fails instead."""
    outcome: Any = yield
    report = outcome.get_result()
    reason = _skip_reason(report)
    if IN_CI and report.skipped and (_IMPORT_SKIP in reason or str(DATA) in reason):
        report.outcome = "failed"
        report.longrepr = f"{reason} (CI=true: a missing prerequisite fails the run)"


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """'path:line: reason' of a skip (pytest keeps it as a (path, line, "Skipped: reason") tuple)."""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, line, message = report.longrepr
        return f"{path}:{line}: {str(message).removeprefix('Skipped: ')}"
    return str(report.longrepr)


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
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of model_repo/ whose calibrations are bound to their own model (tests/repos.py says why),
    for tests of the service; tests/test_export.py checks the published versions as they are."""
    from tests.repos import copy_repo

    return copy_repo(tmp_path_factory.mktemp("model_repo"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return data_dir("faces")


@pytest.fixture(scope="session")
def nonfaces_dir() -> Path:
    return data_dir("nonfaces")


@pytest.fixture(scope="session")
def awkward_dir() -> Path:
    return data_dir("awkward")


def wait_for_newest(url: str, timeout_s: float = 180.0) -> None:
    """Until the orchestrator at `url` can route to the newest published version: a stack is healthy as
    soon as one version is loaded, and tests that read the newest version's answers must not race it.
    Each worker refreshes its own routing: once one sees the version, two refresh periods more let
    every worker see it."""
    import requests

    from orchestrator.settings import Settings
    from serving.repository import versions_on_disk

    newest = versions_on_disk(MODEL_REPO / "skin_analyzer")[-1]
    deadline = time.monotonic() + timeout_s
    while True:
        versions = requests.get(url + "/api/v2/models", timeout=10).json().get("versions", [])
        if any(v["version"] == newest and v["usable"] for v in versions):
            time.sleep(2 * Settings().routing_refresh_s + 0.5)
            return
        assert time.monotonic() < deadline, f"version {newest} never became usable: {versions}"
        time.sleep(0.5)


@pytest.fixture(scope="session")
def live_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ModelServerProcess, OrchestratorProcess]]:
    """The real stack (model server, orchestrator under gunicorn) for clients that only send photos:
    the command line and the browser. Started once, on first use; tests must leave it running."""
    # Imported here: this conftest also runs alone (tests/test_prerequisites.py copies it).
    from scripts.stack import ModelServerProcess, OrchestratorProcess, wait_http

    logs = tmp_path_factory.mktemp("live_stack")
    model = ModelServerProcess(logs / "model_server.log")
    # Clients here send more than a guest's burst from one address.
    orchestrator = OrchestratorProcess(model.address, logs / "gunicorn.log", SHINE_RATE_LIMIT_BURST="100000")
    try:
        model.start()
        orchestrator.start()
        wait_http(orchestrator.url + "/health", 200, 60)
        wait_for_newest(orchestrator.url)
        yield model, orchestrator
    finally:
        orchestrator.stop()
        model.stop()
