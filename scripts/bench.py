"""Benchmark the running stack against the targets: latency, concurrency, memory, hot swap.

Starts the model server and the orchestrator (gunicorn) over a temporary copy of model_repo/, sends
real photos from ../shared/data (a 12 MP JPEG is made by upscaling one, in a temp folder), and prints a
table that it also writes to --out (Markdown) and beside it as JSON. Timings on a shared machine vary:
this reports what it measured, it asserts nothing.

    python scripts/bench.py --out reports/benchmark.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.decode.images import decode_image  # noqa: E402
from orchestrator.face.alignment import align_face  # noqa: E402
from orchestrator.face.detection import FaceDetector  # noqa: E402
from orchestrator.face.landmarks import FaceMesh  # noqa: E402
from orchestrator.face.views import FaceGeometry  # noqa: E402
from orchestrator.predict.client import PredictClient  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402
from scripts.stack import ModelServerProcess, OrchestratorProcess, pss_kb, wait_http  # noqa: E402
from serving import contract  # noqa: E402
from serving.ops import ModelServerOps  # noqa: E402
from serving.repository import versions_on_disk  # noqa: E402

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
    started = time.perf_counter()
    response = requests.post(url + "/api/v2/analyze/guest", files={"image": ("p.jpg", photo)}, timeout=120)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
    return response.status_code, body, elapsed_ms


def sequential(url: str, photo: bytes, runs: int) -> dict[str, float]:
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


class MemorySampler:
    """Samples PSS of process groups every 0.25 s while running."""

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


def concurrent_load(url: str, photo: bytes, concurrency: int, requests_total: int) -> dict[str, float]:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        status, _body, elapsed = post(url, photo)
        with lock:
            statuses.append(status)
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests_total)))
    duration = time.perf_counter() - started
    return {
        "requests": float(requests_total),
        "errors": float(sum(1 for s in statuses if s != 200)),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "throughput_rps": requests_total / duration,
    }


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


def model_server_alone(
    address: str, face: np.ndarray, mask: np.ndarray, concurrency: int, seconds: float
) -> dict[str, float]:
    """Faces per second the model server sustains on the same face, called directly over gRPC."""
    client = PredictClient(Settings(model_server_address=address, predict_timeout_s=30.0))
    client.predict(face, mask)
    done = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            client.predict(face, mask)
            with lock:
                done += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sequential_ms = []
    for _ in range(20):
        t0 = time.perf_counter()
        client.predict(face, mask)
        sequential_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "faces_per_s": done / (time.perf_counter() - started),
        "predict_p50_ms_one_face": percentile(sequential_ms, 50),
    }


def model_time_in_process(version_dir: Path, face: np.ndarray, mask: np.ndarray) -> float:
    """p50 milliseconds of the SavedModel alone on one face (aligned image and mask), in this process,
    on 2 intra-op threads as the model server runs it."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    serve = tf.saved_model.load(str(version_dir)).signatures[contract.SIGNATURE_NAME]
    inputs = {"face": tf.constant(face[None]), "mask": tf.constant(mask[None])}
    for _ in range(5):
        serve(**inputs)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        serve(**inputs)
        times.append((time.perf_counter() - t0) * 1000)
    return percentile(times, 50)


