"""Admission's decisions: which version is admitted or refused, which are served, pinned, rolled back to.

Each cycle: a version folder that appeared (or changed) and has stopped changing is checked (files,
fingerprint, calibration bound to it), then brought up beside the served versions as a candidate (the
`loader`); only once it answered its own warmup requests is it admitted. The served set is the newest
admitted version and the one before it (to roll back to), or the pinned one. A change of the served set
is published in the state file first (the orchestrator routes by it) and the versions that left it are
unloaded `drain_s` later, once requests have moved off them. Ops commands (pin, rollback, labels) go
through the same lock, checks and loader.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from serving import contract
from serving.admission.checks import (
    MAX_PROBE_RECORDS,
    Refusal,
    check_binding,
    check_files,
    folder_listing,
    warmup_requests,
)
from serving.admission.control import ModelServerControl
from serving.admission.errors import AdmissionError
from serving.admission.loader import VersionLoader, version_folders
from serving.admission.state import (
    AdmissionState,
    Decision,
    RequestOutcome,
    now_unix,
    read_state,
    state_path,
    write_state,
)

logger = logging.getLogger(__name__)

LOCK_FILE = ".admission.lock"
# How many admitted versions stay loaded when nothing is pinned: the served one and one to roll back to.
SERVED_VERSIONS = 2


class Admission:
    """Decides what one model server serves of one model; safe to use from several processes (a lock
    file beside the state serializes them)."""

    def __init__(
        self,
        control: ModelServerControl,
        config_path: Path,
        model_repo: Path,
        mounts: Mapping[str, Path] | None = None,
        model_name: str = contract.MODEL_NAME,
        drain_s: float = 5.0,
        settle_s: float = 0.5,
        load_timeout_s: float = 180.0,
        probe_timeout_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        server_model_repo: str = "",
    ) -> None:
        self.loader = VersionLoader(
            control,
            config_path,
            model_repo,
            mounts,
            model_name,
            load_timeout_s=load_timeout_s,
            probe_timeout_s=probe_timeout_s,
            server_model_repo=server_model_repo,
        )
        self.model_repo = model_repo
        self.model_name = model_name
        self.drain_s = drain_s
        self.settle_s = settle_s
        self._sleep = sleep
        self.base = self.loader.base
        self.state_file = state_path(self.base)
        self._seen: dict[int, tuple[str, float]] = {}  # version -> (listing, since when unchanged)
        self._listings: dict[int, str] = {}  # version -> its listing when it was decided on
        self._fresh = True  # the first cycle decides every folder again
        # Called after each new state is written (a cluster's link to the bucket pushes it).
        self.on_state: Callable[[], None] | None = None

    # -- the lock and the state -------------------------------------------------------------------

    @contextmanager
    def locked(self, timeout_s: float = 600.0) -> Iterator[None]:
        """Hold the admission lock (one decision-maker at a time, across processes)."""
        fd = os.open(self.base / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AdmissionError(f"admission stayed busy for {timeout_s:g} s") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def state(self) -> AdmissionState:
        return read_state(self.state_file) or AdmissionState(self.model_name)

    # -- one cycle --------------------------------------------------------------------------------

    def cycle(self) -> AdmissionState:
        """Decide on every new, changed or removed folder and serve accordingly; returns the state.
        Raises ServerDown (nothing decided is lost: the next cycle starts over), ReloadRefused."""
        with self.locked():
            state = self.state()
            folders = version_folders(self.base)
            # Nothing decided before this process started is trusted: every folder is checked and probed
            # again, those decided before at once (they had settled then), the rest once they settle.
            again = set(state.decisions) & set(folders) if self._fresh else set()
            if self._fresh:
                state = replace(state, decisions={})
            decisions = dict(state.decisions)
            for version in [v for v in decisions if v not in folders]:
                logger.info("%s version %d: folder removed", self.model_name, version)
                del decisions[version]
                self._listings.pop(version, None)
            for version in list(decisions):
                if folder_listing(folders[version]) != self._listings.get(version):
                    logger.info("%s version %d: folder changed; checking it again", self.model_name, version)
                    del decisions[version]
            self._seen = {v: seen for v, seen in self._seen.items() if v in folders}
            pending = [
                v
                for v in sorted(folders, reverse=True)
                if v not in decisions and (v in again or self._settled(v, folders[v]))
            ]
            served = set(state.served) & set(folders)
            for version in pending:
                decisions[version] = self._examine(version, folders[version], served)
            self._fresh = False
            undecided = set(folders) - set(decisions)
            admitted = any(d.verdict == "admitted" for d in decisions.values())
            if served & undecided or (undecided and not admitted):
                # Never publish a served set that lacks a version only for want of a decision yet.
                return replace(state, decisions=decisions)
            return self._serve(replace(state, decisions=decisions))

    def _settled(self, version: int, folder: Path) -> bool:
        """True once the folder's files have not changed for settle_s (a copy in progress has not)."""
        listing = folder_listing(folder)
        seen = self._seen.get(version)
        now = time.monotonic()
        if seen is None or seen[0] != listing:
            self._seen[version] = (listing, now)
            return self.settle_s <= 0
        return now - seen[1] >= self.settle_s

    def _examine(self, version: int, folder: Path, keep: set[int]) -> Decision:
        """Check, load as a candidate and probe one version; the decision. A refused candidate is
        unloaded again; `keep` are the versions that stay loaded whatever happens. Raises ServerDown."""
        self._listings[version] = folder_listing(folder)
        fingerprint = ""
        started = time.monotonic()
        try:
            check_files(folder)
            fingerprint = check_binding(folder)
            probes = warmup_requests(folder, MAX_PROBE_RECORDS)
            checked = time.monotonic()
            loaded = self.loader.bring_up(version, probes)
        except Refusal as refusal:
            logger.error(
                "%s version %d refused (%s): %s", self.model_name, version, refusal.code, refusal.reason
            )
            self.loader.withdraw(version, keep)
            return Decision(version, "refused", fingerprint, refusal.code, refusal.reason, now_unix())
        logger.info(
            "%s version %d admitted (%s): files checked in %.2f s, loaded in %.2f s, probed in %.2f s",
            self.model_name,
            version,
            fingerprint,
            checked - started,
            loaded - checked,
            time.monotonic() - loaded,
        )
        return Decision(version, "admitted", fingerprint, decided_unix=now_unix())

    # -- what is served ---------------------------------------------------------------------------

    def _serve(self, state: AdmissionState) -> AdmissionState:
        """Make the served set follow the decisions: bring up what must serve, publish, then unload
        what left it once requests moved off; returns the state written. Raises ServerDown."""
        decisions = dict(state.decisions)
        # Each round serves or refuses one version, so the rounds are bounded by the versions on disk.
        for _ in range(len(decisions) + 1):
            state = replace(state, decisions=decisions)
            if state.pinned is not None and state.pinned not in state.admitted():
                logger.warning("%s: pinned version %d is gone; unpinned", self.model_name, state.pinned)
                state = replace(state, pinned=None)
            target = served_target(state)
            missing = [v for v in target if v not in self.loader.available()]
            if not missing:
                break
            version = missing[0]
            folder = self.base / str(version)
            try:
                # Back into service (a rollback, or the newest one was removed): probed again first.
                self.loader.bring_up(version, warmup_requests(folder, MAX_PROBE_RECORDS))
            except Refusal as refusal:
                logger.error(
                    "%s version %d refused (%s): %s", self.model_name, version, refusal.code, refusal.reason
                )
                decisions[version] = Decision(
                    version,
                    "refused",
                    decisions[version].fingerprint,
                    refusal.code,
                    refusal.reason,
                    now_unix(),
                )
        else:
            raise AdmissionError(f"versions {missing} of {list(target)} could not be brought into service")
        dropped = {k: v for k, v in state.labels.items() if v not in target}
        for label, version in dropped.items():
            logger.warning(
                "%s: label %r came off version %d, which is no longer served", self.model_name, label, version
            )
        labels = {k: v for k, v in state.labels.items() if v in target}
        previous = read_state(self.state_file)
        new = replace(state, served=target, labels=labels, updated_unix=now_unix())
        if previous is None or published(previous) != published(new):
            write_state(self.state_file, new)
            if self.on_state is not None:
                self.on_state()  # a cluster's replicas are told too, before the drain below
        configured = self.loader.configured()
        if not target:
            return new  # nothing passed: leave the server as it is (routers serve nothing from it)
        leaving = configured - set(target)
        if leaving and previous is not None and set(previous.served) & leaving:
            self._sleep(self.drain_s)  # routers refresh their choice within this; then nothing is lost
        entry = self.loader.entry()
        # A policy other than `specific` would let the server load folders by itself: always explicit.
        if configured != set(target) or entry.policy.kind != "specific" or entry.version_labels != labels:
            self.loader.reload(set(target), labels)
        return new

    # -- ops --------------------------------------------------------------------------------------

    def pin(self, version: int) -> AdmissionState:
        """Serve only `version`, which must have passed; labels move to it. Raises AdmissionError."""
        with self.locked():
            state = self.state()
            require_admitted(state, version)
            labels = dict.fromkeys(state.labels, version)
            return self._serve(replace(state, pinned=version, labels=labels))

    def unpin(self) -> AdmissionState:
        with self.locked():
            return self._serve(replace(self.state(), pinned=None))

    def rollback(self) -> int:
        """Pin the newest admitted version older than the one served now; returns it."""
        with self.locked():
            target = rollback_target(self.state())
        self.pin(target)
        return target

    def label(self, label: str, version: int) -> AdmissionState:
        """Point `label` at a served version that passed; raises AdmissionError."""
        with self.locked():
            state = self.state()
            require_admitted(state, version)
            if version not in state.served:
                raise AdmissionError(
                    f"version {version} passed but is not served (served: {list(state.served)}); pin it first"
                )
            return self._serve(replace(state, labels={**state.labels, label: version}))

    def unlabel(self, label: str) -> AdmissionState:
        with self.locked():
            state = self.state()
            return self._serve(replace(state, labels={k: v for k, v in state.labels.items() if k != label}))

    def record(self, outcome: RequestOutcome) -> AdmissionState:
        """Write how an ops request taken from the bucket was answered into the state."""
        with self.locked():
            state = replace(self.state(), request=outcome, updated_unix=now_unix())
            write_state(self.state_file, state)
            return state


