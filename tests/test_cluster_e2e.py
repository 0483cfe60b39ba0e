"""Two replicas kept in step by the bucket and decided for by one admission, end to end: a real SeaweedFS
server; admission in cluster mode with its own model server and a sync mirroring every complete version
(as deploy/k8s/base/admission.yaml runs them); two model servers and two gunicorn orchestrators, each
with its own sync process and folder (as four pods would have); eight clients spread over both
orchestrators the whole time.

A version published to the bucket is admitted (its state and config pushed to the bucket), reaches every
replica's folder within 30 s of that and is then served by both (the test logs how long each took); a
complete version with a valid completion record but the calibration of another model is refused by
admission, named with its reason in the bucket's state (and so in every replica's folder), and served by
none, and serving.ops --bucket cannot pin or label it; a version whose bytes do not match its record is
served by neither; a label moved with serving.ops' bucket commands goes through admission and reaches
both; the bucket stopped for 20 s changes nothing; no request fails.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from scripts.stack import ModelServerProcess, OrchestratorProcess, terminate, wait_http
from serving.admission.__main__ import check as admission_check
from serving.admission.state import STATE_FILE, AdmissionState
from serving.bucket import ModelBucket
from serving.cluster import ClusterOps, ClusterOpsError
from serving.repository import versions_on_disk
from serving.sync import PASS_RECORD, check
from tests.conftest import ROOT, data_dir
from tests.objectstore import BUCKET, READER, WRITER, SeaweedServer, require_weed
from tests.repos import calibration_of_another_model, copy_version

logger = logging.getLogger(__name__)

MODEL = "skin_analyzer"
PREFIX = "cluster"
CLIENTS = 8
DEADLINE_S = 30.0
# How long a model server may take to load and warm up a version on a busy shared machine (admission's
# loads one to probe it, then the replicas' load it).
LOAD_BOUND_S = 240.0
# Admission's wait between pushing a state that takes a version out of service and the config that
# unloads it: over a replica's sync interval (1 s) plus its routers' refresh (2 s).
DRAIN_S = 5.0

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
    def __init__(self, folder: Path, env: dict[str, str], log: Path, *extra: str) -> None:
        self.folder = folder
        self.env = env
        self.log = log
        self.extra = extra
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
            *self.extra,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        terminate(self.process)


class ClusterAdmission:
    """serving.admission in cluster mode over the folder its own sync mirrors every complete version into,
    with read-write keys, as admission's pod runs it."""

    def __init__(self, root: Path, address: str, env: dict[str, str]) -> None:
        self.folder = root / "admission"
        self.bucket_config = root / "admission-bucket-config"
        self.command = [
            sys.executable,
            "-m",
            "serving.admission",
            f"--address={address}",
            f"--config={self.folder / 'models.config'}",
            f"--model-repo={self.folder}",
            f"--bucket=s3://{BUCKET}/{PREFIX}",
            f"--bucket-config={self.bucket_config}",
            f"--drain-s={DRAIN_S:g}",
            "--poll-s=0.3",
        ]
        self.env = env
        self.log = root / "admission.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        terminate(self.process)


def bucket_state(bucket: ModelBucket) -> AdmissionState | None:
    data = bucket.get(bucket.url.key(MODEL, STATE_FILE))
    return None if data is None else AdmissionState.from_json(data.decode())