def hot_swap(url: str, model: ModelServerProcess, base: Path, photo: bytes) -> dict[str, Any]:
    """Copy the newest version in under a new number, roll back and unpin while 20 clients keep asking;
    count failures."""
    versions = versions_on_disk(base)
    new = versions[-1] + 1
    statuses: list[int] = []
    seen: set[int] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            status, body, _ = post(url, photo)
            with lock:
                statuses.append(status)
                if status == 200:
                    seen.add(body["model"]["version"])

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    ops = ModelServerOps(model.address, model.config)
    try:
        time.sleep(2)
        # Copied in by hand, the TF Serving way: staged under a name no server reads, then renamed.
        # Nothing in it is edited: the calibration is bound to the model's content, not to a number.
        staged = base / f"_staging-{new}-bench"
        shutil.copytree(base / str(versions[-1]), staged)
        staged.rename(base / str(new))
        ops.wait_for({*versions[-1:], new} if len(versions) >= 1 else {new})
        time.sleep(3)
        rolled_to = ops.rollback()
        time.sleep(3)
        ops.unpin()
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        ops.close()
    return {
        "requests": len(statuses),
        "failed": sum(1 for s in statuses if s != 200),
        "versions_seen": sorted(seen),
        "copied_in": new,
        "rolled_back_to": rolled_to,
    }


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmark",
        "",
        f"Measured {results['when']} on {results['machine']} by `python scripts/bench.py`.",
        "Shared machine: other work may have been running; numbers are what this run measured.",
        "",
        "## Latency, one request at a time (server time = the answer's timing_ms.total)",
        "",
        "| photo | server p50 ms | server p90 ms | client wall p50 ms | decode | face | quality | predict"
        " | postscore |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["sequential"].items():
        lines.append(
            f"| {name} | {r['server_p50_ms']:.1f} | {r['server_p90_ms']:.1f} | {r['wall_p50_ms']:.1f} | "
            + " | ".join(
                f"{r.get(s + '_p50_ms', float('nan')):.1f}"
                for s in ("decode", "face", "quality", "predict", "postscore")
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
    c = results["concurrency"]
    alone = results["model_server_alone"]
    cpu = results["cpu_ms_per_request"]
    lines += [
        "",
        f"## Concurrency {results['concurrency_level']} (1 MP selfie)",
        "",
        "| requests | errors | p50 ms | p99 ms | throughput req/s | model server alone faces/s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {c['requests']:.0f} | {c['errors']:.0f} | {c['p50_ms']:.0f} | {c['p99_ms']:.0f} | "
        f"{c['throughput_rps']:.1f} | {alone['faces_per_s']:.1f} | "
        f"{c['throughput_rps'] / alone['faces_per_s']:.0%} |",
        "",
        "## Model time for one face (aligned 384 px image and its region mask)",
        "",
        "| SavedModel in process, p50 ms | Predict over gRPC incl. batching wait, p50 ms |",
        "| --- | --- |",
        f"| {results['model_ms_in_process']:.1f} | {alone['predict_p50_ms_one_face']:.1f} |",
        "",
        f"## CPU per request during the concurrency-{results['concurrency_level']} run",
        "",
        "| orchestrator (master + workers) ms | model server ms | both ms |",
        "| --- | --- | --- |",
        f"| {cpu['orchestrator']:.0f} | {cpu['model_server']:.0f} | "
        f"{cpu['orchestrator'] + cpu['model_server']:.0f} |",
        "",
        f"## Memory (PSS, peak during the concurrency-{results['concurrency_level']} run)",
        "",
        "| orchestrator (master + workers) MB | model server MB | whole stack MB |",
        "| --- | --- | --- |",
        f"| {results['pss_mb']['orchestrator']:.0f} | {results['pss_mb']['model_server']:.0f} | "
        f"{results['pss_mb']['orchestrator'] + results['pss_mb']['model_server']:.0f} |",
        "",
        "## Hot swap and rollback under 20 concurrent clients",
        "",
        "The newest version is copied in by hand under a new number (staged, then renamed; nothing in it "
        "edited), then `serving.ops` rolls back and unpins.",
        "",
        "| requests | failed | versions seen | copied in as | rolled back to |",
        "| --- | --- | --- | --- | --- |",
        f"| {results['hot_swap']['requests']} | {results['hot_swap']['failed']} | "
        f"{results['hot_swap']['versions_seen']} | {results['hot_swap']['copied_in']} | "
        f"{results['hot_swap']['rolled_back_to']} |",
        "",
    ]
    return "\n".join(lines + _targets(results))


def _targets(results: dict[str, Any]) -> list[str]:
    """The brief's targets beside what this run measured."""
    selfie, large = results["sequential"].values()
    detect_selfie, detect_large = results["detection"].values()
    c = results["concurrency"]
    ratio = c["throughput_rps"] / results["model_server_alone"]["faces_per_s"]
    orchestrator = results["pss_mb"]["orchestrator"]
    stack = orchestrator + results["pss_mb"]["model_server"]
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
        (
            "detection stage p50, 1 MP / 12 MP",
            "< 12 ms",
            f"{detect_selfie['detection_p50_ms']:.1f} / {detect_large['detection_p50_ms']:.1f} ms",
            max(detect_selfie["detection_p50_ms"], detect_large["detection_p50_ms"]) < 12,
        ),
        (
            "model time, one face",
            "<= 35 ms",
            f"{results['model_ms_in_process']:.1f} ms",
            results["model_ms_in_process"] <= 35,
        ),
        ("concurrency 20: errors", "0", f"{c['errors']:.0f}", c["errors"] == 0),
        ("concurrency 20: p99", "< 1.5 s", f"{c['p99_ms'] / 1000:.2f} s", c["p99_ms"] < 1500),
        ("throughput / model server alone", ">= 90%", f"{ratio:.0%}", ratio >= 0.9),
        ("orchestrator PSS", "< 500 MB", f"{orchestrator:.0f} MB", orchestrator < 500),
        ("whole stack PSS", "< 1.5 GB", f"{stack:.0f} MB", stack < 1536),
        (
            "hot swap + rollback: failed requests",
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
    args = parser.parse_args(argv)
    if not (DATA / "faces").is_dir():
        print(f"the benchmark needs real photos at {DATA}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "model_repo"
        shutil.copytree(ROOT / "model_repo", repo)
        config = work / "models.config"
        shutil.copy(ROOT / "serving" / "models.config", config)
        inputs = make_inputs(work)
        model = ModelServerProcess(work / "model_server.log", config=config, model_repo=repo)
        model.start()
        orchestrator = OrchestratorProcess(
            model.address,
            work / "gunicorn.log",
            SHINE_RATE_LIMIT_BURST="1000000",
            SHINE_MODEL_REPO_DIR=str(repo),
        )
        try:
            orchestrator.start()
            wait_http(orchestrator.url + "/health", 200, 60)
            results: dict[str, Any] = {
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
                "concurrency_level": args.concurrency,
            }
            results["sequential"] = {
                name: sequential(orchestrator.url, path.read_bytes(), args.runs)
                for name, path in inputs.items()
            }
            selfie = next(iter(inputs.values())).read_bytes()
            assert model.process is not None
            groups = {"orchestrator": orchestrator.pids, "model_server": lambda: [model.process.pid]}  # type: ignore[union-attr]
            cpu_before = {name: cpu_seconds(pids()) for name, pids in groups.items()}
            with MemorySampler(groups) as sampler:
                results["concurrency"] = concurrent_load(
                    orchestrator.url, selfie, args.concurrency, args.requests
                )
            results["pss_mb"] = sampler.peak_mb
            results["cpu_ms_per_request"] = {
                name: (cpu_seconds(pids()) - cpu_before[name]) * 1000.0 / args.requests
                for name, pids in groups.items()
            }
            results["detection"] = {
                name: detection_stage(path.read_bytes(), args.runs) for name, path in inputs.items()
            }
            image = decode_image(selfie, max_pixels=64_000_000, long_side_px=2000)
            geometry = FaceGeometry().analyse(image.rgb)
            face, mask = geometry.face, geometry.mask.labels
            results["model_server_alone"] = model_server_alone(
                model.address, face, mask, args.concurrency, 15.0
            )
            base = repo / contract.MODEL_NAME
            results["model_ms_in_process"] = model_time_in_process(
                base / str(versions_on_disk(base)[-1]), face, mask
            )
            results["hot_swap"] = hot_swap(orchestrator.url, model, base, selfie)
        finally:
            orchestrator.stop()
            model.stop()
    text = render(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
