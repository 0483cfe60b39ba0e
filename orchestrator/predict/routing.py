"""Which model version a request goes to: only versions the orchestrator can use, asked for by number.

A version is usable when the model server reports it AVAILABLE, its serving signature (ModelService
GetModelMetadata) is exactly the contract's, and its calibration can be loaded. The router asks for
the newest usable version explicitly (or the configured label's version, when that one is usable),
so a version that breaks the contract, or that post-scoring could not score, never answers a request.
Rejected versions are kept with their reason for /health and /api/v2/models.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import ModelBadResponse, ModelError, ModelUnavailable
from orchestrator.predict.client import PredictClient
from serving import contract

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionCheck:
    """One version as the router sees it: its server state and whether (and why not) it is usable."""

    version: int
    state: str
    usable: bool
    reason: str = ""


def contract_mismatch(signature: dict[str, dict[str, tuple[str, tuple[int | None, ...]]]]) -> str:
    """Why a signature is not the contract's ("" when it is)."""
    for kind, specs in (("inputs", contract.INPUTS), ("outputs", contract.OUTPUTS)):
        want = {spec.name: (spec.dtype, spec.shape) for spec in specs}
        have = signature.get(kind, {})
        if set(have) != set(want):
            return f"signature {kind} {sorted(have)}, the contract's are {sorted(want)}"
        for name, (dtype, shape) in want.items():
            if have[name] != (dtype, shape):
                got = f"{have[name][0]}{have[name][1]}"
                return f"signature {kind[:-1]} {name} is {got}, the contract says {dtype}{shape}"
    return ""


class VersionRouter:
    """Chooses the version each request is sent to; one per process (after the fork)."""

    def __init__(
        self,
        client: PredictClient,
        calibration_problem: Callable[[int], str],
        label: str = "",
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.calibration_problem = calibration_problem
        self.label = label
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checked: dict[int, tuple[bool, str]] = {}  # version -> (signature and calibration ok, reason)
        self._versions: list[VersionCheck] = []
        self._chosen: int | None = None
        self._expires = 0.0

    def versions(self, refresh: bool = False) -> list[VersionCheck]:
        """Every version the server knows, with its usability; raises ModelUnavailable, ModelTimeout."""
        if refresh or self._clock() >= self._expires:
            self._refresh()
        with self._lock:
            return list(self._versions)

    def choose(self) -> int:
        """The version to send a request to; raises ModelUnavailable (with the reason) when none is usable."""
        with self._lock:
            if self._chosen is not None and self._clock() < self._expires:
                return self._chosen
        self._refresh()
        with self._lock:
            if self._chosen is None:
                reasons = "; ".join(f"version {v.version}: {v.reason}" for v in self._versions if v.reason)
                raise ModelUnavailable(
                    "No model version this service can use is available"
                    + (f" ({reasons})." if reasons else "."),
                    retry_after_s=1.0,
                )
            return self._chosen

    def forget(self, version: int) -> None:
        """Drop a version that went away under a request, so the next choice asks the server again."""
        with self._lock:
            if self._chosen == version:
                self._chosen = None
            self._expires = 0.0

    def _refresh(self) -> None:
        states = self.client.model_status()
        label_version = self.client.label_version(self.label) if self.label else None
        checks = []
        for item in states:
            if item.state != "AVAILABLE":
                checks.append(VersionCheck(item.version, item.state, False, item.error))
                continue
            usable, reason = self._check(item.version)
            checks.append(VersionCheck(item.version, item.state, usable, reason))
        usable_versions = [c.version for c in checks if c.usable]
        if label_version is not None and label_version in usable_versions:
            chosen: int | None = label_version
        else:
            chosen = max(usable_versions, default=None)
        with self._lock:
            self._versions = sorted(checks, key=lambda c: c.version)
            self._chosen = chosen
            self._expires = self._clock() + self.refresh_s

    def _check(self, version: int) -> tuple[bool, str]:
        with self._lock:
            known = self._checked.get(version)
        if known is not None:
            return known
        try:
            reason = contract_mismatch(self.client.signature(version))
        except ModelBadResponse as exc:
            reason = exc.message
        except ModelError:
            raise
        if not reason:
            reason = self.calibration_problem(version)
        result = (not reason, reason)
        if reason:
            logger.error("model version %d is not usable: %s", version, reason)
        with self._lock:
            self._checked[version] = result
        return result
