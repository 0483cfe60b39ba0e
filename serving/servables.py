"""Model versions for the local model server: found on disk, loaded, warmed up, swapped, unloaded.

Mirrors TF Serving's servable lifecycle: integer version folders under base_path (anything else is
ignored, which is what makes staging-then-rename publishing atomic), the version policy of
models.config, labels, and availability-preserving swaps: a new version is AVAILABLE before an old one
starts UNLOADING, and a version unloads once its in-flight requests have finished. Every wait is
bounded: a request waits for its batch at most until its deadline or `request_timeout_s`, and an
unloading version waits for its requests at most `drain_timeout_s`, off the reload path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving import contract
from serving.batching import BatchScheduler, QueueFull, SchedulerClosed, TaskTooLarge
from serving.config import BatchingConfig, ModelEntry
from serving.repository import versions_on_disk

logger = logging.getLogger(__name__)

# ModelVersionStatus.State values (tensorflow_serving/apis/get_model_status.proto).
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50
# TF Serving replays at most this many warmup records per version.
MAX_WARMUP_RECORDS = 1000
# The longest a request waits for its batch, whatever deadline it names (or none): far above the
# orchestrator's few seconds, but a request can never wait for ever.
DEFAULT_REQUEST_TIMEOUT_S = 30.0
# The longest an unloading version waits for its requests to finish before it is dropped anyway.
DEFAULT_DRAIN_TIMEOUT_S = 60.0
# The longest one warmup record may take (the first calls build kernels, so allow for a slow start).
WARMUP_TIMEOUT_S = 120.0


class ServingError(Exception):
    """A request the server refuses, with the gRPC status TF Serving would answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class VersionStatus:
    version: int
    state: int
    error_code: int = 0  # tensorflow.error.Code
    error_message: str = ""