# -- decisions over the state alone ---------------------------------------------------------------


def served_target(state: AdmissionState) -> tuple[int, ...]:
    """The versions to serve, newest first: the pinned one, or the newest admitted and the one before."""
    admitted = sorted(state.admitted(), reverse=True)
    if state.pinned is not None and state.pinned in admitted:
        return (state.pinned,)
    return tuple(admitted[:SERVED_VERSIONS])


def rollback_target(state: AdmissionState) -> int:
    """The newest admitted version older than the newest served one; raises AdmissionError."""
    older = [v for v in state.admitted() if state.served and v < max(state.served)]
    if not older:
        raise AdmissionError(
            f"nothing to roll back to: served {list(state.served)}, admitted {state.admitted()}"
        )
    return max(older)


def require_admitted(state: AdmissionState, version: int) -> None:
    """Raise AdmissionError unless `version` was decided on and passed."""
    decision = state.decisions.get(version)
    if decision is None:
        raise AdmissionError(f"version {version} has not been admitted (not checked yet, or not on disk)")
    if decision.refused:
        raise AdmissionError(f"version {version} was refused ({decision.code}): {decision.reason}")


def published(state: AdmissionState) -> tuple[object, ...]:
    """What readers act on (not when it was written)."""
    return (
        state.served,
        state.pinned,
        tuple(sorted(state.labels.items())),
        tuple(
            (d.version, d.verdict, d.code, d.reason, d.fingerprint)
            for _, d in sorted(state.decisions.items())
        ),
        state.request,
    )
