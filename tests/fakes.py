"""A scriptable gRPC model server for fault cases: real gRPC on 127.0.0.1:0, answers chosen per test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np

from serving import contract
from serving.tensors import fill_tensor_proto, make_ndarray
from serving.wire import model_status_pb2, predict_pb2, services_pb2_grpc


@dataclass
class Script:
    """What the fake does next. `fail_first` calls abort with `fail_code`, then it answers normally.

    `broken_signature` lists versions whose served signature breaks the contract; `versions` lists the
    AVAILABLE versions (default: the answering `version` only); `failed` lists versions the server
    failed to load (state END) with its error message; `labels` maps version labels to versions;
    `outputs` gives a version's outputs (default: contract 2's, as the published versions 5 and 6 have).
    Like TF Serving, Predict answers only the outputs a request's `output_filter` names (all when empty),
    and records each filter in `output_filters`.
    """

    version: int = 1
    fail_code: grpc.StatusCode | None = None
    fail_first: int = 0
    delay_s: float = 0.0
    signals_shape: tuple[int, ...] | None = None
    nan: bool = False
    versions: tuple[int, ...] = ()
    broken_signature: frozenset[int] = frozenset()
    failed: dict[int, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    outputs: dict[int, tuple[contract.TensorSpec, ...]] = field(default_factory=dict)
    output_filters: list[tuple[str, ...]] = field(default_factory=list)
    calls: int = 0
    asked_versions: list[int | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def available(self) -> tuple[int, ...]:
        return self.versions or (self.version,)

    def outputs_of(self, version: int) -> tuple[contract.TensorSpec, ...]:
        return self.outputs.get(version, (contract.SIGNAL_AXIS, contract.ACNE_PEAKS))


_DTYPES = contract.DATA_TYPE_ENUM


def _tensor_info(info: object, dtype: str, shape: tuple[int | None, ...]) -> None:
    info.dtype = _DTYPES[dtype]  # type: ignore[attr-defined]
    for dim in shape:
        info.tensor_shape.dim.add().size = -1 if dim is None else dim  # type: ignore[attr-defined]


class _Prediction(services_pb2_grpc.PredictionServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def Predict(self, request, context):  # noqa: N802 - gRPC signature
        script = self.script
        with script.lock:
            script.calls += 1
            failing = script.fail_code is not None and script.calls <= script.fail_first
            asked = request.model_spec.version.value if request.model_spec.HasField("version") else None
            script.asked_versions.append(asked)
            script.output_filters.append(tuple(request.output_filter))
        if failing:
            context.abort(script.fail_code, "scripted failure")
        if asked is not None and asked not in script.available():
            context.abort(grpc.StatusCode.NOT_FOUND, f"version {asked} is not loaded")
        time.sleep(script.delay_s)
        rows = make_ndarray(request.inputs["face"]).shape[0]
        version = asked if asked is not None else script.version
        specs = {spec.name: spec for spec in script.outputs_of(version)}
        wanted = list(request.output_filter) or list(specs)
        unknown = [name for name in wanted if name not in specs]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias not found: {unknown[0]}")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        for name in wanted:
            spec = specs[name]
            shape = (rows, *spec.shape[1:])
            if name == contract.SIGNAL_AXIS.name and script.signals_shape:
                shape = script.signals_shape
            value = (
                np.zeros(shape, np.float32)
                if name == contract.ACNE_PEAKS.name
                else np.ones(shape, np.float32)
            )
            if script.nan and name != contract.ACNE_PEAKS.name:
                value.flat[0] = np.nan
            fill_tensor_proto(response.outputs[name], value)
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802 - gRPC signature
        version = request.model_spec.version.value
        if version not in self.script.available():
            context.abort(grpc.StatusCode.NOT_FOUND, f"version {version} is not loaded")
        signatures = predict_pb2.SignatureDefMap()
        signature = signatures.signature_def[contract.SIGNATURE_NAME]
        for spec in contract.INPUTS:
            shape = spec.shape[:-1] if version in self.script.broken_signature else spec.shape
            _tensor_info(signature.inputs[spec.name], spec.dtype, shape)
        for spec in self.script.outputs_of(version):
            _tensor_info(signature.outputs[spec.name], spec.dtype, spec.shape)
        response = predict_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signatures)
        return response


class _Models(services_pb2_grpc.ModelServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def GetModelStatus(self, request, context):  # noqa: N802 - gRPC signature
        if self.script.fail_code is not None and self.script.fail_first > 10**6:
            context.abort(self.script.fail_code, "scripted failure")
        versions = self.script.available()
        label = request.model_spec.version_label
        if label:
            if label not in self.script.labels:
                context.abort(grpc.StatusCode.NOT_FOUND, "no such label")
            versions = (self.script.labels[label],)
        response = model_status_pb2.GetModelStatusResponse()
        for version in versions:
            item = response.model_version_status.add()
            item.version = version
            item.state = model_status_pb2.ModelVersionStatus.AVAILABLE
        for version, error in [] if label else sorted(self.script.failed.items()):
            item = response.model_version_status.add()
            item.version = version
            item.state = model_status_pb2.ModelVersionStatus.END
            item.status.error_code = 9  # FAILED_PRECONDITION, as TF Serving reports a failed load
            item.status.error_message = error
        return response


@contextmanager
def fake_model_server(script: Script) -> Iterator[str]:
    """Serve `script` on a free loopback port; yields host:port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    services_pb2_grpc.add_PredictionServiceServicer_to_server(_Prediction(script), server)
    services_pb2_grpc.add_ModelServiceServicer_to_server(_Models(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=0).wait()
