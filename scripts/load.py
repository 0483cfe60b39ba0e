"""Load generation and measurement for the benchmark: requests one at a time and concurrently, over HTTP
to an analysis service or over gRPC to the model server alone; memory (PSS) and CPU of process groups;
repetitions summarised as median, min and max.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from orchestrator.predict.client import PredictClient
from orchestrator.settings import Settings
from scripts.stack import pss_kb

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def make_inputs(folder: Path) -> dict[str, Path]:
    """A ~1 MP selfie (as shipped) and a 12 MP phone-sized JPEG upscaled from a real portrait."""
    selfie = DATA / "faces" / "sn_city_portrait.jpg"
    large = folder / "portrait_12mp.jpg"
    with Image.open(DATA / "faces" / "sn_woman_portrait.jpg") as image:
        image.convert("RGB").resize((2832, 4248), Image.Resampling.LANCZOS).save(large, quality=92)
    return {"1 MP selfie (1200x794 JPEG)": selfie, "12 MP JPEG (2832x4248)": large}


def post(url: str, photo: bytes) -> tuple[int, dict[str, Any], float]:
    """One analysis request: status, JSON body, client wall milliseconds."""
    started = time.perf_counter()
    response = requests.post(url + "/api/v2/analyze/guest", files={"image": ("p.jpg", photo)}, timeout=900)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
    return response.status_code, body, elapsed_ms


def sequential(url: str, photo: bytes, runs: int) -> dict[str, float]:
    """Server time (the answer's timing_ms.total) and its stages, one request at a time."""
    for _ in range(3):
        post(url, photo)
    server: list[float] = []
    wall: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        status, body, elapsed = post(url, photo)
        assert status == 200, body
        server.append(body["timing_ms"]["total"])
        wall.append(elapsed)
        for stage, ms in body["timing_ms"].items():
            stages.setdefault(stage, []).append(ms)
    result = {
        "server_p50_ms": percentile(server, 50),
        "server_p90_ms": percentile(server, 90),
        "wall_p50_ms": percentile(wall, 50),
    }
    result.update({f"{k}_p50_ms": percentile(v, 50) for k, v in stages.items() if k != "total"})
    return result


def run_load(call: Callable[[], bool], concurrency: int, total: int) -> dict[str, float]:
    """Run `call` `total` times from `concurrency` threads: client-observed latency, throughput, errors."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal failures
        started = time.perf_counter()
        ok = call()
        elapsed = (time.perf_counter() - started) * 1000.0
        with lock:
            latencies.append(elapsed)
            failures += 0 if ok else 1

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    duration = time.perf_counter() - started
    return {
        "requests": float(total),
        "errors": float(failures),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "throughput_rps": total / duration,
    }


# One analysis under overload: HTTP status (0: no answer), error code ("" for a 200), wall milliseconds.
Outcome = tuple[int, str, float]


def run_overload(
    call: Callable[[], Outcome], concurrency: int, total: int, deadline_s: float
) -> dict[str, float]:
    """Run `call` `total` times from `concurrency` threads: answers (200), refusals (503 OVERLOADED),
    any other outcome, answers later than `deadline_s`, and latency of every outcome."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        outcome = call()
        with lock:
            outcomes.append(outcome)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    duration = time.perf_counter() - started
    answers = [ms for status, _, ms in outcomes if status == 200]
    overloaded = [ms for status, code, ms in outcomes if status == 503 and code == "OVERLOADED"]
    every = [ms for _, _, ms in outcomes]
    return {
        "requests": float(total),
        "answers": float(len(answers)),
        "overloaded": float(len(overloaded)),
        "other": float(total - len(answers) - len(overloaded)),
        "late_answers": float(sum(1 for ms in answers if ms > deadline_s * 1000.0)),
        "overloaded_p99_ms": percentile(overloaded, 99),
        "p50_ms": percentile(every, 50),
        "p99_ms": percentile(every, 99),
        "answers_per_s": len(answers) / duration,
    }


def overload_call(url: str, photo: bytes) -> Callable[[], Outcome]:
    """One analysis over a fresh connection; a failed connection is an outcome (status 0), not an error."""

    def call() -> Outcome:
        started = time.perf_counter()
        try:
            status, body, elapsed_ms = post(url, photo)
        except requests.RequestException as exc:
            return 0, type(exc).__name__, (time.perf_counter() - started) * 1000.0
        return status, body.get("error", {}).get("code", ""), elapsed_ms

    return call


def http_call(url: str, photo: bytes) -> Callable[[], bool]:
    return lambda: post(url, photo)[0] == 200


def predict_call(
    address: str, face: np.ndarray, mask: np.ndarray, patches: tuple[np.ndarray, np.ndarray] | None = None
) -> Callable[[], bool]:
    """One Predict of the same aligned face (and its patch slots, for a contract-4 version) straight to
    the model server, as the orchestrator sends it."""
    client = PredictClient(Settings(model_server_address=address, predict_timeout_s=60.0))
    client.predict(face, mask, patches=patches)

    def call() -> bool:
        try:
            client.predict(face, mask, patches=patches)
        except Exception:  # any failure is one error in the table; the run goes on
            return False
        return True

    return call


class MemorySampler:
    """Samples PSS of process groups every 0.25 s while running; keeps each group's peak."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.peak_mb = dict.fromkeys(groups, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for name, pids in self.groups.items():
                try:
                    total = sum(pss_kb(pid) for pid in pids()) / 1024
                except (OSError, ValueError):
                    continue
                self.peak_mb[name] = max(self.peak_mb[name], total)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (utime and stime of /proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def stage_cpu_seconds(url: str) -> dict[str, float]:
    """The orchestrator's per-stage CPU counters (shine_stage_cpu_seconds_total) from /metrics."""
    text = requests.get(url + "/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("shine_stage_cpu_seconds_total{"):
            labels, value = line.rsplit(" ", 1)
            stage = labels.split('stage="', 1)[1].split('"', 1)[0]
            totals[stage] = totals.get(stage, 0.0) + float(value)
    return totals


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each figure of repeated runs as median, min and max."""
    return {key: summary([run[key] for run in runs]) for key in runs[0]}
