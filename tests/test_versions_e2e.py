"""Model versions end to end: the real stack (the local model server and the orchestrator under gunicorn,
over a temporary copy of model_repo/) under 8 clients posting real portraits, while versions come and go.

In turn: a good version copied in under a new number (staged, then renamed, nothing in it edited); a
version whose calibration was fitted on another model; one without a calibration; one whose weights are
cut short (the model server cannot load it); serving.ops rollback, unpin and a canary label with
SHINE_CANARY_SHARE; the newest version removed. Not one request may fail, and every answer must come from
a version that passed the checks, naming the label it was routed by. Then the model server is killed while
it loads a version: answers are prompt JSON 503 MODEL_UNAVAILABLE with Retry-After, and service resumes
once it is started again, with nothing else done.

The published versions are copied with their calibrations bound to their own model (tests/repos.py), so
the test holds before and after they are re-published in the current calibration format.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from scripts.stack import ROOT, ModelServerProcess, OrchestratorProcess, wait_http
from serving import contract
from serving.ops import ModelServerOps
from serving.repository import versions_on_disk
from tests.conftest import data_dir
from tests.repos import bind_calibration, copy_repo, other_fingerprint

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 8
PORTRAITS = ("congress_B001270.jpg", "congress_B001284.jpg", "congress_B001287.jpg", "congress_C000984.jpg")
PREDICT_TIMEOUT_S = 10.0
# The longest an answer may take: the deadline, plus decoding and the face stage queued on two shared
# cores while a model version loads beside them.
ANSWER_BOUND_S = PREDICT_TIMEOUT_S + 20.0
# How long a worker trusts its choice of version (SHINE_ROUTING_REFRESH_S), and a margin past it.
REFRESH_S = 1.0
SETTLE_S = REFRESH_S + 1.5
CANARY_SHARE = 0.5
# Pause between one client's requests, so a model server loading on the same cores is not starved.
PAUSE_S = 0.1
PHASE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no answer (`failure` says why)
    failure: str = ""
    version: int | None = None
    label: str | None = None
    code: str = ""
    retry_after: str | None = None


class Load:
    """CLIENTS threads posting real portraits in turn, each request on a fresh connection."""

    def __init__(self, url: str, photos: list[bytes]) -> None:
        self.url = url
        self.photos = photos
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ANSWER_BOUND_S + 10)

    def _client(self, index: int) -> None:
        sent = 0
        while not self._stop.is_set():
            photo = self.photos[(index + sent) % len(self.photos)]
            sent += 1
            started = time.monotonic()
            try:
                response = requests.post(
                    self.url + "/api/v2/analyze/guest",
                    files={"image": ("portrait.jpg", photo)},
                    timeout=(10, ANSWER_BOUND_S),
                )
            except requests.RequestException as exc:
                outcome = Outcome(started, time.monotonic(), None, failure=type(exc).__name__)
            else:
                outcome = _outcome(started, response)
            with self._lock:
                self.outcomes.append(outcome)
            self._stop.wait(PAUSE_S)

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.started >= moment]

    def wait_for(
        self,
        what: str,
        predicate: Callable[[list[Outcome]], bool],
        after: float,
        timeout_s: float = PHASE_TIMEOUT_S,
    ) -> list[Outcome]:
        """Wait until `predicate` holds for the requests started after `after`; returns them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            outcomes = self.since(after)
            if predicate(outcomes):
                return outcomes
            time.sleep(0.2)
        seen = sorted({(o.status, o.version, o.label) for o in self.since(after)}, key=str)
        raise AssertionError(f"{what} not seen within {timeout_s:g} s (answers since: {seen})")


def _outcome(started: float, response: requests.Response) -> Outcome:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    model = body.get("model", {}) if isinstance(body, dict) and response.status_code == 200 else {}
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return Outcome(
        started,
        time.monotonic(),
        response.status_code,
        version=model.get("version"),
        label=model.get("label"),
        code=error.get("code", ""),
        retry_after=response.headers.get("Retry-After"),
    )


def _answers(
    count: int, where: Callable[[Outcome], bool] = lambda o: True
) -> Callable[[list[Outcome]], bool]:
    """At least `count` answered requests (any status) matching `where`."""
    return lambda outcomes: sum(o.status is not None and where(o) for o in outcomes) >= count


