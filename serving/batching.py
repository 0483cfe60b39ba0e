"""Server-side batching for the local model server, driven by batching_parameters.txt.

Concurrent requests wait up to batch_timeout_micros to be merged into one model call of at most
max_batch_size rows (concatenated along the first dimension), as TF Serving's batching session does;
num_batch_threads run batches in parallel and at most max_enqueued_batches batches may wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from serving.config import BatchingConfig

logger = logging.getLogger(__name__)

Arrays = Mapping[str, NDArray[np.generic]]
RunBatch = Callable[[Arrays], dict[str, NDArray[np.generic]]]


class QueueFull(RuntimeError):
    """More work is waiting than max_enqueued_batches allows (TF Serving answers UNAVAILABLE)."""


class TaskTooLarge(ValueError):
    """One request has more rows than max_batch_size (TF Serving answers INVALID_ARGUMENT)."""


class SchedulerClosed(RuntimeError):
    """The scheduler was closed because its model version is being unloaded."""


@dataclass
class _Task:
    inputs: Arrays
    size: int
    future: Future[dict[str, NDArray[np.generic]]] = field(default_factory=Future)
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """Counts kept for the benchmark and tests: how many batches ran and how full they were."""

    batches: int = 0
    rows: int = 0
    tasks: int = 0
    largest_batch_rows: int = 0


class BatchScheduler:
    """Merges concurrent tasks into batches and runs them on a fixed set of threads."""

    def __init__(self, run: RunBatch, config: BatchingConfig, name: str = "batch") -> None:
        self._run = run
        self._config = config
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.stats = BatchStats()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(config.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Arrays) -> Future[dict[str, NDArray[np.generic]]]:
        """Queue one request's tensors; raises TaskTooLarge, QueueFull or SchedulerClosed."""
        size = int(next(iter(inputs.values())).shape[0])
        if size > self._config.max_batch_size:
            raise TaskTooLarge(
                f"Task size {size} is larger than maximum batch size {self._config.max_batch_size}"
            )
        limit = self._config.max_batch_size * self._config.max_enqueued_batches
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the model version is being unloaded")
            if self._queued_rows + size > limit:
                raise QueueFull("The batch scheduling queue to which this task was submitted is full")
            task = _Task(inputs, size)
            self._queue.append(task)
            self._queued_rows += size
            self._cond.notify()
        return task.future

    def close(self) -> None:
        """Finish what is queued, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _next_batch(self) -> list[_Task] | None:
        timeout_s = self._config.batch_timeout_micros / 1e6
        limit = self._config.max_batch_size
        with self._cond:
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                rows = self._rows_that_fit(limit)
                waited = time.monotonic() - self._queue[0].enqueued_at
                if rows >= limit or waited >= timeout_s or self._closed:
                    break
                # Wait for more tasks to fill the batch, but never past the oldest task's timeout.
                self._cond.wait(timeout_s - waited)
            batch: list[_Task] = []
            total = 0
            while self._queue and total + self._queue[0].size <= limit:
                task = self._queue.popleft()
                batch.append(task)
                total += task.size
            self._queued_rows -= total
            return batch

    def _rows_that_fit(self, limit: int) -> int:
        total = 0
        for task in self._queue:
            if total + task.size > limit:
                break
            total += task.size
        return total

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _execute(self, batch: list[_Task]) -> None:
        rows = sum(task.size for task in batch)
        try:
            merged = {
                name: np.concatenate([task.inputs[name] for task in batch], axis=0)
                for name in batch[0].inputs
            }
            padded = self._padded_size(rows)
            if padded > rows:
                merged = {name: _pad(array, padded) for name, array in merged.items()}
            outputs = self._run(merged)
        except Exception as exc:  # every waiting request must hear about the failure
            logger.exception("batch of %d rows failed", rows)
            for task in batch:
                task.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.tasks += len(batch)
        self.stats.largest_batch_rows = max(self.stats.largest_batch_rows, rows)
        start = 0
        for task in batch:
            stop = start + task.size
            task.future.set_result({name: value[start:stop] for name, value in outputs.items()})
            start = stop

    def _padded_size(self, rows: int) -> int:
        for allowed in self._config.allowed_batch_sizes:
            if allowed >= rows:
                return allowed
        return rows


def _pad(array: NDArray[np.generic], rows: int) -> NDArray[np.generic]:
    """Pad a batch to `rows` by repeating its last row (the padding rows' outputs are dropped)."""
    extra = np.repeat(array[-1:], rows - array.shape[0], axis=0)
    return np.concatenate([array, extra], axis=0)
