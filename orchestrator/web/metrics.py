"""Prometheus metrics for the orchestrator; aggregated across gunicorn workers in multiprocess mode.

gunicorn's config points PROMETHEUS_MULTIPROC_DIR at a fresh directory before forking, which
prometheus_client reads itself; without it (tests, flask run) metrics are per process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from orchestrator.predict.routing import VersionCheck

REQUESTS = Counter("shine_requests_total", "HTTP requests answered", ["endpoint", "status", "code"])
LATENCY = Histogram(
    "shine_request_seconds",
    "Time to answer, by endpoint",
    ["endpoint"],
    buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0),
)
STAGES = Histogram(
    "shine_stage_seconds",
    "Time per pipeline stage",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STAGE_CPU = Counter(
    "shine_stage_cpu_seconds_total",
    "CPU time of the request thread per pipeline stage (summed over requests)",
    ["stage"],
)
ANSWERED_BY = Counter(
    "shine_model_version_answers_total",
    "Analyses by the model version that answered and the label it was routed by (none: the newest)",
    ["version", "label"],
)
REJECTED_VERSIONS = Gauge(
    "shine_model_version_rejected",
    "1 while the orchestrator refuses to route to a model version, by version and reason (load_failed, "
    "signature, calibration_missing, calibration_mismatch, ...); 0 once it no longer does",
    ["version", "reason"],
    multiprocess_mode="livemax",
)
RATE_LIMIT_LOCK_TIMEOUTS = Counter(
    "shine_rate_limit_lock_timeouts_total",
    "Guest requests that waited out the rate limiter's lock: released from a dead holder, or let "
    "through unlimited (failed open)",
    ["outcome"],
)

OVERLOADED = Counter(
    "shine_overloaded_total",
    "Analyses refused with 503 OVERLOADED: on arrival, when the wait in line was too long for the "
    "deadline (refused), or after waiting, when their turn could no longer come in time (gave_up)",
    ["outcome"],
)


class RejectedVersions:
    """Keeps REJECTED_VERSIONS in step with the router: its observer, called after every refresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown: set[tuple[str, str]] = set()

    def __call__(self, checks: Iterable[VersionCheck]) -> None:
        now = {(str(c.version), c.code) for c in checks if c.rejected}
        with self._lock:
            gone, self._shown = self._shown - now, now
        for labels in gone:
            REJECTED_VERSIONS.labels(*labels).set(0)
        for labels in now:
            REJECTED_VERSIONS.labels(*labels).set(1)


def render(multiprocess_dir: str) -> tuple[bytes, str]:
    """The exposition text for /metrics and its content type, summed over workers when multiprocess."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
