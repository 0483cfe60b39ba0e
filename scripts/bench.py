"""Benchmark: Shine side by side with the monolith it replaces, and the model server alone.

One run, one machine, the same photos, one system after the other: Shine (the local model server and
the orchestrator under gunicorn, over a temporary copy of model_repo/), the naive baseline
(scripts/monolith.py: TensorFlow inside every gunicorn worker, the original deployment's settings scaled
to 2 cores) and the model server alone (the same aligned face sent straight over gRPC). For each:
latency one request at a time and at concurrency 20 (what a client sees), throughput, errors and the
PSS of the whole stack, each the median of 3 repetitions with min and max; then Shine's per-stage CPU,
the model server's CPU per request beside the model's own time in process, its face stage in process,
128 and 256 clients at once against Shine and the monolith (answers, 503 OVERLOADED, answers later
than the deadline) and hot swap under load. Prints a Markdown report and
writes it to --out (JSON beside it). Timings on a shared machine vary: this reports what it measured,
it asserts nothing.

    python scripts/bench.py --out reports/benchmark.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.decode.images import decode_image  # noqa: E402
from orchestrator.face.alignment import align_face  # noqa: E402
from orchestrator.face.detection import FaceDetector  # noqa: E402
from orchestrator.face.landmarks import FaceMesh  # noqa: E402
from orchestrator.face.patches import PatchCutter, cut_slots  # noqa: E402
from orchestrator.face.scale import ScaleReader  # noqa: E402
from orchestrator.face.stage import FaceGeometry  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402
from scripts import monolith  # noqa: E402
from scripts.load import (  # noqa: E402
    DATA,
    MemorySampler,
    cpu_seconds,
    http_call,
    make_inputs,
    overload_call,
    percentile,
    post,
    predict_call,
    run_load,
    run_overload,
    sequential,
    stage_cpu_seconds,
    summarise,
)
from scripts.stack import (  # noqa: E402
    AdmissionProcess,
    ModelServerProcess,
    OrchestratorProcess,
    free_port,
    process_group,
    terminate,
    wait_http,
)
from serving import contract  # noqa: E402
from serving.ops import ModelServerOps  # noqa: E402
from serving.repository import reads_patches, versions_on_disk  # noqa: E402
from tests.repos import BAD_VERSIONS  # noqa: E402

REPETITIONS = 3
# Clients at once in the overload runs, and requests each sends (one after the other).
OVERLOAD_CONCURRENCY = (128, 256)
OVERLOAD_ROUNDS = 3
# An answer later than this is one its client gave up on (Shine's default SHINE_ANSWER_DEADLINE_S).
DEADLINE_S = Settings().answer_deadline_s


def detection_stage(photo: bytes, runs: int) -> dict[str, float]:
    """p50 milliseconds, in this process, of the detection stage (BlazeFace, the two mesh passes, the
    alignment and the warp) and of the whole face stage (that plus the region mask and the view)."""
    rgb = decode_image(photo, max_pixels=64_000_000, long_side_px=2000).rgb
    detector, mesh, geometry = FaceDetector(), FaceMesh(), FaceGeometry()
    detect_ms, face_ms = [], []
    for _ in range(runs + 3):
        t0 = time.perf_counter()
        detection = detector.detect(rgb)[0]
        points = mesh.landmarks(rgb, detection).points
        align_face(points).warp(rgb)
        t1 = time.perf_counter()
        geometry.analyse(rgb)
        t2 = time.perf_counter()
        detect_ms.append((t1 - t0) * 1000)
        face_ms.append((t2 - t1) * 1000)
    return {
        "detection_p50_ms": percentile(detect_ms[3:], 50),
        "face_stage_p50_ms": percentile(face_ms[3:], 50),
    }


def model_time_in_process(
    version_dir: Path, face: np.ndarray, mask: np.ndarray, patches: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, float]:
    """The SavedModel alone on one face (aligned image and mask, and its patch slots for a contract-4
    version), in this process, with the model server's TensorFlow threads: p50 milliseconds, and CPU
    milliseconds per call (this process's CPU over 50 calls: the figure the model server's CPU per
    request is held against)."""
    import tensorflow as tf

    from serving.local_server import INTRA_OP_THREADS

    tf.config.threading.set_intra_op_parallelism_threads(INTRA_OP_THREADS)
    serve = tf.saved_model.load(str(version_dir)).signatures[contract.SIGNATURE_NAME]
    inputs = {"face": tf.constant(face[None]), "mask": tf.constant(mask[None])}
    if patches is not None:
        inputs |= {
            spec.name: tf.constant(a[None]) for spec, a in zip(contract.PATCH_INPUTS, patches, strict=True)
        }
    for _ in range(5):
        serve(**inputs)
    times = []
    cpu_before = cpu_seconds([os.getpid()])
    for _ in range(50):
        t0 = time.perf_counter()
        serve(**inputs)
        times.append((time.perf_counter() - t0) * 1000)
    cpu_ms = (cpu_seconds([os.getpid()]) - cpu_before) * 1000.0 / len(times)
    return {"p50_ms": percentile(times, 50), "cpu_ms": cpu_ms, "intra_op_threads": INTRA_OP_THREADS}


def measures_time_in_process(face: np.ndarray, mask: np.ndarray) -> float:
    """p50 milliseconds of the fixed-filter measures alone (export.measures) on one face, on the threads
    model_time_in_process set (it runs first): the rest of the model's time is its acne head."""
    import tensorflow as tf

    from export.measures import measure_faces

    size = contract.FACE_SIZE_PX
    graph = tf.function(
        lambda f, m: measure_faces(f, m, contract.MAX_LESIONS),
        input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.uint8),
            tf.TensorSpec([None, size, size], tf.uint8),
        ],
    )
    inputs = (tf.constant(face[None]), tf.constant(mask[None]))
    for _ in range(5):
        graph(*inputs)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        graph(*inputs)
        times.append((time.perf_counter() - t0) * 1000)
    return percentile(times, 50)


