"""The version router: only versions that pass every check are chosen; the canary share; rejections named.

The model server is the scriptable fake on real gRPC (tests/fakes.py) behind the orchestrator's own
PredictClient; calibrations are real, read by a ScorerRegistry from a temporary model_repo whose
versions are copies of the newest published one with its calibration bound to its own model
(tests/repos.py), or deliberately broken.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import skops.io

from orchestrator.errors import ModelTimeout, ModelUnavailable
from orchestrator.predict.client import PredictClient
from orchestrator.predict.routing import CANARY_LABEL, Route, VersionCheck, VersionRouter
from orchestrator.scoring.scorer import ScorerRegistry
from orchestrator.settings import Settings
from serving import contract
from serving.admission.state import AdmissionState, Decision, StateReader, write_state
from tests.conftest import Clock
from tests.fakes import Script, fake_model_server
from tests.repos import bind_calibration, copy_version, other_fingerprint

GOOD = 4


@pytest.fixture(scope="module")
def good_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The newest published version, its calibration bound to it, to copy from."""
    return copy_version(tmp_path_factory.mktemp("source") / "version")


@pytest.fixture
def base(tmp_path: Path, good_version: Path) -> Path:
    """A model folder holding version GOOD."""
    base = tmp_path / contract.MODEL_NAME
    shutil.copytree(good_version, base / str(GOOD))
    return base


@pytest.fixture
def script() -> Script:
    return Script(version=GOOD)


@pytest.fixture
def client(script: Script) -> Iterator[PredictClient]:
    with fake_model_server(script) as address:
        client = PredictClient(Settings(model_server_address=address, retry_backoff_s=0.01))
        yield client
        client.close()


class Draws:
    """The canary draw, from a fixed list (cycled)."""

    def __init__(self, *values: float) -> None:
        self.values = values
        self.count = 0

    def __call__(self) -> float:
        value = self.values[self.count % len(self.values)]
        self.count += 1
        return value


def _router(client: PredictClient, base: Path, **options: object) -> VersionRouter:
    scorers = ScorerRegistry(base.parent, contract.MODEL_NAME)
    return VersionRouter(client, scorers.problem, **options)  # type: ignore[arg-type]


def _check(router: VersionRouter, version: int) -> VersionCheck:
    return next(c for c in router.versions(refresh=True) if c.version == version)


def test_a_version_copied_in_under_a_new_number_is_chosen(
    base: Path, script: Script, client: PredictClient
) -> None:
    shutil.copytree(base / str(GOOD), base / "_staging")
    (base / "_staging").rename(base / "7")  # the copy is not edited: its calibration names no number
    script.versions = (GOOD, 7)
    router = _router(client, base)
    assert router.choose() == Route(7)
    assert _check(router, 7).usable


def test_a_version_whose_copy_arrives_after_the_server_loads_it_is_chosen_then(
    base: Path, script: Script, client: PredictClient
) -> None:
    # On a cluster the model server's sync may mirror version 7 before this replica's sync has.
    script.versions = (GOOD, 7)
    router = _router(client, base)
    assert router.choose() == Route(GOOD)
    assert _check(router, 7).code == "calibration_missing"
    shutil.copytree(base / str(GOOD), base / "_staging")
    (base / "_staging").rename(base / "7")
    assert _check(router, 7).usable
    assert router.choose() == Route(7)


