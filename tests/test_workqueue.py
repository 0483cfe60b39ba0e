"""Admission of analyses (orchestrator/web/workqueue.py): first in, first out, a fast 503 OVERLOADED with
Retry-After when an answer could not come within the deadline, and never a late answer, in the queue
alone, in the app, and in the real orchestrator under gunicorn with more clients than it admits."""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from orchestrator.errors import Overloaded
from orchestrator.settings import Settings, SettingsError
from orchestrator.web.app import create_app
from orchestrator.web.workqueue import (
    MAX_WAITING_THREADS,
    SLOTS_PER_CORE,
    UNSEEN_SHARE,
    WAITING_THREADS_PER_DEADLINE_S,
    WorkQueue,
    analysis_slots,
    cores,
    worker_threads,
)
from scripts.stack import OrchestratorProcess
from serving import contract
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO, data_dir
from tests.fakes import Script, fake_model_server

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = "congress_B001270.jpg"
PUBLISHED = versions_on_disk(MODEL_REPO / contract.MODEL_NAME)
# Bounds every wait of these tests, so a broken queue fails them instead of hanging them.
JOIN_S = 30.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + JOIN_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


def _in_line(queue: WorkQueue, target: Callable[[], None]) -> threading.Thread:
    """Start `target` in a thread and return once it waits in the queue's line."""
    before = queue.waiting()
    thread = threading.Thread(target=target)
    thread.start()
    _wait_for(lambda: queue.waiting() == before + 1, "a request in line")
    return thread


def test_waiting_requests_are_served_in_the_order_they_came() -> None:
    refused: list[str] = []
    queue = WorkQueue(1, deadline_s=60.0, first_service_s=0.5, on_refused=refused.append)
    served: list[int] = []

    def request(number: int) -> Callable[[], None]:
        def run() -> None:
            with queue.admit():
                served.append(number)

        return run

    with queue.admit():
        threads = [_in_line(queue, request(number)) for number in range(6)]
        assert queue.running() == 1 and served == []
    for thread in threads:
        thread.join(JOIN_S)
    assert served == list(range(6))
    assert refused == [] and queue.waiting() == 0 and queue.running() == 0


def test_slots_run_side_by_side_and_only_the_rest_wait() -> None:
    queue = WorkQueue(3, deadline_s=60.0)
    with queue.admit(), queue.admit():
        assert queue.expected_wait_s() == 0.0
        with queue.admit():
            assert queue.running() == 3 and queue.expected_wait_s() > 0
    assert queue.running() == 0


def test_a_request_whose_answer_would_come_past_the_deadline_is_refused_at_once() -> None:
    refused: list[str] = []
    # One slot, analyses of 0.4 s, a deadline of 1 s (planned for 0.95 s): the first in line would
    # answer after 0.8 s, the second after 1.2 s.
    queue = WorkQueue(1, deadline_s=1.0, first_service_s=0.4, on_refused=refused.append)

    def first_in_line() -> None:
        with queue.admit():
            pass

    with queue.admit():
        first = _in_line(queue, first_in_line)
        started = time.monotonic()
        with pytest.raises(Overloaded) as caught, queue.admit():
            pytest.fail("admitted past the deadline")
        # Refused without waiting in line (the only wait there could be is the 0.6 s one's).
        assert time.monotonic() - started < 0.6
    first.join(JOIN_S)
    assert caught.value.status == 503 and caught.value.code == "OVERLOADED"
    assert caught.value.retry_after_s == pytest.approx(1.2 - (1.0 - UNSEEN_SHARE))
    assert refused == ["refused"]


