"""Admission of analysis work: a few analyses at a time across all workers, the rest first in, first out.

Two cores shared by every request thread slow every request down together; here the orchestrator runs
at most `slots` analyses at once (sized to the cores) and the others wait their turn in arrival order,
across every gunicorn worker: the line is kept in memory the workers share (made in the master before
it forks them), so a request that reached a busy worker does not wait behind that worker's line while
another's is shorter. A request whose expected answer (its wait in line plus one analysis) falls past
the deadline is refused at once with 503 OVERLOADED and Retry-After, instead of being answered after its
client gave up; one that still waits when its turn could no longer come in time is refused the same
way. Imports neither Flask nor the metrics: gunicorn's config sizes its workers from here before
prometheus_client may be imported.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from orchestrator.errors import Overloaded
from orchestrator.settings import ENV_PREFIX, MAX_WORKERS, Settings, SettingsError
from orchestrator.web.processes import alive

# How many analyses run at once, per core: an analysis waits on the model server for
# about half its time (issue 21's run: 38 ms of orchestrator CPU and 30-50 ms of model-server CPU per
# request), so two per core keep the cores busy without sharing them among all request threads.
SLOTS_PER_CORE = 2
# How long one analysis is expected to take until this worker has timed one (a 1 MP selfie through the
# stack one at a time is 50-70 ms; the first answers of a fresh worker are slower).
FIRST_SERVICE_S = 0.2
# Weight of the newest analysis in the running mean of analysis time.
SERVICE_WEIGHT = 0.2
# The share of the deadline kept for what a request spends outside the line (at 256 clients on 2 cores,
# one answer in 155 came after 10 s with none kept).
UNSEEN_SHARE = 0.05
# Request threads per worker that only wait in line, per second of deadline: the line must hold the
# requests a deadline's worth of answering can serve, or they would wait unseen in the web server's own
# queue (at up to 16 answers a second per worker; 2 cores answer about 20-25 a second in all).
WAITING_THREADS_PER_DEADLINE_S = 16
# At most this many waiting threads per worker, whatever the deadline: gunicorn keeps its other
# connections (of 1000 per worker) for idle keep-alive clients.
MAX_WAITING_THREADS = 512
# How often the first in a worker's line looks whether a slot freed in another worker (a slot freed in
# its own worker wakes it at once): a slot may idle this long at most when the next turn is elsewhere.
# Each look takes Python's lock from a running analysis: looking every 2 ms cost 4 ms of CPU per
# request at concurrency 20 (two workers, 2 cores), every 10 ms about none.
POLL_S = 0.01
# Processes that may share one line: gunicorn's workers, and as many replacing them before the entries
# of those they replace are cleared.
MAX_PROCESSES = 2 * MAX_WORKERS
# How often a process clears the entries of processes that died (a worker killed in mid-analysis).
SWEEP_S = 1.0


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(settings: Settings) -> int:
    """gunicorn worker processes: SHINE_WORKERS, or one per core and at most four."""
    return settings.workers or min(4, cores())


def analysis_slots() -> int:
    """Analyses the orchestrator runs at once, all its workers together: SLOTS_PER_CORE per core."""
    return SLOTS_PER_CORE * cores()


def worker_threads(settings: Settings) -> int:
    """Request threads of one gunicorn worker: SHINE_THREADS plus those that hold the waiting line."""
    waiting = math.ceil(WAITING_THREADS_PER_DEADLINE_S * settings.answer_deadline_s)
    return settings.threads + min(MAX_WAITING_THREADS, waiting)


class _SharedLine:
    """The line's counts, kept where every process forked from the one that made it reads and writes
    them: per process, its pid, its analyses running, its requests waiting and when the first of them
    arrived; and the mean analysis time. Held under a file lock, which the kernel lets go of when a
    holder dies, and a process's entry is cleared when a later process finds its pid gone, so a worker
    killed in mid-analysis gives its slot back."""

    _ENTRY = np.dtype([("pid", "<i8"), ("running", "<i8"), ("waiting", "<i8"), ("head", "<f8")])

    def __init__(self, processes: int, service_s: float) -> None:
        self._memory = mmap.mmap(-1, self._ENTRY.itemsize * processes + 16)
        self.entries = np.ndarray((processes,), self._ENTRY, buffer=self._memory)
        self.entries["head"] = np.inf
        self._service = np.ndarray((1,), "<f8", buffer=self._memory, offset=self._ENTRY.itemsize * processes)
        self._service[0] = service_s
        # Counts the changes that may let a waiting request in (a slot freed, a line's first gone): a
        # waiting process reads it without the lock, which it takes only when the count moved.
        self._changes = np.ndarray(
            (1,), "<i8", buffer=self._memory, offset=self._ENTRY.itemsize * processes + 8
        )
        # A file in memory only (no folder holds it): each process opens its own description of it,
        # since a lock taken through a description inherited across fork would be one lock shared by
        # both processes.
        descriptor = os.memfd_create("shine-line")
        self._file = descriptor
        self._opened: tuple[int, int] | None = None  # (pid, descriptor)
        self._index: tuple[int, int] | None = None  # (pid, entry)
        weakref.finalize(self, _close, [descriptor])
        self._swept_at = -math.inf

    @contextmanager
    def held(self) -> Iterator[int]:
        """Hold the lock; yields this process's entry."""
        pid = os.getpid()
        if self._opened is None or self._opened[0] != pid:
            # Linux: opening /proc/self/fd/N makes a new description of the same file.
            self._opened = (pid, os.open(f"/proc/self/fd/{self._file}", os.O_RDWR))
            weakref.finalize(self, _close, [self._opened[1]])
        fcntl.flock(self._opened[1], fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            if now - self._swept_at > SWEEP_S:
                self._sweep(pid)
                self._swept_at = now
            yield self._entry(pid)
        finally:
            fcntl.flock(self._opened[1], fcntl.LOCK_UN)

    def _sweep(self, pid: int) -> None:
        """Clear the entries of processes that are gone (their slots and places in line with them)."""
        entries = self.entries
        for index in np.flatnonzero(entries["pid"]):
            other = int(entries["pid"][index])
            if other != pid and not alive(other):
                entries[index] = (0, 0, 0, np.inf)
                self.changed()

    def _entry(self, pid: int) -> int:
        if self._index is not None and self._index[0] == pid:
            return self._index[1]
        entries = self.entries
        free = np.flatnonzero(entries["pid"] == 0)
        if len(free) == 0:
            raise RuntimeError(f"more than {len(entries)} processes share one line")
        index = int(free[0])
        entries[index] = (pid, 0, 0, np.inf)
        self._index = (pid, index)
        return index

    def running(self) -> int:
        return int(self.entries["running"].sum())

    def others(self) -> bool:
        """Whether a process other than the caller (whose entry held() made) has an entry, and so may
        free a slot."""
        return bool(np.count_nonzero(self.entries["pid"]) > 1)

    def waiting(self) -> int:
        return int(self.entries["waiting"].sum())

    def first(self) -> int:
        """The entry whose first waiting request came first (ties: the lower entry)."""
        return int(np.argmin(self.entries["head"]))

    @property
    def changes(self) -> int:
        """Read without the lock (one aligned 8-byte word)."""
        return int(self._changes[0])

    def changed(self) -> None:
        self._changes[0] += 1

    @property
    def service_s(self) -> float:
        return float(self._service[0])

    @service_s.setter
    def service_s(self, value: float) -> None:
        self._service[0] = value


def _close(descriptors: list[int]) -> None:
    for descriptor in descriptors:
        os.close(descriptor)


@dataclass
class _Turn:
    """One waiting request of this process."""

    arrived: float
    wake: threading.Condition


class WorkQueue:
    """At most `slots` holders at once, across every process forked from the one that made it; the
    others wait first in, first out (by arrival, whichever process they reached), unless their answer
    would come past `deadline_s` (then Overloaded). Safe across threads and processes."""

    def __init__(
        self,
        slots: int,
        deadline_s: float,
        clock: Callable[[], float] = time.monotonic,
        first_service_s: float = FIRST_SERVICE_S,
        on_refused: Callable[[str], None] = lambda outcome: None,
        poll_s: float = POLL_S,
    ) -> None:
        """`clock` must read the same in every process sharing the queue (the default, the system's
        monotonic clock, does); `on_refused` hears of each refusal ("refused" on arrival, "gave_up"
        after waiting); raises SettingsError when the deadline is not positive (it comes from the
        settings)."""
        if not deadline_s > 0:
            raise SettingsError(f"{ENV_PREFIX}ANSWER_DEADLINE_S must be positive, got {deadline_s!r}")
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self.deadline_s = deadline_s
        # The line plans each answer by this much less than the deadline: the time a request spends
        # before it reaches the line (waiting to be read) and after (its answer's way back) is not seen here.
        self._plan_s = deadline_s * (1.0 - UNSEEN_SHARE)
        self._clock = clock
        self._poll_s = poll_s
        self._shared = _SharedLine(MAX_PROCESSES, first_service_s)
        # This process's threads: one at a time in the shared line, and its waiters in arrival order.
        self._lock = threading.Lock()
        self._line: deque[_Turn] = deque()
        self._on_refused = on_refused

    @property
    def service_s(self) -> float:
        """The running mean of how long one analysis holds a slot, seconds."""
        with self._lock, self._shared.held():
            return self._shared.service_s

    def waiting(self) -> int:
        with self._lock, self._shared.held():
            return self._shared.waiting()

    def running(self) -> int:
        with self._lock, self._shared.held():
            return self._shared.running()

    def expected_wait_s(self) -> float:
        """How long a request arriving now would wait for a slot."""
        with self._lock, self._shared.held():
            return self._wait_s(self._shared.waiting())

    def _wait_s(self, ahead: int) -> float:
        if self._shared.running() < self.slots and ahead == 0:
            return 0.0
        # Every freed slot moves the line up by one; `slots` of them free up per analysis time.
        return (ahead + 1) * self._shared.service_s / self.slots

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
            with self._shared.held() as me:
                shared = self._shared
                if shared.running() < self.slots and shared.waiting() == 0:
                    shared.entries["running"][me] += 1
                    return
                wait_s = self._wait_s(shared.waiting())
                late_s = wait_s + shared.service_s - self._plan_s
                if late_s > 0:
                    self._on_refused("refused")
                    raise Overloaded(retry_after_s=late_s)
                turn = _Turn(arrived, threading.Condition(self._lock))
                self._line.append(turn)
                shared.entries["waiting"][me] += 1
                self._mark_head(me)
            while True:
                with self._shared.held() as me:
                    shared = self._shared
                    # Past this moment a turn could no longer be answered within the deadline (by the
                    # analysis time learnt so far: it may have grown since this request arrived).
                    remaining = arrived + self._plan_s - shared.service_s - self._clock()
                    if remaining <= 0:
                        self._line.remove(turn)
                        shared.entries["waiting"][me] -= 1
                        self._mark_head(me)
                        self._wake_head()
                        self._on_refused("gave_up")
                        raise Overloaded(retry_after_s=self._wait_s(shared.waiting()))
                    if self._line[0] is turn and shared.running() < self.slots and shared.first() == me:
                        self._line.popleft()
                        shared.entries["waiting"][me] -= 1
                        shared.entries["running"][me] += 1
                        self._mark_head(me)
                        # A second free slot (two released at once) goes on to the next in line.
                        self._wake_head()
                        return
                    # The first in this process's line also looks now and then whether another
                    # process changed the line (a slot freed in this one wakes it at once).
                    elsewhere = self._line[0] is turn and shared.others()
                    seen = shared.changes
                self._wait(turn, remaining, seen if elsewhere else None)

    def _wait(self, turn: _Turn, remaining: float, seen: int | None) -> None:
        """Wait (this process's lock held) until woken, `remaining` seconds have passed, or, when
        `seen` is given, the shared count of changes has moved from it."""
        until = self._clock() + remaining
        while True:
            if turn.wake.wait(remaining if seen is None else min(remaining, self._poll_s)) or seen is None:
                return
            remaining = until - self._clock()
            if remaining <= 0 or self._shared.changes != seen:
                return

    def _leave(self, held_s: float) -> None:
        with self._lock, self._shared.held() as me:
            shared = self._shared
            shared.entries["running"][me] -= 1
            shared.service_s += SERVICE_WEIGHT * (held_s - shared.service_s)
            shared.changed()
            self._wake_head()

    def _mark_head(self, me: int) -> None:
        """Record when this process's first waiting request came (none: never), a change to the line."""
        self._shared.entries["head"][me] = self._line[0].arrived if self._line else np.inf
        self._shared.changed()

    def _wake_head(self) -> None:
        if self._line:
            self._line[0].wake.notify()