class LoadedVersion:
    """One SavedModel version in memory, with its batch scheduler and in-flight request count."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        batching: BatchingConfig | None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.request_timeout_s = request_timeout_s
        self._model = tf.saved_model.load(str(path))
        if contract.SIGNATURE_NAME not in self._model.signatures:
            raise ValueError(f"{path} has no signature {contract.SIGNATURE_NAME!r}")
        self._fn = self._model.signatures[contract.SIGNATURE_NAME]
        self.signature_defs = _read_signature_defs(path)
        signature = self.signature_defs[contract.SIGNATURE_NAME]
        self.input_dtypes = {
            key: tf.dtypes.as_dtype(info.dtype).as_numpy_dtype for key, info in signature.inputs.items()
        }
        self.input_shapes = {
            key: tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
            for key, info in signature.inputs.items()
        }
        self._in_flight = 0
        self._idle = threading.Condition()
        self._scheduler = BatchScheduler(self._run, batching, name=f"{name}-v{version}") if batching else None

    def _run(self, inputs: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        outputs = self._fn(**{key: tf.constant(value) for key, value in inputs.items()})
        return {key: value.numpy() for key, value in outputs.items()}

    def validate(self, inputs: Mapping[str, NDArray[np.generic]]) -> None:
        """Check names, dtypes and shapes against the signature; raises ServingError."""
        if set(inputs) != set(self.input_dtypes):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input keys {sorted(inputs)} do not match the signature's {sorted(self.input_dtypes)}",
            )
        for key, value in inputs.items():
            if value.dtype != self.input_dtypes[key]:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r} has dtype {value.dtype}, expected {np.dtype(self.input_dtypes[key])}",
                )
            want = self.input_shapes[key]
            fits = len(value.shape) == len(want) and all(
                w is None or w == got for w, got in zip(want, value.shape, strict=True)
            )
            if not fits:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r} has shape {tuple(value.shape)}, expected {want}",
                )

    def predict(
        self, inputs: Mapping[str, NDArray[np.generic]], timeout_s: float | None
    ) -> dict[str, NDArray[np.generic]]:
        """Run one request, through the batch scheduler when batching is on, waiting at most until its
        deadline (`timeout_s`, None for none) or `request_timeout_s`; raises ServingError."""
        wait_s = self.request_timeout_s if timeout_s is None else min(timeout_s, self.request_timeout_s)
        return self._predict(inputs, wait_s)

    def _predict(
        self, inputs: Mapping[str, NDArray[np.generic]], wait_s: float
    ) -> dict[str, NDArray[np.generic]]:
        self.validate(inputs)
        if self._scheduler is None:
            return self._run(inputs)
        try:
            future = self._scheduler.submit(inputs)
        except TaskTooLarge as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        except (QueueFull, SchedulerClosed) as exc:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        try:
            return future.result(timeout=wait_s)
        except TimeoutError as exc:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from exc

    def warm_up(self) -> int:
        """Replay assets.extra/tf_serving_warmup_requests through the model; returns the count."""
        records = self.path / "assets.extra" / contract.WARMUP_FILE
        if not records.exists():
            return 0
        count = 0
        for raw in tf.data.TFRecordDataset(str(records)).take(MAX_WARMUP_RECORDS):
            log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            request = log.predict_log.request
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            self._predict(inputs, WARMUP_TIMEOUT_S)
            count += 1
        return count

    def acquire(self) -> None:
        """Count a request in; the caller must hold the lock that guards unloading."""
        with self._idle:
            self._in_flight += 1

    def release(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def unload(self, drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> None:
        """Wait up to `drain_timeout_s` for in-flight requests, then stop batching and drop the model."""
        with self._idle:
            drained = self._idle.wait_for(lambda: self._in_flight == 0, timeout=drain_timeout_s)
            if not drained:
                logger.warning(
                    "%s version %d: %d requests still running after %g s; unloading anyway",
                    self.name,
                    self.version,
                    self._in_flight,
                    drain_timeout_s,
                )
        if self._scheduler is not None:
            self._scheduler.close()
        del self._fn
        del self._model


def _read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    return dict(saved.meta_graphs[0].signature_def)


class ServedModel:
    """All versions of one model of models.config."""

    def __init__(
        self,
        entry: ModelEntry,
        base_path: Path,
        batching: BatchingConfig | None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    ) -> None:
        self.entry = entry
        self.base_path = base_path
        self.batching = batching
        self.request_timeout_s = request_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self._lock = threading.Lock()
        self._loaded: dict[int, LoadedVersion] = {}
        self._status: dict[int, VersionStatus] = {}
        self._failed: set[int] = set()
        self._unloading: list[threading.Thread] = []

    def statuses(self) -> list[VersionStatus]:
        with self._lock:
            return [self._status[v] for v in sorted(self._status)]

    def available_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._loaded)

    def reconcile(self) -> None:
        """Load the versions the policy wants, then unload the rest (one caller at a time)."""
        on_disk = versions_on_disk(self.base_path)
        # A version that failed to load is forgotten once its folder is gone, so a folder published
        # again under that number is loaded afresh (a loaded version is unloaded below as usual).
        gone = self._failed - set(on_disk)
        if gone:
            self._failed -= gone
            with self._lock:
                for version in gone:
                    if version not in self._loaded:
                        self._status.pop(version, None)
        wanted = self.entry.policy.select(on_disk)
        for version in sorted(set(wanted) - set(self._loaded) - self._failed):
            self._load(version)
        with self._lock:
            stale = [v for v in self._loaded if v not in wanted]
        # Keep serving something: never unload the last available version for a wanted one that failed.
        if stale and len(self._loaded) == len(stale):
            stale = []
        for version in stale:
            self._unload(version)

    def _load(self, version: int) -> None:
        self._set(version, LOADING)
        path = self.base_path / str(version)
        try:
            loaded = LoadedVersion(self.entry.name, version, path, self.batching, self.request_timeout_s)
            warmed = loaded.warm_up()
        except Exception as exc:  # a broken version must not take the server down
            logger.exception("loading %s version %d failed", self.entry.name, version)
            self._failed.add(version)
            self._set(version, END, error_code=9, error_message=f"load failed: {exc}")
            return
        with self._lock:
            self._loaded[version] = loaded
            self._status[version] = VersionStatus(version, AVAILABLE)
        logger.info("%s version %d AVAILABLE (%d warmup records)", self.entry.name, version, warmed)

    def _unload(self, version: int) -> None:
        """Stop routing to `version` now; its requests finish, and the model is dropped, in the background.

        Callers hold the reload lock: waiting for a slow request here would hold up the next version's
        load and every HandleReloadConfigRequest.
        """
        with self._lock:
            loaded = self._loaded.pop(version)
            self._status[version] = VersionStatus(version, UNLOADING)
            self._unloading = [thread for thread in self._unloading if thread.is_alive()]
            thread = threading.Thread(
                target=self._finish_unload,
                args=(loaded,),
                name=f"unload-{self.entry.name}-v{version}",
                daemon=True,  # bounded by drain_timeout_s; stop() waits for it
            )
            self._unloading.append(thread)
        thread.start()

    def _finish_unload(self, loaded: LoadedVersion) -> None:
        try:
            loaded.unload(self.drain_timeout_s)
        except Exception:
            logger.exception("unloading %s version %d failed", self.entry.name, loaded.version)
        with self._lock:
            # The version may be loading or loaded again meanwhile (a rollback undone): that state stands.
            status = self._status.get(loaded.version)
            if status is not None and status.state == UNLOADING:
                self._status[loaded.version] = VersionStatus(loaded.version, END)
        logger.info("%s version %d unloaded", self.entry.name, loaded.version)

    def _set(self, version: int, state: int, error_code: int = 0, error_message: str = "") -> None:
        with self._lock:
            self._status[version] = VersionStatus(version, state, error_code, error_message)

    def unload_all(self) -> None:
        """Stop routing to every version; they finish unloading in the background (`wait_unloaded`)."""
        for version in self.available_versions():
            self._unload(version)

    def wait_unloaded(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for versions being unloaded; False if some are still unloading."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._unloading)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    @contextmanager
    def resolve(self, version: int | None, label: str | None) -> Iterator[LoadedVersion]:
        """Hold the version a request asks for (latest when neither is given); raises ServingError."""
        with self._lock:
            if label:
                if label not in self.entry.version_labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Unrecognized servable version label: {label}",
                    )
                version = self.entry.version_labels[label]
            if version is None:
                if not self._loaded:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Latest({self.entry.name})",
                    )
                version = max(self._loaded)
            loaded = self._loaded.get(version)
            if loaded is None:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({self.entry.name}, {version})",
                )
            # Counted in under the lock: _unload pops a version under the same lock, so a version
            # can never be unloaded between being chosen here and being counted.
            loaded.acquire()
        try:
            yield loaded
        finally:
            loaded.release()