def test_a_request_still_waiting_when_its_answer_could_no_longer_come_in_time_gives_up() -> None:
    refused: list[str] = []
    outcome: list[str] = []
    queue = WorkQueue(1, deadline_s=0.5, first_service_s=0.1, on_refused=refused.append)

    def request() -> None:
        try:
            with queue.admit():
                outcome.append("served")
        except Overloaded:
            outcome.append("overloaded")

    with queue.admit():
        waiter = _in_line(queue, request)
        waiter.join(JOIN_S)  # the slot is held past the waiter's last moment to start in time
    assert outcome == ["overloaded"] and refused == ["gave_up"]
    assert queue.waiting() == 0
    # The line moves on: the next request is served.
    with queue.admit():
        pass


def test_the_line_is_first_in_first_out_across_the_processes_that_share_it() -> None:
    """Gunicorn's workers fork from the master that made the queue: a request that reached one worker
    goes before a later one that reached another, whichever worker frees the slot."""
    fork = multiprocessing.get_context("fork")
    queue = WorkQueue(1, deadline_s=60.0, first_service_s=0.05)
    order = fork.Queue()
    go = fork.Event()

    def other_process() -> None:
        go.wait(JOIN_S)
        with queue.admit():
            order.put("other process")

    # Forked before this process starts threads of its own.
    child = fork.Process(target=other_process)
    child.start()
    release = threading.Event()

    def hold() -> None:
        with queue.admit():
            release.wait(JOIN_S)

    holder = threading.Thread(target=hold)
    holder.start()
    _wait_for(lambda: queue.running() == 1, "the slot held")
    go.set()
    _wait_for(lambda: queue.waiting() == 1, "the other process's request in line")

    def this_process() -> None:
        with queue.admit():
            order.put("this process")

    later = _in_line(queue, this_process)
    release.set()  # frees the slot in this process, where a request waits too
    holder.join(JOIN_S)
    later.join(JOIN_S)
    child.join(JOIN_S)
    assert child.exitcode == 0
    assert [order.get(timeout=JOIN_S) for _ in range(2)] == ["other process", "this process"]
    assert queue.running() == 0 and queue.waiting() == 0


def test_a_process_that_dies_holding_a_slot_gives_it_back() -> None:
    fork = multiprocessing.get_context("fork")
    queue = WorkQueue(1, deadline_s=60.0, first_service_s=0.05)

    def die_holding_the_slot() -> None:
        queue.admit().__enter__()
        os._exit(0)

    assert queue.running() == 0  # this process has its place in the shared line
    child = fork.Process(target=die_holding_the_slot)
    child.start()
    child.join(JOIN_S)
    assert child.exitcode == 0 and queue.running() in (0, 1)
    admitted: list[float] = []

    def request() -> None:
        started = time.monotonic()
        with queue.admit():
            admitted.append(time.monotonic() - started)

    waiter = threading.Thread(target=request)
    waiter.start()
    waiter.join(JOIN_S)
    assert admitted and admitted[0] < JOIN_S
    assert queue.running() == 0


def test_the_analysis_time_is_learnt_from_the_slots_held() -> None:
    clock = Clock()
    queue = WorkQueue(2, deadline_s=10.0, clock=clock, first_service_s=1.0)
    with queue.admit():
        clock.now += 2.0
    assert queue.service_s == pytest.approx(1.2)


def test_the_deadline_must_be_positive_and_is_read_from_the_environment() -> None:
    with pytest.raises(SettingsError, match="SHINE_ANSWER_DEADLINE_S"):
        WorkQueue(1, deadline_s=0.0)
    with pytest.raises(SettingsError, match="SHINE_ANSWER_DEADLINE_S"):
        create_app(Settings(answer_deadline_s=-1.0))
    assert Settings().answer_deadline_s == 10.0
    assert Settings.from_env({"SHINE_ANSWER_DEADLINE_S": "2.5"}).answer_deadline_s == 2.5


def test_slots_follow_the_cores_and_the_waiting_threads_the_deadline() -> None:
    assert analysis_slots() == SLOTS_PER_CORE * cores()
    assert worker_threads(Settings(threads=4, answer_deadline_s=10.0)) == 4 + 10 * (
        WAITING_THREADS_PER_DEADLINE_S
    )
    assert worker_threads(Settings(threads=4, answer_deadline_s=3600.0)) == 4 + MAX_WAITING_THREADS


