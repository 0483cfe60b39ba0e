"""Server-side batching merges concurrent requests, within size and time limits, and fails cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest
from numpy.typing import NDArray

from serving.batching import BatchScheduler, QueueFull, TaskTooLarge
from serving.config import BatchingConfig


class Recorder:
    """A model that doubles its input and remembers the batch sizes it was called with."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        with self.lock:
            self.sizes.append(int(inputs["x"].shape[0]))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return {"y": inputs["x"] * 2}


def _rows(n: int, start: int) -> dict[str, NDArray[np.generic]]:
    return {"x": np.arange(start, start + n, dtype=np.float32).reshape(n, 1)}


def test_concurrent_tasks_merge_and_each_gets_its_own_rows() -> None:
    model = Recorder(delay_s=0.05)
    scheduler = BatchScheduler(
        model, BatchingConfig(max_batch_size=28, batch_timeout_micros=200_000, num_batch_threads=1)
    )
    futures = [scheduler.submit(_rows(7, 100 * i)) for i in range(4)]
    results = [f.result(timeout=5) for f in futures]
    scheduler.close()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], _rows(7, 100 * i)["x"] * 2)
    assert model.sizes == [28]
    assert scheduler.stats.tasks == 4


def test_batch_never_exceeds_max_size() -> None:
    model = Recorder()
    scheduler = BatchScheduler(
        model, BatchingConfig(max_batch_size=14, batch_timeout_micros=100_000, num_batch_threads=1)
    )
    futures = [scheduler.submit(_rows(7, i)) for i in range(5)]
    for future in futures:
        future.result(timeout=5)
    scheduler.close()
    assert max(model.sizes) <= 14
    assert sum(model.sizes) == 35


def test_lone_task_runs_after_the_timeout() -> None:
    model = Recorder()
    scheduler = BatchScheduler(model, BatchingConfig(max_batch_size=56, batch_timeout_micros=20_000))
    started = time.monotonic()
    scheduler.submit(_rows(7, 0)).result(timeout=5)
    waited = time.monotonic() - started
    scheduler.close()
    assert model.sizes == [7]
    assert waited >= 0.015


def test_task_larger_than_a_batch_is_refused() -> None:
    scheduler = BatchScheduler(Recorder(), BatchingConfig(max_batch_size=7))
    with pytest.raises(TaskTooLarge):
        scheduler.submit(_rows(8, 0))
    scheduler.close()


def test_full_queue_is_refused() -> None:
    model = Recorder(delay_s=0.3)
    scheduler = BatchScheduler(
        model, BatchingConfig(max_batch_size=7, max_enqueued_batches=1, num_batch_threads=1)
    )
    first = scheduler.submit(_rows(7, 0))
    time.sleep(0.1)  # the first batch is running; one batch may wait
    scheduler.submit(_rows(7, 1))
    with pytest.raises(QueueFull):
        scheduler.submit(_rows(7, 2))
    first.result(timeout=5)
    scheduler.close()


def test_failure_reaches_every_task_of_the_batch() -> None:
    scheduler = BatchScheduler(
        Recorder(fail=True), BatchingConfig(max_batch_size=14, batch_timeout_micros=100_000)
    )
    futures = [scheduler.submit(_rows(7, i)) for i in range(2)]
    for future in futures:
        with pytest.raises(RuntimeError, match="exploded"):
            future.result(timeout=5)
    scheduler.close()


def test_padding_to_allowed_batch_sizes_drops_padded_rows() -> None:
    model = Recorder()
    config = BatchingConfig(max_batch_size=16, allowed_batch_sizes=(8, 16), batch_timeout_micros=0)
    scheduler = BatchScheduler(model, config)
    result = scheduler.submit(_rows(3, 5)).result(timeout=5)
    scheduler.close()
    assert model.sizes == [8]
    np.testing.assert_array_equal(result["y"], _rows(3, 5)["x"] * 2)


def test_close_finishes_queued_work() -> None:
    model = Recorder(delay_s=0.05)
    scheduler = BatchScheduler(model, BatchingConfig(max_batch_size=7, num_batch_threads=1))
    futures = [scheduler.submit(_rows(7, i)) for i in range(3)]
    scheduler.close()
    assert all(f.done() and f.exception() is None for f in futures)