@pytest.mark.parametrize(
    ("break_version", "code", "words"),
    [
        (
            lambda folder: bind_calibration(folder, other_fingerprint()),
            "calibration_mismatch",
            "another model",
        ),
        (
            lambda folder: (folder / "assets.extra" / contract.CALIBRATION_FILE).unlink(),
            "calibration_missing",
            "missing",
        ),
        (
            lambda folder: (folder / "assets.extra" / contract.CALIBRATION_FILE).write_bytes(b"half a file"),
            "calibration_unreadable",
            "cannot be read",
        ),
        # Weights cut short after the calibration was fitted: the content no longer matches.
        (
            lambda folder: _truncate(next((folder / "variables").glob("variables.data-*"))),
            "calibration_mismatch",
            "another model",
        ),
    ],
    ids=["another-model", "no-calibration", "unreadable", "truncated-weights"],
)
def test_a_version_that_cannot_be_scored_is_never_chosen(
    base: Path, script: Script, client: PredictClient, break_version: object, code: str, words: str
) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    break_version(base / "5")  # type: ignore[operator]
    script.versions = (GOOD, 5)
    router = _router(client, base)
    assert router.choose() == Route(GOOD)
    check = _check(router, 5)
    assert (check.usable, check.code) == (False, code)
    assert words in check.reason and "/" not in check.reason  # safe to show: no paths


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_calibration_in_the_previous_format_is_refused_with_its_format(
    base: Path, script: Script, client: PredictClient
) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    path = base / "5" / "assets.extra" / contract.CALIBRATION_FILE
    calibration = skops.io.load(path, trusted=[])
    calibration.update(format=3, version=5)
    del calibration["model_fingerprint"]
    skops.io.dump(calibration, path)
    script.versions = (GOOD, 5)
    check = _check(_router(client, base), 5)
    assert check.code == "calibration_format" and "format 3" in check.reason


def test_a_version_the_server_failed_to_load_is_named_without_its_paths(
    base: Path, script: Script, client: PredictClient, caplog: pytest.LogCaptureFixture
) -> None:
    script.failed = {9: "load failed: /models/skin_analyzer/9/variables/variables.data: truncated"}
    router = _router(client, base)
    assert router.choose() == Route(GOOD)
    check = _check(router, 9)
    assert (check.state, check.code) == ("END", "load_failed")
    assert "/" not in check.reason
    assert "variables.data: truncated" in caplog.text  # the server's own words go to the log
    router.versions(refresh=True)
    assert caplog.text.count("model version 9 is not usable") == 1  # logged once, not every refresh


def test_no_usable_version_is_unavailable_with_the_reasons(
    base: Path, script: Script, client: PredictClient
) -> None:
    (base / str(GOOD) / "assets.extra" / contract.CALIBRATION_FILE).unlink()
    with pytest.raises(ModelUnavailable, match=f"version {GOOD}: its calibration is missing"):
        _router(client, base).choose()


def test_a_version_that_comes_back_is_checked_again(
    base: Path, script: Script, client: PredictClient
) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    calibration = base / "5" / "assets.extra" / contract.CALIBRATION_FILE
    kept = calibration.read_bytes()
    calibration.unlink()
    script.versions = (GOOD, 5)
    router = _router(client, base)
    assert router.choose() == Route(GOOD)
    # Version 5 goes away, and comes back with its calibration: it is checked afresh, and chosen.
    script.versions = (GOOD,)
    router.versions(refresh=True)
    calibration.write_bytes(kept)
    script.versions = (GOOD, 5)
    assert _check(router, 5).usable
    assert router.choose() == Route(5)


def test_the_canary_share_goes_to_the_canary_label(base: Path, script: Script, client: PredictClient) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    script.versions = (GOOD, 5)
    script.labels = {CANARY_LABEL: 5}
    draws = Draws(0.1, 0.5, 0.9, 0.24, 0.25, 0.7, 0.0, 0.3)
    router = _router(client, base, canary_share=0.25, draw=draws, clock=Clock())
    routes = [router.choose() for _ in range(8)]
    # Draws under 0.25 go to the canary; the rest to the newest version that is not the canary.
    assert [r.version for r in routes] == [5, GOOD, GOOD, 5, GOOD, GOOD, 5, GOOD]
    assert {r.label for r in routes if r.version == 5} == {CANARY_LABEL}
    assert {r.label for r in routes if r.version == GOOD} == {None}
    assert router.primary() == Route(GOOD)


def test_a_canary_that_cannot_be_scored_gets_no_share(
    base: Path, script: Script, client: PredictClient
) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    bind_calibration(base / "5", other_fingerprint())
    script.versions = (GOOD, 5)
    script.labels = {CANARY_LABEL: 5}
    router = _router(client, base, canary_share=1.0)
    assert {router.choose() for _ in range(5)} == {Route(GOOD)}


def test_without_a_share_the_canary_label_is_ignored(
    base: Path, script: Script, client: PredictClient
) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    script.versions = (GOOD, 5)
    script.labels = {CANARY_LABEL: GOOD}
    router = _router(client, base, draw=Draws(0.0))
    assert router.choose() == Route(5)