def _figures(one: dict[str, float], many: dict[str, float]) -> dict[str, float]:
    """One repetition's figures: the one-at-a-time run (c1_*) and the concurrent run."""
    return {
        "c1_p50_ms": one["p50_ms"],
        "c1_p99_ms": one["p99_ms"],
        "c1_throughput_rps": one["throughput_rps"],
        "c1_errors": one["errors"],
        "p50_ms": many["p50_ms"],
        "p99_ms": many["p99_ms"],
        "throughput_rps": many["throughput_rps"],
        "errors": many["errors"],
    }


def measure_service(
    url: str, photo: bytes, groups: dict[str, Any], concurrency: int, total: int
) -> dict[str, Any]:
    """Repeated runs at concurrency 1 and `concurrency` against an analysis service; PSS peaks and CPU
    per request of its process groups during the concurrent runs."""
    runs = []
    for _ in range(REPETITIONS):
        one = run_load(http_call(url, photo), 1, max(20, total // 10))
        cpu_before = {name: cpu_seconds(pids()) for name, pids in groups.items()}
        with MemorySampler(groups) as sampler:
            many = run_load(http_call(url, photo), concurrency, total)
        cpu = {
            name: (cpu_seconds(pids()) - cpu_before[name]) * 1000.0 / total for name, pids in groups.items()
        }
        runs.append(
            {
                **_figures(one, many),
                "pss_mb": sum(sampler.peak_mb.values()),
                **{f"pss_mb_{name}": mb for name, mb in sampler.peak_mb.items()},
                **{f"cpu_ms_{name}": ms for name, ms in cpu.items()},
            }
        )
    return summarise(runs)


def measure_model_alone(
    address: str,
    pid: int,
    face: np.ndarray,
    mask: np.ndarray,
    patches: tuple[np.ndarray, np.ndarray] | None,
    concurrency: int,
    total: int,
) -> dict[str, Any]:
    """The same repeated runs sending the aligned face straight to the model server over gRPC, with the
    server's CPU per request in the concurrent run."""
    runs = []
    for _ in range(REPETITIONS):
        one = run_load(predict_call(address, face, mask, patches), 1, max(20, total // 10))
        cpu_before = cpu_seconds([pid])
        with MemorySampler({"model_server": lambda: [pid]}) as sampler:
            many = run_load(predict_call(address, face, mask, patches), concurrency, total)
        cpu_ms = (cpu_seconds([pid]) - cpu_before) * 1000.0 / total
        runs.append(
            {**_figures(one, many), "pss_mb": sampler.peak_mb["model_server"], "cpu_ms_model_server": cpu_ms}
        )
    return summarise(runs)


def measure_overload(url: str, photo: bytes, levels: list[int]) -> dict[str, dict[str, float]]:
    """One run per number of clients in `levels`, OVERLOAD_ROUNDS requests per client."""
    return {
        str(level): run_overload(overload_call(url, photo), level, OVERLOAD_ROUNDS * level, DEADLINE_S)
        for level in levels
    }


class MonolithProcess:
    """The baseline under gunicorn: sync workers, each loading TensorFlow itself (scripts/monolith.py)."""

    def __init__(self, version_dir: Path, repo: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.env = {
            **os.environ,
            "SHINE_MONOLITH_VERSION_DIR": str(version_dir),
            "SHINE_MODEL_REPO_DIR": str(repo),
            "SHINE_RATE_LIMIT_BURST": "1000000",
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "--workers",
            str(monolith.WORKERS),
            "--worker-class",
            "sync",
            "--timeout",
            str(monolith.TIMEOUT_S),
            "--bind",
            f"127.0.0.1:{self.port}",
            "scripts.monolith:create_monolith()",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_http(self.url + "/api/v2/openapi.json", 200, 300)

    def warm(self, photo: bytes) -> None:
        """Every worker loads TensorFlow on its first analysis: send enough at once to reach them all."""
        run_load(http_call(self.url, photo), monolith.WORKERS * 2, monolith.WORKERS * 6)

    def pids(self) -> list[int]:
        assert self.process is not None
        return process_group(self.process.pid)

    def stop(self) -> None:
        terminate(self.process)


def hot_swap(url: str, ops: ModelServerOps, base: Path, photo: bytes) -> dict[str, Any]:
    """While 20 clients keep asking: a good copy of the newest version dropped in under a new number, then
    the six kinds of bad drop in a row (tests/repos.py), then each removed with rm -rf (the serving copy
    last), then serving.ops rollback and unpin. One row per step: requests, failures, who answered."""
    versions = versions_on_disk(base)
    source = versions[-1]
    copied = source + 1
    bad = {copied + 1 + i: (code, edit) for i, (code, edit) in enumerate(BAD_VERSIONS.items())}
    answers: list[tuple[float, int, int | None]] = []  # (ended, status, version)
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            status, body, _ = post(url, photo)
            with lock:
                answers.append((time.monotonic(), status, body.get("model", {}).get("version")))

    def stage_in(version: int, edit: Any = None) -> float:
        # The TF Serving way: staged under a name no server reads, edited there, renamed in one step.
        staged = base / f"_staging-{version}-bench"
        shutil.copytree(base / str(source), staged)
        if edit is not None:
            edit(staged)
        staged.rename(base / str(version))
        return time.monotonic()

    def wait(what: str, done: Any, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"hot swap: {what} not seen in {timeout_s:g} s")
            time.sleep(0.2)

    steps: list[dict[str, Any]] = []

    def step(name: str, since: float, outcome: str) -> None:
        with lock:
            seen = [a for a in answers if a[0] >= since]
        steps.append(
            {
                "step": name,
                "requests": len(seen),
                "failed": sum(1 for _, status, _ in seen if status != 200),
                "answered_by": sorted({v for _, status, v in seen if status == 200 and v is not None}),
                "outcome": outcome,
            }
        )

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        dropped = stage_in(copied)
        wait("answers from the copy", lambda: any(a[2] == copied and a[0] >= dropped for a in answers))
        first = min(a[0] for a in answers if a[2] == copied and a[0] >= dropped)
        step("good copy dropped in", dropped, f"served after {first - dropped:.1f} s")
        for version, (code, edit) in bad.items():
            since = stage_in(version, edit)
            wait(f"version {version} refused", lambda v=version: ops.state().decisions.get(v) is not None)
            decision = ops.state().decisions[version]
            verdict = f"{decision.verdict} ({decision.code}) after {time.monotonic() - since:.1f} s"
            step(f"bad drop: {code}", since, verdict)
        since = time.monotonic()
        for version in [*bad, copied]:
            shutil.rmtree(base / str(version))
        wait("the copy out of service", lambda: ops.state().served[:1] == (source,))
        time.sleep(3)
        step("all removed with rm -rf, the serving copy last", since, f"serving {list(ops.state().served)}")
        stage_in(copied)
        wait("the copy back", lambda: ops.state().served[:1] == (copied,))
        since = time.monotonic()
        rolled_to = ops.rollback()
        time.sleep(3)
        step("serving.ops rollback", since, f"pinned {rolled_to}")
        since = time.monotonic()
        ops.unpin()
        time.sleep(3)
        step("serving.ops unpin", since, f"serving {list(ops.state().served)}")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return {
        "requests": len(answers),
        "failed": sum(1 for _, status, _ in answers if status != 200),
        "versions_seen": sorted({v for _, status, v in answers if status == 200 and v is not None}),
        "steps": steps,
    }


def _cell(figure: dict[str, float], digits: int = 0, scale: float = 1.0) -> str:
    median, low, high = (figure[k] * scale for k in ("median", "min", "max"))
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def render(results: dict[str, Any]) -> str:
    systems = results["systems"]
    lines = [
        "# Benchmark",
        "",
        f"Measured {results['when']} on {results['machine']} by `python scripts/bench.py` (`make bench`), "
        "one system after the other on the same machine and photo (the 1 MP selfie). A shared machine: "
        "numbers are what this run measured.",
        "",
        f"## Shine, the monolith it replaces, and the model server alone (median of {REPETITIONS} runs, "
        "min-max)",
        "",
        "Latency is what the client sees (ms). Concurrency "
        f"{results['concurrency_level']}: {results['requests']} requests per run. PSS: the whole stack's "
        "peak during the concurrent run (shared pages counted once).",
        "",
        "| system | c=1 p50 | c=1 p99 | c=20 p50 | c=20 p99 | throughput req/s | errors | PSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in systems.items():
        lines.append(
            f"| {name} | {_cell(r['c1_p50_ms'])} | {_cell(r['c1_p99_ms'])} | {_cell(r['p50_ms'])} | "
            f"{_cell(r['p99_ms'])} | {_cell(r['throughput_rps'], 1)} | {_cell(r['errors'])} | "
            f"{_cell(r['pss_mb'])} |"
        )
    shine, mono, alone = (systems[k] for k in ("Shine", "monolith", "model server alone"))
    per_gb = {
        k: systems[k]["throughput_rps"]["median"] / (systems[k]["pss_mb"]["median"] / 1024) for k in systems
    }
    ratio_gb = per_gb["Shine"] / per_gb["monolith"]
    ratio_mono = shine["throughput_rps"]["median"] / mono["throughput_rps"]["median"]
    ratio_alone = shine["throughput_rps"]["median"] / alone["throughput_rps"]["median"]
    lower_p99 = shine["p99_ms"]["median"] < mono["p99_ms"]["median"]
    lines += [
        "",
        "| ratio | measured | target |",
        "| --- | --- | --- |",
        f"| Shine / monolith, throughput at concurrency {results['concurrency_level']} | {ratio_mono:.2f}x "
        f"({shine['throughput_rps']['median']:.1f} against {mono['throughput_rps']['median']:.1f} req/s) | "
        f">= 1.2x: {'met' if ratio_mono >= 1.2 else '**not met**'} |",
        f"| Shine / monolith, throughput per GB of PSS | {ratio_gb:.1f}x ({per_gb['Shine']:.1f} against "
        f"{per_gb['monolith']:.1f} req/s per GB) | >= 3x: {'met' if ratio_gb >= 3 else '**not met**'} |",
        f"| Shine / monolith, p99 at concurrency {results['concurrency_level']} | "
        f"{shine['p99_ms']['median']:.0f} against {mono['p99_ms']['median']:.0f} ms | lower: "
        f"{'met' if lower_p99 else '**not met**'} |",
        f"| Shine / model server alone, throughput | {ratio_alone:.0%} | >= 90%: "
        f"{'met' if ratio_alone >= 0.9 else '**not met**'} |",
        "",
    ]
    stages = results["stage_cpu_ms"]
    model = results["model_in_process"]
    server_cpu = alone["cpu_ms_model_server"]["median"]
    lines += [
        "## Where the time goes (CPU per request, concurrency run)",
        "",
        "| process | CPU ms per request |",
        "| --- | --- |",
        f"| Shine orchestrator (master + workers) | {_cell(shine['cpu_ms_orchestrator'])} |",
        f"| Shine model server | {_cell(shine['cpu_ms_model_server'])} |",
        f"| model server alone (the aligned face over gRPC) | {_cell(alone['cpu_ms_model_server'], 1)} |",
        f"| the model in process, one face ({model['intra_op_threads']} thread per op, as the model "
        f"server runs it) | {model['cpu_ms']:.1f} CPU, {model['p50_ms']:.1f} wall p50 |",
        f"| monolith (master + workers) | {_cell(mono['cpu_ms_monolith'])} |",
        "",
        f"The model server alone spends {server_cpu / model['p50_ms']:.2f}x the model's in-process time "
        f"in CPU per request ({server_cpu / model['cpu_ms']:.2f}x the model's own CPU per call): the "
        "rest is serving (gRPC, protos, batching, the call into TensorFlow).",
        "",
        "Orchestrator, per stage (CPU of the request's thread, from `shine_stage_cpu_seconds_total`; helper "
        "threads OpenCV starts are in the process total above, not here):",
        "",
        "| " + " | ".join(stages) + " |",
        "| " + " | ".join("---" for _ in stages) + " |",
        "| " + " | ".join(f"{ms:.1f}" for ms in stages.values()) + " |",
        "",
        f"Model, one face in process: {model['p50_ms']:.1f} ms, of which the fixed-filter measures "
        f"{results['measures_ms_in_process']:.1f} ms and the acne head the rest.",
        "",
        *render_overload(results),
        "## Shine, one request at a time (server time = the answer's timing_ms.total)",
        "",
        "The newest version, then the one before it pinned on the same stack (the same photos, minutes "
        "apart).",
        "",
        "| version | photo | server p50 ms | server p90 ms | client wall p50 ms | decode | face | quality | "
        "patches | predict | postscore |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    previous = results.get("previous_version") or {}
    runs = [("newest", results["sequential"])]
    if previous:
        runs = [
            (str(previous["newest"]), results["sequential"]),
            (str(previous["version"]), previous["sequential"]),
        ]
    for version, sequential_runs in runs:
        for name, r in sequential_runs.items():
            lines.append(
                f"| {version} | {name} | {r['server_p50_ms']:.1f} | {r['server_p90_ms']:.1f} | "
                f"{r['wall_p50_ms']:.1f} | "
                + " | ".join(
                    f"{r.get(s + '_p50_ms', float('nan')):.1f}"
                    for s in ("decode", "face", "quality", "patches", "predict", "postscore")
                )
                + " |"
            )
    lines += [
        "",
        "## Face stage in process, p50 ms (detection: BlazeFace, two mesh passes, alignment and warp)",
        "",
        "| photo | detection | whole face stage (with the region mask) |",
        "| --- | --- | --- |",
    ]
    for name, r in results["detection"].items():
        lines.append(f"| {name} | {r['detection_p50_ms']:.1f} | {r['face_stage_p50_ms']:.1f} |")
    swap = results["hot_swap"]
    lines += [
        "",
        "## Hot swap, bad drops and rollback under 20 concurrent clients",
        "",
        "Admission (serving.admission) runs beside the model server. The newest version is copied in by "
        "hand under a new number (staged, then renamed; nothing in it edited); then, in a row, six bad "
        "versions (a cut-short calibration, cut-short weights, a calibration of another model, a signature "
        "that is not the contract's, an empty folder, a half-copied folder renamed into place; "
        "tests/repos.py); then each is removed with `rm -rf`, the serving copy last; then the copy again, "
        "and `serving.ops` rolls back and unpins.",
        "",
        "| step | requests | failed | answered by | outcome |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {s['step']} | {s['requests']} | {s['failed']} | {s['answered_by']} | {s['outcome']} |"
            for s in swap["steps"]
        ),
        f"| all steps | {swap['requests']} | {swap['failed']} | {swap['versions_seen']} | |",
        "",
    ]
    return "\n".join(lines + _targets(results))


def render_overload(results: dict[str, Any]) -> list[str]:
    """The overload runs: what many more clients than the cores can serve get."""
    levels = " and ".join(results["overload"]["Shine"])
    lines = [
        f"## Overload: {levels} clients at once (one run each, {OVERLOAD_ROUNDS} requests per client)",
        "",
        "Shine admits analyses first in, first out across its workers and refuses at once (503 `OVERLOADED`, "
        f"`Retry-After`) a request it could not answer within {DEADLINE_S:g} s; the monolith is the naive "
        "baseline as deployed (a sync worker takes one request at a time, the rest wait unseen in the "
        "kernel's listen queue).",
        "",
        "| system | clients | requests | answers | 503 OVERLOADED (p99 ms) | other errors | answers later "
        f"than {DEADLINE_S:g} s | p50 ms | p99 ms | answers/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, levels in results["overload"].items():
        for level, r in levels.items():
            lines.append(
                f"| {system} | {level} | {r['requests']:.0f} | {r['answers']:.0f} | {r['overloaded']:.0f} "
                f"({r['overloaded_p99_ms']:.0f}) | {r['other']:.0f} | {r['late_answers']:.0f} | "
                f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['answers_per_s']:.1f} |"
            )
    return [*lines, ""]


def _previous_rows(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The newest version's 1 MP server p50 against the version before it, in this run."""
    previous = results.get("previous_version")
    if not previous:
        return []
    now = next(iter(results["sequential"].values()))["server_p50_ms"]
    before = next(iter(previous["sequential"].values()))["server_p50_ms"]
    return [
        (
            f"server p50, 1 MP selfie: version {previous['newest']} against {previous['version']}",
            "<= +20%",
            f"{now:.0f} against {before:.0f} ms ({100 * (now / before - 1):+.0f}%)",
            now <= 1.2 * before,
        )
    ]


def _targets(results: dict[str, Any]) -> list[str]:
    """The brief's targets beside what this run measured."""
    selfie, large = results["sequential"].values()
    detect_selfie, detect_large = results["detection"].values()
    shine = results["systems"]["Shine"]
    alone = results["systems"]["model server alone"]
    ratio = shine["throughput_rps"]["median"] / alone["throughput_rps"]["median"]
    orchestrator = shine["pss_mb_orchestrator"]["median"]
    stack = shine["pss_mb"]["median"]
    server_cpu = alone["cpu_ms_model_server"]["median"]
    cpu_ratio = server_cpu / results["model_in_process"]["p50_ms"]
    overload = results["overload"]["Shine"].values()
    levels = " and ".join(results["overload"]["Shine"])
    late = sum(r["late_answers"] for r in overload)
    other = sum(r["other"] for r in overload)
    rows = [
        (
            "server p50, 12 MP JPEG",
            "< 100 ms",
            f"{large['server_p50_ms']:.0f} ms",
            large["server_p50_ms"] < 100,
        ),
        (
            "server p50, 1 MP selfie",
            "< 45 ms",
            f"{selfie['server_p50_ms']:.0f} ms",
            selfie["server_p50_ms"] < 45,
        ),
        *_previous_rows(results),
        (
            "detection stage p50, 1 MP / 12 MP",
            "< 12 ms",
            f"{detect_selfie['detection_p50_ms']:.1f} / {detect_large['detection_p50_ms']:.1f} ms",
            max(detect_selfie["detection_p50_ms"], detect_large["detection_p50_ms"]) < 12,
        ),
        (
            "model time, one face",
            "<= 35 ms",
            f"{results['model_in_process']['p50_ms']:.1f} ms",
            results["model_in_process"]["p50_ms"] <= 35,
        ),
        (
            "model server alone: CPU per request / the model's in-process time",
            "<= 1.3x",
            f"{server_cpu:.1f} / {results['model_in_process']['p50_ms']:.1f} ms = {cpu_ratio:.2f}x",
            cpu_ratio <= 1.3,
        ),
        ("concurrency 20: errors", "0", f"{shine['errors']['max']:.0f}", shine["errors"]["max"] == 0),
        (
            "concurrency 20: p99",
            "< 1.5 s",
            f"{shine['p99_ms']['median'] / 1000:.2f} s",
            shine["p99_ms"]["median"] < 1500,
        ),
        ("throughput / model server alone", ">= 90%", f"{ratio:.0%}", ratio >= 0.9),
        ("orchestrator PSS", "< 500 MB", f"{orchestrator:.0f} MB", orchestrator < 500),
        ("whole stack PSS", "< 1.5 GB", f"{stack:.0f} MB", stack < 1536),
        (
            f"concurrency {levels}: errors other than 503 OVERLOADED",
            "0",
            f"{other:.0f}",
            other == 0,
        ),
        (
            f"concurrency {levels}: answers later than {DEADLINE_S:g} s",
            "0",
            f"{late:.0f}",
            late == 0,
        ),
        (
            "hot swap, bad drops, rm -rf, rollback: failed requests",
            "0",
            str(results["hot_swap"]["failed"]),
            results["hot_swap"]["failed"] == 0,
        ),
    ]
    lines = [
        "## Against the targets",
        "",
        "| target | wanted | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {want} | {got} | {'yes' if ok else '**no**'} |" for name, want, got, ok in rows]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmark.md")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--overload",
        type=lambda text: [int(level) for level in text.split(",")],
        default=list(OVERLOAD_CONCURRENCY),
        help="clients at once in the overload runs, comma-separated (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not (DATA / "faces").is_dir():
        print(f"the benchmark needs real photos at {DATA}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
        "concurrency_level": args.concurrency,
        "requests": args.requests,
        "systems": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "model_repo"
        shutil.copytree(ROOT / "model_repo", repo)
        config = work / "models.config"
        shutil.copy(ROOT / "serving" / "models.config", config)
        inputs = make_inputs(work)
        selfie = next(iter(inputs.values())).read_bytes()
        base = repo / contract.MODEL_NAME
        version_dir = base / str(versions_on_disk(base)[-1])
        rgb = decode_image(selfie, max_pixels=64_000_000, long_side_px=2000).rgb
        geometry = FaceGeometry(scale=ScaleReader()).analyse(rgb)
        face, mask = geometry.face, geometry.mask.labels
        slots = cut_slots(PatchCutter(), rgb, geometry.points, geometry.scale)
        # The newest version's inputs: its patch slots too where its signature takes them.
        patches = (slots.rgb, slots.skin) if reads_patches(version_dir) else None
        # The model in this process first: TensorFlow's threads can be set only before anything here uses
        # it (the hot swap's bad drops save a SavedModel).
        results["model_in_process"] = model_time_in_process(version_dir, face, mask, patches)
        results["measures_ms_in_process"] = measures_time_in_process(face, mask)
        # Shine first: the model server alone, then the whole stack over it.
        model = ModelServerProcess(work / "model_server.log", config=config, model_repo=repo)
        model.start()
        admission = AdmissionProcess(model.address, work / "admission.log", config, repo)
        admission.start()
        ops = ModelServerOps(model.address, config, repo)
        deadline = time.monotonic() + 180
        while not ops.state().served and time.monotonic() < deadline:  # admission's first decisions
            time.sleep(0.5)
        orchestrator = OrchestratorProcess(
            model.address,
            work / "gunicorn.log",
            SHINE_RATE_LIMIT_BURST="1000000",
            SHINE_MODEL_REPO_DIR=str(repo),
        )
        try:
            assert model.process is not None
            model_pid = model.process.pid
            results["systems"]["model server alone"] = measure_model_alone(
                model.address, model_pid, face, mask, patches, args.concurrency, args.requests
            )
            orchestrator.start()
            wait_http(orchestrator.url + "/health", 200, 60)
            results["sequential"] = {
                name: sequential(orchestrator.url, path.read_bytes(), args.runs)
                for name, path in inputs.items()
            }
            groups = {"orchestrator": orchestrator.pids, "model_server": lambda: [model_pid]}
            stages_before = stage_cpu_seconds(orchestrator.url)
            answered_before = _answered(orchestrator.url)
            results["systems"]["Shine"] = measure_service(
                orchestrator.url, selfie, groups, args.concurrency, args.requests
            )
            answered = _answered(orchestrator.url) - answered_before
            stages_after = stage_cpu_seconds(orchestrator.url)
            results["stage_cpu_ms"] = {
                stage: (stages_after[stage] - stages_before.get(stage, 0.0)) * 1000.0 / max(1, answered)
                for stage in stages_after
            }
            results["previous_version"] = previous_version(orchestrator.url, ops, base, inputs)
            results["overload"] = {"Shine": measure_overload(orchestrator.url, selfie, args.overload)}
            results["hot_swap"] = hot_swap(orchestrator.url, ops, base, selfie)
        finally:
            ops.close()
            orchestrator.stop()
            admission.stop()
            model.stop()
        results["detection"] = {
            name: detection_stage(path.read_bytes(), args.runs) for name, path in inputs.items()
        }
        # Then the monolith, alone on the machine.
        baseline = MonolithProcess(version_dir, repo, work / "monolith.log")
        try:
            baseline.start()
            baseline.warm(selfie)
            results["systems"]["monolith"] = measure_service(
                baseline.url, selfie, {"monolith": baseline.pids}, args.concurrency, args.requests
            )
            results["overload"]["monolith"] = measure_overload(baseline.url, selfie, args.overload)
        finally:
            baseline.stop()
    results["systems"] = {k: results["systems"][k] for k in ("Shine", "monolith", "model server alone")}
    text = render(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


def previous_version(
    url: str, ops: ModelServerOps, base: Path, inputs: dict[str, Path], runs: int = 30
) -> dict[str, Any]:
    """The version before the newest, pinned on the same stack: its server time one request at a time on
    each photo, beside the newest's (results["sequential"]); then unpinned."""
    newest, previous = versions_on_disk(base)[-1], versions_on_disk(base)[-2]
    photo = next(iter(inputs.values())).read_bytes()

    def serving(version: int) -> None:
        deadline = time.monotonic() + 120
        while post(url, photo)[1].get("model", {}).get("version") != version:
            if time.monotonic() > deadline:
                raise RuntimeError(f"version {version} was not served")
            time.sleep(0.5)

    ops.pin(previous)
    try:
        serving(previous)
        figures = {name: sequential(url, path.read_bytes(), runs) for name, path in inputs.items()}
    finally:
        ops.unpin()
    serving(newest)
    return {"version": previous, "newest": newest, "sequential": figures}


def _answered(url: str) -> float:
    """Analyses answered so far (shine_model_version_answers_total over all versions)."""
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shine_model_version_answers_total{")
    )


if __name__ == "__main__":
    sys.exit(main())