@dataclass
class Stack:
    model: ModelServerProcess
    orchestrator: OrchestratorProcess
    base: Path  # model_repo/skin_analyzer of the copy both serve
    ops: ModelServerOps
    first: int  # the version the stack starts with (the newest published), copied to make the others

    @property
    def url(self) -> str:
        return self.orchestrator.url

    def stage_in(self, version: int, edit: Callable[[Path], object] = lambda folder: None) -> None:
        """Copy the first published version in under `version`, the TF Serving way: staged under a name
        no server reads, edited there by `edit`, then renamed into place in one step."""
        staged = self.base / f"_staging-{version}"
        shutil.copytree(self.base / str(self.first), staged)
        edit(staged)
        staged.rename(self.base / str(version))

    def remove(self, version: int) -> None:
        """Take a version away the TF Serving way: renamed out of sight in one step, then deleted."""
        gone = self.base / f"_removed-{version}"
        (self.base / str(version)).rename(gone)
        shutil.rmtree(gone)

    def models(self) -> dict[int, dict[str, Any]]:
        versions = requests.get(self.url + "/api/v2/models", timeout=10).json()["versions"]
        return {item["version"]: item for item in versions}

    def wait_refused(self, version: int, words: str, state: str = "AVAILABLE") -> dict[str, Any]:
        """Wait until /api/v2/models names `version` as refused, in `state`, with `words` in its reason."""
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        item: dict[str, Any] = {}
        while time.monotonic() < deadline:
            item = self.models().get(version, {})
            if item.get("state") == state and not item["usable"] and words in item.get("reason", ""):
                return item
            time.sleep(0.3)
        raise AssertionError(f"version {version} not refused ({words!r}, {state}) in time: last {item}")

    def metric(self, name: str, **labels: str) -> float | None:
        text = requests.get(self.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("versions")
    repo = copy_repo(work / "model_repo")
    base = repo / contract.MODEL_NAME
    *older_versions, first = versions_on_disk(base)
    for older in older_versions:  # start from one version, as a fresh deployment would
        shutil.rmtree(base / str(older))
    config = work / "models.config"
    shutil.copy(ROOT / "serving" / "models.config", config)
    model = ModelServerProcess(work / "model_server.log", config=config, model_repo=repo)
    model.start()
    orchestrator = OrchestratorProcess(
        model.address,
        work / "gunicorn.log",
        model_repo=repo,
        SHINE_RATE_LIMIT_BURST="100000",  # every client is 127.0.0.1
        SHINE_PREDICT_TIMEOUT_S=str(PREDICT_TIMEOUT_S),
        SHINE_ROUTING_REFRESH_S=str(REFRESH_S),
        SHINE_CANARY_SHARE=str(CANARY_SHARE),
        SHINE_OPENCV_THREADS="1",
    )
    ops = ModelServerOps(model.address, config)
    try:
        orchestrator.start()
        wait_http(orchestrator.url + "/health", 200, 60)
        yield Stack(model, orchestrator, base, ops, first)
    finally:
        ops.close()
        orchestrator.stop()
        model.stop()


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [(data_dir("faces") / name).read_bytes() for name in PORTRAITS]


def _truncate_weights(folder: Path) -> None:
    weights = next((folder / "variables").glob("variables.data-*"))
    os.truncate(weights, weights.stat().st_size // 2)


def test_versions_come_and_go_without_a_failed_request(stack: Stack, photos: list[bytes]) -> None:
    first = stack.first
    copied, other_model, uncalibrated, truncated = first + 1, first + 2, first + 3, first + 4
    passed = {first}  # versions that passed every check: the only ones that may answer
    with Load(stack.url, photos) as load:
        load.wait_for("answers", _answers(CLIENTS, lambda o: o.version == first), after=0.0)

        # A good version copied in under a new number, nothing edited: it serves.
        stack.stage_in(copied)
        passed.add(copied)
        load.wait_for(
            "answers from the copied version",
            _answers(CLIENTS, lambda o: o.version == copied),
            time.monotonic(),
        )

        # A calibration fitted on another model: loaded by the server, refused here, named everywhere.
        stack.stage_in(other_model, lambda folder: bind_calibration(folder, other_fingerprint()))
        item = stack.wait_refused(other_model, "another model")
        assert "/" not in item["reason"]
        health = requests.get(stack.url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert str(other_model) in health.json()["rejected"]
        rejected = "shine_model_version_rejected"
        assert stack.metric(rejected, version=str(other_model), reason="calibration_mismatch") == 1.0
        load.wait_for("answers beside the refused version", _answers(2 * CLIENTS), time.monotonic())
        stack.remove(other_model)
        stack.ops.wait_for({first, copied})

        # No calibration at all.
        stack.stage_in(uncalibrated, lambda f: (f / "assets.extra" / contract.CALIBRATION_FILE).unlink())
        stack.wait_refused(uncalibrated, "calibration is missing")
        load.wait_for("answers beside the uncalibrated version", _answers(2 * CLIENTS), time.monotonic())
        stack.remove(uncalibrated)
        stack.ops.wait_for({first, copied})

        # Weights cut short: the model server cannot load it; the version before keeps serving.
        stack.stage_in(truncated, _truncate_weights)
        stack.wait_refused(truncated, "could not load", state="END")
        assert stack.metric(rejected, version=str(truncated), reason="load_failed") == 1.0
        load.wait_for("answers beside the truncated version", _answers(2 * CLIENTS), time.monotonic())
        stack.remove(truncated)
        stack.ops.wait_for({first, copied})

        # serving.ops rollback: from the moment it returns, only the version before answers.
        assert stack.ops.rollback() == first
        rolled_back = time.monotonic()
        after = load.wait_for("answers after the rollback", _answers(2 * CLIENTS), rolled_back)
        assert {o.version for o in after if o.status == 200} == {first}
        stack.ops.unpin()
        stack.ops.wait_for({first, copied})

        # A canary label: its share of requests goes to it and says so; the rest to the other version.
        stack.ops.label("canary", copied)
        labelled = time.monotonic() + SETTLE_S
        after = load.wait_for(
            "answers from the canary and the other version",
            lambda outcomes: (
                _answers(CLIENTS, lambda o: o.label == "canary")(outcomes)
                and _answers(CLIENTS, lambda o: o.version == first)(outcomes)
            ),
            labelled,
        )
        assert {(o.version, o.label) for o in after if o.status == 200} == {(copied, "canary"), (first, None)}
        # The label comes off (a label naming a removed version would make the config unloadable):
        # the newest version takes all requests again.
        stack.ops.unlabel("canary")
        unlabelled = time.monotonic() + SETTLE_S
        after = load.wait_for("answers after the label came off", _answers(CLIENTS), unlabelled)
        assert {(o.version, o.label) for o in after if o.status == 200} == {(copied, None)}

        # The served version removed while requests are in flight on it: none is lost.
        stack.remove(copied)
        removed = time.monotonic() + SETTLE_S
        after = load.wait_for("answers after the removal", _answers(2 * CLIENTS), removed)
        assert {o.version for o in after if o.status == 200} == {first}

    outcomes = load.outcomes
    failed = [o for o in outcomes if o.status != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    assert {o.version for o in outcomes} <= passed
    assert {o.label for o in outcomes} <= {None, "canary"}
    assert all(o.version == copied for o in outcomes if o.label == "canary")
    print(f"\n{len(outcomes)} requests, all 200, from versions {sorted({o.version or 0 for o in outcomes})}")


def test_killing_the_model_server_mid_load_answers_503_promptly_and_service_resumes(
    stack: Stack, photos: list[bytes]
) -> None:
    serving = set(stack.ops.available())
    loading = max(versions_on_disk(stack.base)) + 1
    with Load(stack.url, photos) as load:
        load.wait_for("answers", _answers(CLIENTS, lambda o: o.status == 200), time.monotonic())
        stack.stage_in(loading)
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while stack.ops.status().get(loading) != "LOADING":
            assert time.monotonic() < deadline, f"version {loading} was never seen LOADING"
            time.sleep(0.02)
        assert stack.model.process is not None
        stack.model.process.send_signal(signal.SIGKILL)
        stack.model.process.wait()
        killed = time.monotonic()
        load.wait_for(
            "503s while the model server is down", _answers(CLIENTS, lambda o: o.status == 503), killed
        )
        restarted = time.monotonic()
        stack.model.start(wait=False)  # nothing else is done: the orchestrator must find it by itself
        load.wait_for(
            "answers after the restart", _answers(CLIENTS, lambda o: o.status == 200), restarted, 240.0
        )

    outcomes = load.outcomes
    assert {o.status for o in outcomes} <= {200, 503}, sorted({str(o.status or o.failure) for o in outcomes})
    slow = [o for o in outcomes if o.ended - o.started > ANSWER_BOUND_S]
    assert slow == [], f"{len(slow)} requests took longer than {ANSWER_BOUND_S:g} s"
    unavailable = [o for o in outcomes if o.status == 503]
    assert all(
        o.code == "MODEL_UNAVAILABLE" and o.retry_after and int(o.retry_after) >= 1 for o in unavailable
    )
    # Prompt: a request that met the dead server was answered within its deadline, not after it.
    assert all(o.ended - o.started <= PREDICT_TIMEOUT_S for o in unavailable)
    assert {o.version for o in outcomes if o.status == 200} <= serving | {loading}
    wait_http(stack.url + "/health", 200, 60)
    slowest = max((o.ended - o.started for o in unavailable), default=0.0)
    print(f"\n{len(outcomes)} requests: {len(unavailable)} answered 503 (slowest {slowest:.1f} s), rest 200")
