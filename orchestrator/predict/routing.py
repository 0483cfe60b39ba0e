"""Which model version a request goes to: only versions the orchestrator can use, asked for by number.

A version is usable when the model server reports it AVAILABLE, its serving signature (ModelService
GetModelMetadata) can be answered correctly (contract.signature_problem: the inputs the orchestrator
sends, known outputs of the contract's dtypes and shapes; the outputs it has decide which concerns it
scores, contract.read_layout), and its calibration is bound to the model in its folder
(ScorerRegistry.problem). The router asks for the newest usable version explicitly (or the configured
label's version, when that one is usable) and sends a share of requests (SHINE_CANARY_SHARE) to the
`canary` label's version when that one is usable, so a version that breaks the contract, that
post-scoring could not score, or that the model server failed to load never answers a request.
Where admission runs (serving/admission), its state file decides first: only the versions it serves
are routed to, a version it refused is rejected with its reason (whether the server loaded it or not),
and a candidate it is still probing is never chosen. Rejected versions are kept with their reason for
/health and /api/v2/models, logged once, and handed to an observer (the metrics).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import ModelBadResponse, ModelError, ModelTimeout, ModelUnavailable
from orchestrator.predict.client import PredictClient
from orchestrator.scoring.scorer import CalibrationProblem
from serving import contract
from serving.admission.state import AdmissionState, StateError

logger = logging.getLogger(__name__)

CANARY_LABEL = "canary"
# How old a choice may be and still be used when a refresh times out.
STALE_CHOICE_S = 5.0


@dataclass(frozen=True)
class VersionCheck:
    """One version as the router sees it: its server state, whether it is usable, and if it is rejected,
    why (`reason`, safe to show a client) under a short `code` (for metrics)."""

    version: int
    state: str
    usable: bool
    reason: str = ""
    code: str = ""
    layout: contract.Layout | None = None  # how its answers are read (usable versions)

    @property
    def rejected(self) -> bool:
        return bool(self.code)


@dataclass(frozen=True)
class Route:
    """Where one request goes: a usable version, and the label it was routed by (None: the newest)."""

    version: int
    label: str | None = None


class VersionRouter:
    """Chooses the version each request is sent to; one per process (after the fork).

    `calibration_problem(version)` says why a version cannot be scored (None when it can); `draw`
    gives a uniform number in [0, 1) per request for the canary share; `observe` is called with every
    refreshed list of versions.
    """

    def __init__(
        self,
        client: PredictClient,
        calibration_problem: Callable[[int], CalibrationProblem | None],
        label: str = "",
        canary_share: float = 0.0,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
        observe: Callable[[list[VersionCheck]], None] | None = None,
        admission: Callable[[], AdmissionState | None] | None = None,
    ) -> None:
        self.client = client
        self.calibration_problem = calibration_problem
        self.label = label
        self.canary_share = canary_share
        self.refresh_s = refresh_s
        self._clock = clock
        self._draw = draw
        self._observe = observe
        self._admission = admission
        self._admission_state: AdmissionState | None = None
        self._lock = threading.Lock()
        # Checks of AVAILABLE versions, kept while they stay AVAILABLE: version -> the check.
        self._checked: dict[int, VersionCheck] = {}
        self._logged: dict[int, str] = {}  # rejected version -> the code last logged for it
        self._versions: list[VersionCheck] = []
        self._primary: Route | None = None
        self._canary: int | None = None
        self._expires = 0.0
        self._refreshed_at = float("-inf")

    def versions(self, refresh: bool = False) -> list[VersionCheck]:
        """Every version the server knows, with its usability; raises ModelUnavailable, ModelTimeout."""
        if refresh or self._clock() >= self._expires:
            self._refresh()
        with self._lock:
            return list(self._versions)

    def primary(self) -> Route:
        """Where requests outside the canary share go; raises ModelUnavailable (with the reasons) when no
        version is usable."""
        with self._lock:
            fresh = self._primary is not None and self._clock() < self._expires
        if not fresh:
            try:
                self._refresh()
            except ModelTimeout as exc:
                # The server was too busy to list its versions in time (loading one beside the others on
                # shared cores): a choice from a refresh a few seconds old stands (if its version went
                # away meanwhile, the request meets VersionGone and goes to the next choice). With no
                # such choice (the server restarting, say), nothing usable is known: 503, retry.
                with self._lock:
                    recent = self._clock() - self._refreshed_at <= max(STALE_CHOICE_S, 3 * self.refresh_s)
                    stale = self._primary if recent else None
                if stale is None:
                    raise ModelUnavailable(
                        "The model server did not say in time which model versions it serves.",
                        retry_after_s=1.0,
                    ) from exc
                logger.warning("model versions not refreshed in time; routing on the last choice")
                return stale
        with self._lock:
            if self._primary is None:
                reasons = "; ".join(f"version {v.version}: {v.reason}" for v in self._versions if v.rejected)
                raise ModelUnavailable(
                    "No model version this service can use is available"
                    + (f" ({reasons})." if reasons else "."),
                    retry_after_s=1.0,
                )
            return self._primary

    def choose(self) -> Route:
        """Where to send one request: the canary for its share of requests when it is usable, else the
        primary route; raises ModelUnavailable when no version is usable."""
        primary = self.primary()
        with self._lock:
            canary = self._canary
        if canary is not None and self._draw() < self.canary_share:
            return Route(canary, CANARY_LABEL)
        return primary

    def layout(self, version: int) -> contract.Layout | None:
        """How answers of a checked, usable `version` are read (None for one not checked usable)."""
        with self._lock:
            check = self._checked.get(version)
        return check.layout if check is not None else None

    def forget(self, version: int) -> None:
        """Drop a version that went away under a request, so the next choice asks the server again."""
        with self._lock:
            if self._primary is not None and self._primary.version == version:
                self._primary = None
            if self._canary == version:
                self._canary = None
            self._expires = 0.0

    def _refresh(self) -> None:
        states = self.client.model_status()
        label_version = self.client.label_version(self.label) if self.label else None
        canary_version = self.client.label_version(CANARY_LABEL) if self.canary_share > 0 else None
        available = {item.version for item in states if item.state == "AVAILABLE"}
        with self._lock:
            # A version that went away is checked afresh if it comes back (its folder may have changed).
            self._checked = {v: c for v, c in self._checked.items() if v in available}
        admitted = self._read_admission()
        served = set(admitted.served) if admitted is not None else None
        refused = admitted.refused() if admitted is not None else {}
        checks = []
        for item in states:
            if item.version in refused:
                decision = refused[item.version]
                checks.append(VersionCheck(item.version, item.state, False, decision.reason, decision.code))
            elif served is not None and item.state == "AVAILABLE" and item.version not in served:
                # A candidate admission is still probing, or one leaving service: never chosen.
                checks.append(VersionCheck(item.version, item.state, False, "not served by admission"))
            elif item.state == "AVAILABLE":
                checks.append(self._check(item.version))
            elif item.error:
                # The server's message names its files: it goes to the log, not to clients.
                checks.append(
                    VersionCheck(
                        item.version, item.state, False, "the model server could not load it", "load_failed"
                    )
                )
            else:
                checks.append(VersionCheck(item.version, item.state, False))
        known = {item.version for item in states}
        for version, decision in refused.items():
            if version not in known:  # refused before it was loaded, or unloaded since
                checks.append(VersionCheck(version, "END", False, decision.reason, decision.code))
        self._log_rejections(checks, {item.version: item.error for item in states})
        usable = sorted(c.version for c in checks if c.usable)
        canary = canary_version if canary_version in usable else None
        if label_version is not None and label_version in usable:
            primary: Route | None = Route(label_version, self.label)
        else:
            # With a canary share, the rest of the traffic goes to the newest version that is not the canary.
            others = [v for v in usable if v != canary] or usable
            primary = Route(others[-1]) if others else None
        with self._lock:
            self._versions = sorted(checks, key=lambda c: c.version)
            self._primary = primary
            self._canary = canary
            self._expires = self._clock() + self.refresh_s
            self._refreshed_at = self._clock()
        if self._observe is not None:
            self._observe(list(checks))

    def _read_admission(self) -> AdmissionState | None:
        """Admission's state (None where none runs); the last one read while the file cannot be read."""
        if self._admission is None:
            return None
        try:
            self._admission_state = self._admission()
        except (StateError, OSError) as exc:
            logger.warning("cannot read the admission state (%s); keeping the last one read", exc)
        return self._admission_state

    def _check(self, version: int) -> VersionCheck:
        with self._lock:
            known = self._checked.get(version)
        if known is not None:
            return known
        code = ""
        layout = None
        try:
            signature = self.client.signature(version)
            reason = contract.signature_problem(signature) or ""
            code = "signature" if reason else ""
            layout = None if reason else contract.read_layout(signature)
        except ModelBadResponse as exc:
            reason, code = exc.message, "signature"
        except ModelError as exc:
            # Unloaded since the status call, or the server is slow: not usable now, asked again next time.
            logger.warning("cannot check model version %d now: %s", version, exc.code)
            return VersionCheck(version, "AVAILABLE", False)
        if not reason:
            problem = self.calibration_problem(version)
            if problem is not None:
                reason, code = problem.reason, problem.code
        check = VersionCheck(version, "AVAILABLE", not reason, reason, code, layout if not reason else None)
        # On a cluster each replica mirrors versions from the bucket on its own: the model server may load
        # one before this replica's copy (and its calibration) has arrived, so that one is asked again.
        if code != "calibration_missing":
            with self._lock:
                self._checked[version] = check
        return check

    def _log_rejections(self, checks: list[VersionCheck], server_errors: dict[int, str]) -> None:
        """Log each rejected version once per reason (with the server's own message for a failed load)."""
        with self._lock:
            fresh = [c for c in checks if c.rejected and self._logged.get(c.version) != c.code]
            self._logged = {c.version: c.code for c in checks if c.rejected}
        for check in fresh:
            detail = f" ({server_errors[check.version]})" if server_errors.get(check.version) else ""
            logger.error(
                "model version %d is not usable (%s): %s%s", check.version, check.code, check.reason, detail
            )
