"""Two replicas kept in step by the bucket, end to end: a real SeaweedFS server, two model servers and two
gunicorn orchestrators, each with its own sync process and folder (as four pods would have), and eight
clients spread over both orchestrators the whole time.

A version published to the bucket reaches every replica's folder within 30 s and is then served by
both (the test logs how long each took); a version whose bytes do not match
its record is served by neither; a label moved with serving.ops' bucket commands reaches both; the
bucket stopped for 20 s changes nothing; no request fails.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from scripts.stack import ModelServerProcess, OrchestratorProcess, terminate, wait_http
from serving.bucket import ModelBucket
from serving.cluster import ClusterOps
from serving.repository import versions_on_disk
from serving.sync import PASS_RECORD, check
from tests.conftest import ROOT, data_dir
from tests.objectstore import BUCKET, READER, WRITER, SeaweedServer, require_weed

logger = logging.getLogger(__name__)

MODEL = "skin_analyzer"
PREFIX = "cluster"
CLIENTS = 8
DEADLINE_S = 30.0
# How long a model server may take to load and warm up a version on a busy shared machine.
LOAD_BOUND_S = 150.0

require_weed()


@dataclass
class Answer:
    at: float
    replica: int
    status: int
    version: int | None
    error: str = ""


@dataclass
class Clients:
    """Eight threads posting a real photo, four to each orchestrator, recording every answer."""

    urls: list[str]
    photo: bytes
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, index: int) -> None:
        replica = index % len(self.urls)
        url = self.urls[replica] + "/api/v2/analyze/guest"
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    response = session.post(url, files={"image": ("face.jpg", self.photo)}, timeout=60)
                    body = response.json()
                    version = body["model"]["version"] if response.status_code == 200 else None
                    answer = Answer(
                        time.monotonic(), replica, response.status_code, version, response.text[:200]
                    )
                except (requests.RequestException, ValueError, KeyError) as exc:
                    answer = Answer(time.monotonic(), replica, 0, None, repr(exc))
                with self.lock:
                    self.answers.append(answer)
                # Eight clients on a shared two-core machine: a short pause leaves the servers and the
                # syncs their share of the CPU.
                self.stop.wait(0.1)

    def since(self, started: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.at >= started]

    def wait_for_version(self, version: int, started: float, timeout_s: float) -> dict[int, float]:
        """Seconds from `started` until every later answer of each replica names `version` (3 in a row)."""
        reached: dict[int, float] = {}
        deadline = started + timeout_s
        while time.monotonic() < deadline and len(reached) < len(self.urls):
            for replica in range(len(self.urls)):
                recent = [a for a in self.since(started) if a.replica == replica][-3:]
                if replica not in reached and len(recent) == 3 and all(a.version == version for a in recent):
                    first = next(
                        a.at for a in self.since(started) if a.replica == replica and a.version == version
                    )
                    reached[replica] = first - started
            time.sleep(0.2)
        return reached


def _pass_ok_since(folder: Path, since: float) -> bool:
    try:
        record = json.loads((folder / PASS_RECORD).read_text())
    except (OSError, ValueError):
        return False
    return bool(record["ok"]) and float(record["pass_started"]) >= since


class SyncProcess:
    def __init__(self, folder: Path, env: dict[str, str], log: Path) -> None:
        self.folder = folder
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "serving.sync",
            "--from",
            f"s3://{BUCKET}/{PREFIX}",
            "--to",
            str(self.folder),
            "--interval-s",
            "1",
            "--remove-after-s",
            "5",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        terminate(self.process)


@pytest.fixture(scope="module")
def photo() -> bytes:
    faces = data_dir("faces")
    return sorted(faces.glob("*.jpg"))[0].read_bytes()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, model_repo: Path
) -> Iterator[tuple[SeaweedServer, ModelBucket, list[Path], list[OrchestratorProcess]]]:
    root = tmp_path_factory.mktemp("cluster")
    store = SeaweedServer(root / "seaweed")
    store.start()
    writer = store.bucket(WRITER, prefix=PREFIX)
    for version in (5, 6):
        writer.publish(MODEL, version, model_repo / MODEL / str(version))
    writer.put_served("models.config", (ROOT / "serving" / "models.config").read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHINE_")} | store.env(READER)
    names = ("model-a", "model-b", "orchestrator-a", "orchestrator-b")
    syncs = [SyncProcess(root / name, env, root / f"sync-{name}.log") for name in names]
    servers: list[ModelServerProcess] = []
    orchestrators: list[OrchestratorProcess] = []
    try:
        for sync in syncs:
            sync.start()
        deadline = time.monotonic() + 60
        while any(check(s.folder, 30) for s in syncs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [check(s.folder, 30) for s in syncs if check(s.folder, 30)]
        servers = [
            ModelServerProcess(
                root / f"{name}.log", config=root / name / "models.config", model_repo=root / name
            )
            for name in names[:2]
        ]
        for server in servers:
            server.start(wait=False)
        for server in servers:
            done = subprocess.run(
                [sys.executable, "-m", "serving.launch", "--wait", server.address, "--timeout", "240"],
                cwd=ROOT,
                capture_output=True,
                timeout=300,
            )
            assert done.returncode == 0, f"model server did not come up; see {server.log}"
        for server, name in zip(servers, names[2:], strict=True):
            orchestrators.append(
                OrchestratorProcess(
                    server.address,
                    root / f"{name}.log",
                    workers=1,
                    model_repo=root / name,
                    SHINE_RATE_LIMIT_BURST="100000",
                    SHINE_MODEL_VERSION_LABEL="stable",
                )
            )
        for orchestrator in orchestrators:
            orchestrator.start()
            wait_http(orchestrator.url + "/health", 200, 120)
        yield store, writer, [s.folder for s in syncs], orchestrators
    finally:
        for orchestrator in orchestrators:
            orchestrator.stop()
        for server in servers:
            server.stop()
        for sync in syncs:
            sync.stop()
        store.stop()


def test_replicas_follow_the_bucket_without_a_failed_request(
    cluster: tuple[SeaweedServer, ModelBucket, list[Path], list[OrchestratorProcess]],
    model_repo: Path,
    photo: bytes,
) -> None:
    store, writer, folders, orchestrators = cluster
    clients = Clients([o.url for o in orchestrators], photo)
    threads = [threading.Thread(target=clients.run, args=(i,), daemon=True) for i in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        assert clients.wait_for_version(6, started, 60).keys() == {0, 1}

        # A new version, published once: in every replica's folder within 30 s (the sync's part), then
        # served by both once their model servers have loaded it (a load that takes seconds on a quiet
        # machine and far longer on an oversubscribed one: that wait is bounded generously).
        published = time.monotonic()
        writer.publish(MODEL, 7, model_repo / MODEL / "6")
        mirrored: dict[str, float] = {}
        while len(mirrored) < len(folders) and time.monotonic() < published + DEADLINE_S:
            for folder in folders:
                if folder.name not in mirrored and 7 in versions_on_disk(folder / MODEL):
                    mirrored[folder.name] = round(time.monotonic() - published, 1)
            time.sleep(0.1)
        logger.warning("version 7 mirrored after %s s", mirrored)
        assert len(mirrored) == len(folders)
        reached = clients.wait_for_version(7, published, LOAD_BOUND_S)
        logger.warning("version 7 served after %s s", {k: round(v, 1) for k, v in reached.items()})
        assert reached.keys() == {0, 1}

        # A version whose bytes do not match its record: mirrored nowhere, served by neither.
        broken_at = time.monotonic()
        writer.publish(MODEL, 8, model_repo / MODEL / "6")
        key = writer.url.key(MODEL, "8", "variables/variables.data-00000-of-00001")
        data = bytearray(writer.get(key) or b"")
        data[len(data) // 2] ^= 0xFF
        writer.put(key, bytes(data))
        time.sleep(15)
        assert all(8 not in versions_on_disk(folder / MODEL) for folder in folders)
        after_broken = clients.since(broken_at)
        assert after_broken and all(a.version != 8 for a in after_broken)
        assert {a.version for a in after_broken[-CLIENTS:]} == {7}

        # A label moved with serving.ops' bucket commands reaches both.
        moved = time.monotonic()
        ClusterOps(writer).label("stable", 6)
        reached = clients.wait_for_version(6, moved, DEADLINE_S)
        logger.warning("label stable -> 6 followed after %s s", {k: round(v, 1) for k, v in reached.items()})
        assert reached.keys() == {0, 1}

        # The bucket away for 20 s: both keep serving what they have.
        store.stop()
        away = time.monotonic()
        time.sleep(20)
        during = [a for a in clients.since(away) if a.at <= away + 20]
        store.start()
        assert len(during) > CLIENTS and {a.version for a in during} == {6}
        # Every sync's passes succeed again once the bucket is back.
        back = time.time()
        deadline = time.monotonic() + 60
        while not all(_pass_ok_since(f, back) for f in folders) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert all(_pass_ok_since(f, back) for f in folders)
    finally:
        clients.stop.set()
        for thread in threads:
            thread.join(timeout=90)
    answers = clients.answers
    failed = [a for a in answers if a.status != 200]
    logger.warning(
        "%d requests over %.0f s, %d failed, versions seen %s",
        len(answers),
        time.monotonic() - started,
        len(failed),
        sorted({a.version for a in answers if a.version}),
    )
    assert failed == [], failed[:5]
    assert {a.replica for a in answers} == {0, 1}