def wait_for_state(
    bucket: ModelBucket, done: Callable[[AdmissionState], bool], timeout_s: float
) -> AdmissionState:
    """The bucket's admission state once `done` holds for it; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = bucket_state(bucket)
        if state is not None and done(state):
            return state
        time.sleep(0.3)
    raise AssertionError(f"the bucket's admission state did not get there in {timeout_s:g} s: {state}")


@dataclass
class Cluster:
    store: SeaweedServer
    writer: ModelBucket
    folders: list[Path]
    orchestrators: list[OrchestratorProcess]
    admission: ClusterAdmission
    writer_env: dict[str, str]


@pytest.fixture(scope="module")
def photo() -> bytes:
    faces = data_dir("faces")
    return sorted(faces.glob("*.jpg"))[0].read_bytes()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    store = SeaweedServer(root / "seaweed")
    store.start()
    writer = store.bucket(WRITER, prefix=PREFIX)
    for version in (6, 7):
        writer.publish(MODEL, version, model_repo / MODEL / str(version))
    # The cluster's first served config, as an operator bootstraps it: versions 6 and 7.
    writer.put_served("models.config", (ROOT / "serving" / "models.config").read_bytes())
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SHINE_")}
    env = base_env | store.env(READER)
    writer_env = base_env | store.env(WRITER)
    names = ("model-a", "model-b", "orchestrator-a", "orchestrator-b")
    syncs = [SyncProcess(root / name, env, root / f"sync-{name}.log") for name in names]
    # Admission's pod: its sync mirrors every complete version, the bucket's served config beside.
    admission_server = ModelServerProcess(
        root / "admission-model-server.log",
        config=root / "admission" / "models.config",
        model_repo=root / "admission",
    )
    admission = ClusterAdmission(root, admission_server.address, writer_env)
    admission_sync = SyncProcess(
        admission.folder,
        env,
        root / "sync-admission.log",
        "--all-versions",
        "--config-dir",
        str(admission.bucket_config),
    )
    servers: list[ModelServerProcess] = []
    orchestrators: list[OrchestratorProcess] = []
    try:
        admission_sync.start()
        for sync in syncs:
            sync.start()
        deadline = time.monotonic() + 60
        while check(admission.folder, 30) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert check(admission.folder, 30) is None
        # As the pod orders them: admission first (it takes the bucket's config as its own), then its
        # model server on that config.
        admission.start()
        while admission_check(admission.folder, 30) and time.monotonic() < deadline + 60:
            time.sleep(0.2)
        assert admission_check(admission.folder, 30) is None, f"see {admission.log}"
        admission_server.start(wait=False)
        servers.append(admission_server)
        deadline = time.monotonic() + 60
        while any(check(s.folder, 30) for s in syncs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [check(s.folder, 30) for s in syncs if check(s.folder, 30)]
        servers += [
            ModelServerProcess(
                root / f"{name}.log", config=root / name / "models.config", model_repo=root / name
            )
            for name in names[:2]
        ]
        for server in servers[1:]:
            server.start(wait=False)
        for server in servers:
            done = subprocess.run(
                [sys.executable, "-m", "serving.launch", "--wait", server.address, "--timeout", "240"],
                cwd=ROOT,
                capture_output=True,
                timeout=300,
            )
            assert done.returncode == 0, f"model server did not come up; see {server.log}"
        for server, name in zip(servers[1:], names[2:], strict=True):
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
        yield Cluster(store, writer, [s.folder for s in syncs], orchestrators, admission, writer_env)
    finally:
        for orchestrator in orchestrators:
            orchestrator.stop()
        admission.stop()
        for server in servers:
            server.stop()
        for sync in [*syncs, admission_sync]:
            sync.stop()
        store.stop()


def test_replicas_serve_what_admission_decides_without_a_failed_request(
    cluster: Cluster, model_repo: Path, photo: bytes, tmp_path: Path
) -> None:
    writer, folders = cluster.writer, cluster.folders
    clients = Clients([o.url for o in cluster.orchestrators], photo)
    threads = [threading.Thread(target=clients.run, args=(i,), daemon=True) for i in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        assert clients.wait_for_version(7, started, 60).keys() == {0, 1}
        state = wait_for_state(writer, lambda s: s.served == (7, 6), LOAD_BOUND_S)
        assert state.admitted() == [6, 7]
        # Every replica's folder holds admission's state, where its orchestrator reads it.
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not all((f / MODEL / STATE_FILE).is_file() for f in folders):
            time.sleep(0.2)
        assert all((f / MODEL / STATE_FILE).is_file() for f in folders)

        # A new version, published once: admission mirrors, checks, loads and probes it on its own model
        # server, then pushes its decision; every replica's folder has it within 30 s of that (the
        # sync's part), and both serve it once their model servers have loaded it (seconds on a quiet
        # machine, far longer on an oversubscribed one: that wait is bounded generously).
        published = time.monotonic()
        writer.publish(MODEL, 8, model_repo / MODEL / "7")
        wait_for_state(writer, lambda s: s.served == (8, 7), LOAD_BOUND_S)
        admitted = time.monotonic()
        mirrored: dict[str, float] = {}
        while len(mirrored) < len(folders) and time.monotonic() < admitted + DEADLINE_S:
            for folder in folders:
                if folder.name not in mirrored and 8 in versions_on_disk(folder / MODEL):
                    mirrored[folder.name] = round(time.monotonic() - admitted, 1)
            time.sleep(0.1)
        logger.warning(
            "version 8 admitted after %.1f s, then mirrored after %s s", admitted - published, mirrored
        )
        assert len(mirrored) == len(folders)
        reached = clients.wait_for_version(8, published, LOAD_BOUND_S)
        logger.warning("version 8 served after %s s", {k: round(v, 1) for k, v in reached.items()})
        assert reached.keys() == {0, 1}

        # A complete version with a valid completion record, but the calibration of another model:
        # refused by admission, named with its reason in the bucket's state and every replica's folder,
        # mirrored by no replica and served by none; ops cannot pin or label it.
        bad_at = time.monotonic()
        bad = copy_version(tmp_path / "9", 7)
        calibration_of_another_model(bad)
        writer.publish(MODEL, 9, bad)
        state = wait_for_state(writer, lambda s: 9 in s.decisions, LOAD_BOUND_S)
        logger.warning("version 9 decided after %.1f s: %s", time.monotonic() - bad_at, state.decisions[9])
        assert state.decisions[9].refused and state.decisions[9].code == "calibration_mismatch"
        assert "another model" in state.decisions[9].reason
        assert state.served == (8, 7)
        ops = ClusterOps(writer)
        with pytest.raises(ClusterOpsError, match="refused by admission"):
            ops.pin(9)
        with pytest.raises(ClusterOpsError, match="refused by admission"):
            ops.label("stable", 9)
        done = subprocess.run(
            [sys.executable, "-m", "serving.ops", "--bucket", f"s3://{BUCKET}/{PREFIX}", "pin", "9"],
            cwd=ROOT,
            env=cluster.writer_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and "calibration_mismatch" in done.stderr, done.stderr
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not all(_refused_here(f, 9) for f in folders):
            time.sleep(0.2)
        assert all(_refused_here(f, 9) for f in folders)
        assert all(9 not in versions_on_disk(folder / MODEL) for folder in folders)

        # A version whose bytes do not match its record: mirrored nowhere (admission's sync refuses it
        # too, so admission never sees it), served by neither.
        broken_at = time.monotonic()
        writer.publish(MODEL, 10, model_repo / MODEL / "7")
        key = writer.url.key(MODEL, "10", "variables/variables.data-00000-of-00001")
        data = bytearray(writer.get(key) or b"")
        data[len(data) // 2] ^= 0xFF
        writer.put(key, bytes(data))
        time.sleep(10)
        assert all(
            10 not in versions_on_disk(folder / MODEL) for folder in [*folders, cluster.admission.folder]
        )
        after_bad = clients.since(bad_at)
        assert after_bad and all(a.version not in (9, 10) for a in after_bad)
        assert {a.version for a in clients.since(broken_at)[-CLIENTS:]} == {8}
        assert (bucket_state(writer) or AdmissionState(MODEL)).served == (8, 7)

        # A label moved with serving.ops' bucket commands: carried out by admission, reaches both.
        moved = time.monotonic()
        ops.label("stable", 7)
        assert (bucket_state(writer) or AdmissionState(MODEL)).labels == {"stable": 7}
        reached = clients.wait_for_version(7, moved, DEADLINE_S)
        logger.warning("label stable -> 7 followed after %s s", {k: round(v, 1) for k, v in reached.items()})
        assert reached.keys() == {0, 1}

        # The bucket away for 20 s: both keep serving what they have.
        cluster.store.stop()
        away = time.monotonic()
        time.sleep(20)
        during = [a for a in clients.since(away) if a.at <= away + 20]
        cluster.store.start()
        assert len(during) > CLIENTS and {a.version for a in during} == {7}
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
        "%d requests over %.0f s, %d failed, versions seen %s; admission's peak RSS %.0f MB",
        len(answers),
        time.monotonic() - started,
        len(failed),
        sorted({a.version for a in answers if a.version}),
        cluster.admission.peak_rss_mb(),
    )
    assert failed == [], failed[:5]
    assert {a.replica for a in answers} == {0, 1}
    assert all(a.version in (6, 7, 8) for a in answers)


def _refused_here(folder: Path, version: int) -> bool:
    """The replica's copy of admission's state names `version` as refused."""
    try:
        state = AdmissionState.from_json((folder / MODEL / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    decision = state.decisions.get(version)
    return decision is not None and decision.refused
