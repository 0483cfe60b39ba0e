"""Admission of analysis work in each worker: a few analyses at a time, the rest first in, first out.

Two cores shared by every request thread slow every request down together; here a worker runs at most
`slots` analyses at once (sized to the cores) and the others wait their turn in arrival order. A request
whose expected answer (its wait in line plus one analysis) falls past the deadline is refused at once
with 503 OVERLOADED and Retry-After, instead of being answered after its client gave up; one that still
waits when its turn could no longer come in time is refused the same way. Imports neither Flask nor
the metrics: gunicorn's config sizes its workers from here before prometheus_client may be imported.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from orchestrator.errors import Overloaded
from orchestrator.settings import ENV_PREFIX, Settings, SettingsError

# How many analyses a worker runs at once, per core it has: an analysis waits on the model server for
# about half its time (issue 21's run: 38 ms of orchestrator CPU and 30-50 ms of model-server CPU per
# request), so two per core keep the cores busy without sharing them among all request threads.
SLOTS_PER_CORE = 2
# How long one analysis is expected to take until this worker has timed one (a 1 MP selfie through the
# stack one at a time is 50-70 ms; the first answers of a fresh worker are slower).
FIRST_SERVICE_S = 0.2
# Weight of the newest analysis in the running mean of analysis time.
SERVICE_WEIGHT = 0.2
# Request threads per worker that only wait in line, per second of deadline: the line must hold the
# requests a deadline's worth of answering can serve, or they would wait unseen in the web server's own
# queue (at up to 16 answers a second per worker; 2 cores answer about 20-25 a second in all).
WAITING_THREADS_PER_DEADLINE_S = 16
# At most this many waiting threads per worker, whatever the deadline: gunicorn keeps its other
# connections (of 1000 per worker) for idle keep-alive clients.
MAX_WAITING_THREADS = 512


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(settings: Settings) -> int:
    """gunicorn worker processes: SHINE_WORKERS, or one per core and at most four."""
    return settings.workers or min(4, cores())


def worker_slots(settings: Settings) -> int:
    """Analyses one worker runs at once: its share of the cores, SLOTS_PER_CORE each, at least one."""
    return max(1, math.ceil(SLOTS_PER_CORE * cores() / worker_count(settings)))


def worker_threads(settings: Settings) -> int:
    """Request threads of one gunicorn worker: SHINE_THREADS plus those that hold the waiting line."""
    waiting = math.ceil(WAITING_THREADS_PER_DEADLINE_S * settings.answer_deadline_s)
    return settings.threads + min(MAX_WAITING_THREADS, waiting)


class WorkQueue:
    """At most `slots` holders at once; the others wait first in, first out, unless their answer would
    come past `deadline_s` (then Overloaded). Safe across threads; one per worker process."""

    def __init__(
        self,
        slots: int,
        deadline_s: float,
        clock: Callable[[], float] = time.monotonic,
        first_service_s: float = FIRST_SERVICE_S,
        on_refused: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        """`on_refused` hears of each refusal ("refused" on arrival, "gave_up" after waiting); raises
        SettingsError when the deadline is not positive (it comes from the settings)."""
        if not deadline_s > 0:
            raise SettingsError(f"{ENV_PREFIX}ANSWER_DEADLINE_S must be positive, got {deadline_s!r}")
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self.deadline_s = deadline_s
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        # Each waiter's own condition, in arrival order: a freed slot goes to the head of the line only.
        self._line: deque[threading.Condition] = deque()
        self._service_s = first_service_s
        self._on_refused = on_refused

    @property
    def service_s(self) -> float:
        """The running mean of how long one analysis holds a slot, seconds."""
        return self._service_s

    def waiting(self) -> int:
        with self._lock:
            return len(self._line)

    def running(self) -> int:
        with self._lock:
            return self._running

    def expected_wait_s(self) -> float:
        """How long a request arriving now would wait for a slot."""
        with self._lock:
            return self._wait_s(len(self._line))

    def _wait_s(self, ahead: int) -> float:
        if self._running < self.slots and ahead == 0:
            return 0.0
        # Every freed slot moves the line up by one; `slots` of them free up per analysis time.
        return (ahead + 1) * self._service_s / self.slots

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a slot for the duration of the block; raises Overloaded (with Retry-After) when the
        answer could not come within the deadline."""
        self._enter()
        started = self._clock()
        try:
            yield
        finally:
            self._leave(self._clock() - started)

    def _enter(self) -> None:
        arrived = self._clock()
        with self._lock:
            if self._running < self.slots and not self._line:
                self._running += 1
                return
            wait_s = self._wait_s(len(self._line))
            late_s = wait_s + self._service_s - self.deadline_s
            if late_s > 0:
                self._on_refused("refused")
                raise Overloaded(retry_after_s=late_s)
            turn = threading.Condition(self._lock)
            self._line.append(turn)
            while True:
                # Past this moment a turn could no longer be answered within the deadline (by the
                # analysis time learnt so far: it may have grown since this request arrived).
                remaining = arrived + self.deadline_s - self._service_s - self._clock()
                if remaining <= 0:
                    self._line.remove(turn)
                    self._wake_head()
                    self._on_refused("gave_up")
                    raise Overloaded(retry_after_s=self._wait_s(len(self._line)))
                if self._line[0] is turn and self._running < self.slots:
                    break
                turn.wait(remaining)
            self._line.popleft()
            self._running += 1
            # A second free slot (two released at once) goes on to the next in line.
            self._wake_head()

    def _leave(self, held_s: float) -> None:
        with self._lock:
            self._running -= 1
            self._service_s += SERVICE_WEIGHT * (held_s - self._service_s)
            self._wake_head()

    def _wake_head(self) -> None:
        if self._line and self._running < self.slots:
            self._line[0].notify()