def test_the_configured_label_is_followed_when_its_version_passes(
    base: Path, script: Script, client: PredictClient
) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    script.versions = (GOOD, 5)
    script.labels = {"stable": GOOD}
    assert _router(client, base, label="stable").choose() == Route(GOOD, "stable")
    (base / str(GOOD) / "assets.extra" / contract.CALIBRATION_FILE).unlink()
    # The label's version cannot be scored: the newest usable version serves, and the answer says so.
    assert _router(client, base, label="stable").choose() == Route(5)


def test_forget_asks_the_server_again(base: Path, script: Script, client: PredictClient) -> None:
    shutil.copytree(base / str(GOOD), base / "5")
    script.versions = (GOOD, 5)
    router = _router(client, base, clock=Clock())
    assert router.choose() == Route(5)
    script.versions = (GOOD,)  # version 5 removed under a request
    assert router.choose() == Route(5)  # still trusted until refreshed ...
    router.forget(5)
    assert router.choose() == Route(GOOD)  # ... and asked again at once when a request finds it gone


def test_the_observer_sees_every_refresh(base: Path, script: Script, client: PredictClient) -> None:
    seen: list[list[VersionCheck]] = []
    script.failed = {8: "load failed"}
    _router(client, base, observe=seen.append).versions(refresh=True)
    assert [(c.version, c.rejected) for c in seen[-1]] == [(GOOD, False), (8, True)]


def test_admission_decides_first_candidates_wait_and_its_refusals_are_named(
    base: Path, script: Script, client: PredictClient
) -> None:
    shutil.copytree(base / str(GOOD), base / "7")
    script.versions = (GOOD, 7)  # 7 loaded beside GOOD as a candidate admission is probing
    decisions = {
        GOOD: Decision(GOOD, "admitted"),
        9: Decision(9, "refused", code="empty", reason="the version folder is empty"),
    }
    state = AdmissionState(contract.MODEL_NAME, served=(GOOD,), decisions=decisions)
    router = _router(client, base, admission=lambda: state)
    assert router.choose() == Route(GOOD)  # not the newer candidate
    seven, nine = _check(router, 7), _check(router, 9)
    assert (seven.usable, seven.rejected) == (False, False)
    assert (nine.state, nine.usable, nine.code, nine.reason) == (
        "END",
        False,
        "empty",
        state.decisions[9].reason,
    )
    # Admitted: 7 serves from the next refresh on.
    state = replace(state, served=(7, GOOD), decisions={**decisions, 7: Decision(7, "admitted")})
    assert router.versions(refresh=True) and router.choose() == Route(7)


def test_an_unreadable_admission_state_keeps_the_last_one_read(
    base: Path, script: Script, client: PredictClient, tmp_path: Path
) -> None:
    shutil.copytree(base / str(GOOD), base / "7")
    script.versions = (GOOD, 7)
    path = tmp_path / "admission.json"
    write_state(path, AdmissionState(contract.MODEL_NAME, served=(GOOD,)))
    router = _router(client, base, admission=StateReader(path).read)
    assert router.choose() == Route(GOOD)
    path.write_text("{ half a file")
    assert router.versions(refresh=True) and router.choose() == Route(GOOD)


class SlowStatus:
    """A PredictClient whose status call times out once `slow` is set (the server busy loading)."""

    def __init__(self, client: PredictClient) -> None:
        self.client = client
        self.slow = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.client, name)

    def model_status(self) -> object:
        if self.slow:
            raise ModelTimeout()
        return self.client.model_status()


def test_a_refresh_that_times_out_keeps_a_recent_choice(base: Path, client: PredictClient) -> None:
    clock = Clock()
    slow = SlowStatus(client)
    router = _router(slow, base, clock=clock, refresh_s=1.0)  # type: ignore[arg-type]
    assert router.choose() == Route(GOOD)
    slow.slow = True
    clock.now += 2.0
    assert router.choose() == Route(GOOD)  # not a failed request
    with pytest.raises(ModelTimeout):
        router.versions(refresh=True)  # /health still tells the truth
    clock.now += 10.0  # no refresh has succeeded for longer than a choice may be trusted
    with pytest.raises(ModelUnavailable) as unavailable:
        router.choose()
    assert unavailable.value.retry_after_s >= 1.0