def test_the_app_answers_overloaded_as_a_json_503_with_retry_after() -> None:
    """The refusal follows the error format; the upload is read away, not parsed."""
    queue = WorkQueue(1, deadline_s=0.5, first_service_s=1.0)
    app = create_app(
        Settings(model_repo_dir=MODEL_REPO, recommendations_file=ROOT / "configs" / "recommendations.json"),
        workqueue=queue,
    )
    photo = (data_dir("faces") / PORTRAIT).read_bytes()
    with queue.admit():
        response = app.test_client().post(
            "/api/v2/analyze/guest",
            data={"image": (io.BytesIO(photo), "p.jpg")},
            content_type="multipart/form-data",
        )
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "OVERLOADED"
    assert response.get_json()["error"]["request_id"] == response.headers["X-Request-ID"]
    assert int(response.headers["Retry-After"]) >= 1


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float
    code: str
    retry_after: str | None


DEADLINE_S = 2.0
# What a client sees beyond the server's deadline: connecting and the HTTP exchange on a shared machine.
SLACK_S = 1.0
CLIENTS = 30


def _post(url: str, photo: bytes) -> Answer:
    started = time.monotonic()
    response = requests.post(
        url + "/api/v2/analyze/guest", files={"image": ("p.jpg", photo)}, timeout=DEADLINE_S + 30
    )
    seconds = time.monotonic() - started
    code = response.json()["error"]["code"] if response.status_code != 200 else "OK"
    return Answer(response.status_code, seconds, code, response.headers.get("Retry-After"))


@pytest.mark.e2e
def test_more_clients_than_admitted_get_answers_in_time_or_a_fast_overloaded(
    tmp_path: Path, model_repo: Path
) -> None:
    """The real orchestrator (one gunicorn worker) over a model server that takes 0.4 s per face, and
    30 clients at once: each gets a report within the deadline or a JSON 503 OVERLOADED with
    Retry-After, the refusals on arrival at once; none is answered late."""
    photo = (data_dir("faces") / PORTRAIT).read_bytes()
    script = Script(version=PUBLISHED[-1] if PUBLISHED else 1, delay_s=0.4)
    with fake_model_server(script) as address:
        orchestrator = OrchestratorProcess(
            address,
            tmp_path / "gunicorn.log",
            workers=1,
            model_repo=model_repo,
            SHINE_ANSWER_DEADLINE_S=str(DEADLINE_S),
            SHINE_RATE_LIMIT_BURST="100000",
        )
        orchestrator.start()
        try:
            # A few one at a time, so the worker has timed its analyses.
            for _ in range(3):
                assert _post(orchestrator.url, photo).status == 200
            answers: list[Answer] = []
            lock = threading.Lock()
            together = threading.Barrier(CLIENTS)

            def client() -> None:
                together.wait(JOIN_S)
                answer = _post(orchestrator.url, photo)
                with lock:
                    answers.append(answer)

            threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(JOIN_S + DEADLINE_S + 30)
            metrics = requests.get(orchestrator.url + "/metrics", timeout=10).text
        finally:
            orchestrator.stop()
    assert len(answers) == CLIENTS
    assert {(a.status, a.code) for a in answers} <= {(200, "OK"), (503, "OVERLOADED")}
    served = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 503]
    # More came than one worker can answer in time, and it answered as many as it could.
    assert refused and len(served) >= analysis_slots()
    assert all(a.retry_after is not None and int(a.retry_after) >= 1 for a in refused)
    # Never an answer, nor a refusal, after the deadline.
    assert max(a.seconds for a in answers) <= DEADLINE_S + SLACK_S
    # Refused on arrival: before the first in line could even have been answered.
    assert min(a.seconds for a in refused) < DEADLINE_S / 2
    assert 'shine_overloaded_total{outcome="refused"}' in metrics
