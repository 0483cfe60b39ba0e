"""The local model server over a real model_repo layout: loading, batching, hot swap, rollback, labels.

The server runs in-process on 127.0.0.1:0 with the official TF Serving message classes; the client side
is the orchestrator's own PredictClient and the ops tool, over the wire subset.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from orchestrator.errors import ModelBadResponse, ModelUnavailable, VersionGone
from orchestrator.predict.client import PredictClient
from orchestrator.predict.routing import Route, VersionRouter
from orchestrator.settings import Settings
from serving import contract
from serving.config import BatchingConfig
from serving.local_server import ModelManager, build_server
from serving.ops import ModelServerOps, OpsError
from serving.repository import reads_patches, versions_on_disk
from serving.tensors import fill_tensor_proto, make_ndarray
from serving.wire import model_status_pb2, predict_pb2, services_pb2_grpc
from tests.conftest import MODEL_REPO
from tests.repos import copy_version

CONFIG = """model_config_list {
  config {
    name: "skin_analyzer"
    base_path: "/models/skin_analyzer"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"""


def _source_version() -> Path:
    """The newest published version that reads the aligned face alone: these tests send face and mask
    only; a version with patch inputs (contract 4) is served end to end in tests/test_e2e.py."""
    base = MODEL_REPO / contract.MODEL_NAME
    versions = [v for v in versions_on_disk(base) if not reads_patches(base / str(v))]
    assert versions, f"no published version under {base} reads the aligned face alone"
    return base / str(versions[-1])


def _face(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An aligned face's worth of input: a noisy skin-coloured image and a mask labelling its middle."""
    rng = np.random.default_rng(seed)
    size = contract.FACE_SIZE_PX
    face = rng.integers(60, 220, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = rng.integers(1, 9, dtype=np.uint8)
    return face, mask


def _fill(request: predict_pb2.PredictRequest, face: np.ndarray, mask: np.ndarray) -> None:
    fill_tensor_proto(request.inputs["face"], face[None] if face.ndim == 3 else face)
    fill_tensor_proto(request.inputs["mask"], mask[None] if mask.ndim == 2 else mask)


BATCHING = BatchingConfig(
    max_batch_size=56, batch_timeout_micros=5000, num_batch_threads=2, max_enqueued_batches=64
)


class Stack:
    """An in-process local model server over a temporary model_repo."""

    def __init__(self, root: Path, batching: BatchingConfig = BATCHING, **options: Any) -> None:
        self.repo = root / "repo"
        self.base = self.repo / contract.MODEL_NAME
        self.base.mkdir(parents=True)
        # Its calibration bound to it, so admission can pass it.
        copy_version(self.base / "1", int(_source_version().name))
        self.config = root / "models.config"
        self.config.write_text(CONFIG)
        options = {"file_system_poll_wait_s": 0.2, "config_poll_wait_s": 0.0, **options}
        self.manager = ModelManager(self.config, {"/models": self.repo}, batching, **options)
        self.server, port = build_server(self.manager, 0)
        self.address = f"127.0.0.1:{port}"
        self.server.start()
        self.manager.start()
        self.client = PredictClient(Settings(model_server_address=self.address, predict_timeout_s=30.0))
        self.ops = ModelServerOps(self.address, self.config, self.repo, drain_s=0.2)
        self.ops.admission.settle_s = 0.0
        self.wait_for({1})

    def publish(self, version: int) -> None:
        """Stage under a non-numeric name, then rename: as export.publish does."""
        staged = self.base / f"_staging-{version}-test"
        shutil.copytree(self.base / "1", staged)
        time.sleep(0.5)  # several polls: the staging folder must stay invisible
        assert version not in self.ops.status()
        staged.rename(self.base / str(version))

    def admit(self, versions: set[int]) -> None:
        """Run admission (as its process would) until `versions` have passed."""
        for _ in range(20):
            if versions <= set(self.ops.admission.cycle().admitted()):
                return
        raise AssertionError(f"versions {sorted(versions)} not admitted: {self.ops.state()}")

    def wait_for(self, versions: set[int], timeout_s: float = 120.0) -> None:
        self.ops.wait_for(versions, timeout_s)

    def close(self) -> None:
        self.client.close()
        self.ops.close()
        self.server.stop(grace=1).wait()
        self.manager.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        running.close()


def test_serves_the_contract(stack: Stack) -> None:
    # Read on the wire: the orchestrator's client would refuse a wrong answer before a test saw it.
    with grpc.insecure_channel(stack.address) as channel:
        stub = services_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = contract.MODEL_NAME
        _fill(request, *_face())
        response = stub.Predict(request, timeout=30)
    assert response.model_spec.version.value == 1
    # Contract 3's outputs, or contract 2's "signals" axis for the versions published under it.
    known = {spec.name: spec for spec in (*contract.outputs(), contract.SIGNAL_AXIS)}
    assert contract.ACNE_PEAKS.name in response.outputs and set(response.outputs) <= set(known)
    for spec in (known[name] for name in response.outputs):
        array = make_ndarray(response.outputs[spec.name])
        assert array.dtype == np.dtype(spec.dtype), spec.name
        assert array.shape == (1, *spec.shape[1:]), spec.name
        assert np.all(np.isfinite(array)), spec.name


def test_metadata_describes_the_signature(stack: Stack) -> None:
    with grpc.insecure_channel(stack.address) as channel:
        stub = services_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.GetModelMetadataRequest()
        request.model_spec.name = contract.MODEL_NAME
        request.metadata_field.append("signature_def")
        response = stub.GetModelMetadata(request, timeout=10)
    signatures = predict_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def[contract.SIGNATURE_NAME]
    assert set(signature.inputs) == set(contract.INPUT_NAMES)
    known = {spec.name for spec in (*contract.outputs(), contract.SIGNAL_AXIS)}
    assert contract.ACNE_PEAKS.name in signature.outputs and set(signature.outputs) <= known
    assert response.model_spec.version.value == 1


SIZE = contract.FACE_SIZE_PX


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, SIZE, SIZE, 3), np.float32),  # wrong dtype
        np.zeros((1, 80, 80, 3), np.uint8),  # wrong shape
    ],
)
def test_requests_breaking_the_signature_are_refused(stack: Stack, array: np.ndarray) -> None:
    with grpc.insecure_channel(stack.address) as channel:
        stub = services_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = contract.MODEL_NAME
        _fill(request, array, np.zeros((1, *array.shape[1:3]), np.uint8))
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_model_is_not_found(stack: Stack) -> None:
    with grpc.insecure_channel(stack.address) as channel:
        stub = services_pb2_grpc.ModelServiceStub(channel)
        request = model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetModelStatus(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # The orchestrator reads "no such model loaded" as the model being unavailable (a 503), not a bug.
    client = PredictClient(Settings(model_server_address=stack.address, model_name="nope"))
    with pytest.raises(ModelUnavailable):
        client.model_status()


def test_concurrent_requests_are_batched(stack: Stack) -> None:
    results: list[int] = []

    def call(seed: int) -> None:
        results.append(stack.client.predict(*_face(seed)).version)

    loaded = stack.manager.model(contract.MODEL_NAME)._loaded[1]
    stats = loaded._scheduler.stats  # type: ignore[union-attr]
    # Warmup has already run batches (one of them 2 faces), so only what these requests add counts.
    tasks_before, batches_before = stats.tasks, stats.batches
    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [1] * 16
    tasks, batches = stats.tasks - tasks_before, stats.batches - batches_before
    assert tasks == 16
    assert batches < tasks, f"{tasks} requests ran as {batches} batches: none was merged with another"


def test_rows_do_not_depend_on_their_batch_neighbours(stack: Stack) -> None:
    alone = stack.client.predict(*_face(1))
    results = {}

    def call(seed: int) -> None:
        results[seed] = stack.client.predict(*_face(seed))

    threads = [threading.Thread(target=call, args=(seed,)) for seed in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results[1].signals) == set(alone.signals)
    for name, column in alone.signals.items():
        np.testing.assert_allclose(results[1].signals[name], column, rtol=1e-4, atol=1e-3)


def test_hot_swap_under_load_drops_nothing_and_rollback_is_one_call(stack: Stack) -> None:
    stop = threading.Event()
    seen: set[int] = set()
    failures: list[BaseException] = []

    def hammer(seed: int) -> None:
        while not stop.is_set():
            try:
                seen.add(stack.client.predict(*_face(seed)).version)
            except BaseException as exc:  # any failure at all is what this test is about
                failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    try:
        stack.publish(2)
        stack.wait_for({1, 2})
        deadline = time.monotonic() + 30
        while 2 not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 2 in seen, "version 2 was published and loaded but never answered"
        stack.admit({1, 2})
        assert stack.ops.rollback() == 1
        time.sleep(0.2)  # answers already on their way back from version 2 land first
        seen.clear()
        time.sleep(1.0)
        assert seen == {1}, "after rollback only version 1 may answer"
        stack.ops.unpin()
        stack.wait_for({1, 2})
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert "specific { versions: 1 versions: 2 }" in stack.config.read_text()


def test_labels_follow_the_config(stack: Stack) -> None:
    stack.publish(2)
    stack.wait_for({1, 2})
    stack.admit({1, 2})
    stack.ops.label("stable", 1)
    stack.ops.label("canary", 2)
    # The orchestrator's router resolves its configured label on the server and asks for that version.
    stable = VersionRouter(stack.client, lambda version: None, label="stable")
    canary = VersionRouter(stack.client, lambda version: None, label="canary")
    assert stable.choose() == Route(1, "stable") and canary.choose() == Route(2, "canary")
    assert stack.client.predict(*_face(), version=stable.choose().version).version == 1
    assert stack.client.predict(*_face(), version=canary.choose().version).version == 2
    assert stack.client.label_version("stable") == 1
    assert stack.client.label_version("missing") is None
    with pytest.raises(OpsError):
        stack.ops.label("stable", 9)  # never admitted: refused, config unchanged
    assert 'key: "stable" value: 1' in stack.config.read_text()
    stack.ops.unlabel("canary")
    assert stack.client.label_version("canary") is None
    assert "canary" not in stack.config.read_text() and 'key: "stable" value: 1' in stack.config.read_text()


def test_broken_version_never_replaces_a_good_one(stack: Stack) -> None:
    broken = stack.base / "_staging-3"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a saved model")
    broken.rename(stack.base / "3")
    deadline = time.monotonic() + 30
    while stack.ops.status().get(3) != "END" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.ops.status()[3] == "END"
    assert stack.client.predict(*_face()).version == 1


def test_a_failed_version_is_forgotten_with_its_folder_and_loaded_when_published_again(stack: Stack) -> None:
    weights = "variables/variables.data-00000-of-00001"
    broken = stack.base / "_staging-2"
    shutil.copytree(stack.base / "1", broken)
    (broken / weights).write_bytes((broken / weights).read_bytes()[:1000])  # cut short in the copy
    broken.rename(stack.base / "2")
    assert _status_becomes(stack, 2, "END")
    assert "load failed" in _status_message(stack, 2)
    shutil.rmtree(stack.base / "2")
    deadline = time.monotonic() + 30
    while 2 in stack.ops.status() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 2 not in stack.ops.status()
    stack.publish(2)  # a whole copy under the same number
    stack.wait_for({1, 2})


def _status_message(stack: Stack, version: int) -> str:
    return next(
        s.error_message for s in stack.manager.model(contract.MODEL_NAME).statuses() if s.version == version
    )


def test_removing_the_served_version_lets_its_requests_finish_and_sends_new_ones_elsewhere(
    stack: Stack,
) -> None:
    stack.publish(2)
    stack.wait_for({1, 2})
    model = stack.manager.model(contract.MODEL_NAME)
    with model.resolve(2, None) as in_flight:  # a request running on version 2
        (stack.base / "2").rename(stack.base / "_removed-2")  # removed, the TF Serving way
        assert _status_becomes(stack, 2, "UNLOADING")
        # New requests that name version 2 are told it is gone (the orchestrator then asks again) ...
        with pytest.raises(VersionGone):
            stack.client.predict(*_face(), version=2)
        assert stack.client.predict(*_face()).version == 1
        # ... while the one in flight still runs on it, to the end.
        assert in_flight.predict(dict(zip(("face", "mask"), (a[None] for a in _face()), strict=True)), 30.0)
        assert stack.ops.status()[2] == "UNLOADING"
    assert _status_becomes(stack, 2, "END")


def test_wrong_signature_input_reaches_the_client_as_bad_response(stack: Stack) -> None:
    with pytest.raises(ModelBadResponse):
        stack.client.predict(np.zeros((80, 80, 3), np.uint8), np.zeros((80, 80), np.uint8))


def _status_becomes(stack: Stack, version: int, state: str, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stack.ops.status().get(version) == state:
            return True
        time.sleep(0.05)
    return False


def test_a_request_without_a_deadline_waits_a_bounded_time(tmp_path: Path) -> None:
    # A lone request waits out the whole 1.5 s batch window; the server's own bound for requests
    # that name no deadline is shorter, so it answers DEADLINE_EXCEEDED at that bound instead.
    slow_batches = BatchingConfig(max_batch_size=56, batch_timeout_micros=1_500_000, num_batch_threads=1)
    stack = Stack(tmp_path, slow_batches, request_timeout_s=0.2)
    try:
        with grpc.insecure_channel(stack.address) as channel:
            stub = services_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = contract.MODEL_NAME
            _fill(request, *_face())
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(request)  # no deadline
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        stack.close()


def test_a_request_in_flight_neither_holds_up_a_reload_nor_an_unload_past_its_bound(tmp_path: Path) -> None:
    stack = Stack(tmp_path, drain_timeout_s=1.0)
    try:
        stack.publish(2)
        stack.wait_for({1, 2})
        stack.admit({1, 2})
        with stack.manager.model(contract.MODEL_NAME).resolve(1, None):  # a request stuck on version 1
            pinning = threading.Thread(target=stack.ops.pin, args=(2,), daemon=True)
            pinning.start()
            pinning.join(timeout=30)
            assert not pinning.is_alive(), "the reload waited for a request on the version it unloads"
            # The unload waits for that request, but only so long: then the version is dropped.
            assert _status_becomes(stack, 1, "END", timeout_s=30)
        assert stack.client.predict(*_face()).version == 2
    finally:
        stack.close()


def test_the_poller_survives_a_failure_and_still_finds_new_versions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack(tmp_path, config_poll_wait_s=0.2)
    try:
        stack.config.write_bytes(b"model_config_list { \xff\xfe }")  # not UTF-8: a hand edit gone wrong
        time.sleep(1.0)  # several polls read it
        stack.config.write_text(CONFIG)
        stack.publish(2)
        stack.wait_for({1, 2}, timeout_s=30)
        assert "UnicodeDecodeError" in caplog.text, "the failure was not logged"
    finally:
        stack.close()
