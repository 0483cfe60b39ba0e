"""The orchestrator's gRPC client for the model server (TF Serving or the local model server).

Speaks PredictionService and ModelService through the TensorFlow-free wire subset in serving/wire.
Every call has a deadline; only UNAVAILABLE is retried, with backoff, inside that deadline; gRPC errors
are translated here, once, into Shine's errors. The channel is created lazily in each process, so
gunicorn workers never share one across fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    wait_exponential,
)

from orchestrator.errors import ModelBadResponse, ModelError, ModelTimeout, ModelUnavailable, VersionGone
from orchestrator.predict.breaker import CircuitBreaker, CircuitOpen
from orchestrator.predict.prediction import Prediction, signal_columns
from orchestrator.settings import Settings
from serving import contract
from serving.tensors import encode_predict_request, make_ndarray
from serving.wire import model_status_pb2, predict_pb2, services_pb2_grpc, tensor_pb2

logger = logging.getLogger(__name__)

STATE_NAMES = {
    model_status_pb2.ModelVersionStatus.State.Value(name): name
    for name in ("UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END")
}
_UNAVAILABLE_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
# NOT_FOUND from TF Serving means no version of the model is loaded (yet): a 503, not a bug.
_NOT_SERVING_CODES = _UNAVAILABLE_CODES | {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.CANCELLED}
_ABSENT_CODES = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}
_PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str
    error: str = ""


@dataclass(frozen=True)
class _Stubs:
    """One process's calls on its channel; `predict_bytes` is Predict taking the request's wire bytes as
    encode_predict_request builds them, not a message."""

    predict: services_pb2_grpc.PredictionServiceStub
    models: services_pb2_grpc.ModelServiceStub
    predict_bytes: grpc.UnaryUnaryMultiCallable


class PredictClient:
    """Calls the model server with deadlines, retries of UNAVAILABLE and a circuit breaker."""

    def __init__(
        self, settings: Settings, interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = ()
    ) -> None:
        """`interceptors` wrap every call (tracing; tests inject faults with them)."""
        self.settings = settings
        self._interceptors = tuple(interceptors)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._stubs_made: _Stubs | None = None

    def _stubs(self) -> _Stubs:
        with self._lock:
            if self._pid != os.getpid() or self._stubs_made is None:
                # A channel must never cross a fork: gunicorn preloads the app in the master.
                self._channel = grpc.insecure_channel(
                    self.settings.model_server_address,
                    options=[
                        ("grpc.max_receive_message_length", contract.MAX_MESSAGE_BYTES),
                        ("grpc.max_send_message_length", contract.MAX_MESSAGE_BYTES),
                        ("grpc.enable_retries", 0),
                        ("grpc.initial_reconnect_backoff_ms", 100),
                        ("grpc.max_reconnect_backoff_ms", 1000),
                    ],
                )
                channel = grpc.intercept_channel(self._channel, *self._interceptors)
                self._stubs_made = _Stubs(
                    predict=services_pb2_grpc.PredictionServiceStub(channel),
                    models=services_pb2_grpc.ModelServiceStub(channel),
                    predict_bytes=channel.unary_unary(
                        _PREDICT_METHOD,
                        request_serializer=None,
                        response_deserializer=predict_pb2.PredictResponse.FromString,
                    ),
                )
                self._pid = os.getpid()
            return self._stubs_made

    def close(self) -> None:
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = self._stubs_made = None
            self._pid = None

    def predict(
        self,
        face: NDArray[np.uint8],
        mask: NDArray[np.uint8],
        version: int | None = None,
        layout: contract.Layout | None = None,
        patches: tuple[NDArray[np.uint8], NDArray[np.uint8]] | None = None,
    ) -> Prediction:
        """Send one aligned face and its region mask to `version` (the server's choice when None), asking
        only for the outputs of `layout` (read from the version's signature; None: every output, read by
        the names in the response); `patches` are the face's patch slots and their skin, for a
        contract-4 version.

        Raises ModelUnavailable, ModelTimeout, ModelBadResponse, and VersionGone when the asked-for
        version is no longer loaded.
        """
        head = predict_pb2.PredictRequest()
        head.model_spec.name = self.settings.model_name
        if version is not None:
            head.model_spec.version.value = version
        head.model_spec.signature_name = contract.SIGNATURE_NAME
        if layout is not None:
            head.output_filter.extend(layout.outputs)
        inputs = {"face": face[None], "mask": mask[None]}
        if patches is not None:
            inputs |= {
                spec.name: array[None] for spec, array in zip(contract.PATCH_INPUTS, patches, strict=True)
            }
        request = encode_predict_request(head, inputs)
        response = self._call(
            self._stubs().predict_bytes,
            request,
            self.settings.predict_timeout_s,
            gone_is_error=version is not None,
        )
        return _read_prediction(response, layout)

    def signature(self, version: int) -> dict[str, dict[str, tuple[str, tuple[int | None, ...]]]]:
        """The serving signature of one version as {"inputs"|"outputs": {name: (dtype, shape)}}, from
        GetModelMetadata; raises ModelUnavailable, ModelTimeout, ModelBadResponse, VersionGone."""
        request = predict_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.settings.model_name
        request.model_spec.version.value = version
        request.metadata_field.append("signature_def")
        response = self._call(
            self._stubs().predict.GetModelMetadata,
            request,
            self.settings.status_timeout_s,
            gone_is_error=True,
        )
        signatures = predict_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(
            signatures
        ):
            raise ModelBadResponse("The model server sent no signature for the version.")
        if contract.SIGNATURE_NAME not in signatures.signature_def:
            return {"inputs": {}, "outputs": {}}
        signature = signatures.signature_def[contract.SIGNATURE_NAME]
        return {
            "inputs": {name: _tensor_info(info) for name, info in signature.inputs.items()},
            "outputs": {name: _tensor_info(info) for name, info in signature.outputs.items()},
        }

    def model_status(self) -> list[VersionState]:
        """Versions and states of the configured model; raises ModelUnavailable or ModelTimeout."""
        request = model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.settings.model_name
        response = self._call(self._stubs().models.GetModelStatus, request, self.settings.status_timeout_s)
        return [_version_state(item) for item in response.model_version_status]

    def label_version(self, label: str) -> int | None:
        """The version a label points at on the server, or None when the label is not set there."""
        request = model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.settings.model_name
        request.model_spec.version_label = label
        response = self._call(
            self._stubs().models.GetModelStatus, request, self.settings.status_timeout_s, absent_ok=True
        )
        if response is None:
            return None
        versions = [item.version for item in response.model_version_status]
        return versions[0] if versions else None

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable,
        request: object,
        timeout_s: float,
        absent_ok: bool = False,
        gone_is_error: bool = False,
    ) -> Any:
        """Run one RPC inside `timeout_s` all told, retrying UNAVAILABLE; translates every failure.

        With `absent_ok`, an answer that the asked-for thing does not exist returns None; with
        `gone_is_error`, NOT_FOUND raises VersionGone (an asked-for version was unloaded).
        """
        deadline = time.monotonic() + timeout_s

        def remaining() -> float:
            return deadline - time.monotonic()

        def stop(state: RetryCallState) -> bool:
            # Retry only while a further attempt is allowed and still has time to succeed.
            out_of_attempts = state.attempt_number > self.settings.predict_retries
            return out_of_attempts or remaining() < self.settings.retry_backoff_s * (2**state.attempt_number)

        retrying = Retrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, grpc.RpcError) and exc.code() in _UNAVAILABLE_CODES
            ),
            stop=stop,
            wait=wait_exponential(multiplier=self.settings.retry_backoff_s, max=1.0),
            reraise=True,
        )
        try:
            self.breaker.before_call()
        except CircuitOpen as exc:
            raise ModelUnavailable(retry_after_s=max(1.0, exc.retry_after_s)) from exc
        # From here on every way out settles the breaker, so a half-open trial always ends.
        try:
            result = retrying(lambda: method(request, timeout=max(0.001, remaining())))
        except grpc.RpcError as exc:
            if absent_ok and exc.code() in _ABSENT_CODES:
                self.breaker.record_neutral()
                return None
            if gone_is_error and exc.code() == grpc.StatusCode.NOT_FOUND:
                self.breaker.record_neutral()
                raise VersionGone() from exc
            error = _translate(exc)
            if isinstance(error, ModelUnavailable | ModelTimeout):
                self.breaker.record_failure()
            else:
                self.breaker.record_neutral()
            raise error from exc
        except BaseException:
            # Anything else (a bug on this side, a closed channel, an interrupt) says nothing about the
            # server's health, but it must still end a half-open trial: left running, it would refuse
            # every later call until the process restarts.
            self.breaker.record_neutral()
            raise
        self.breaker.record_success()
        return result


def _translate(exc: grpc.RpcError) -> ModelError:
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ModelTimeout()
    if code in _NOT_SERVING_CODES:
        logger.warning("model server not serving: %s %s", code.name, details)
        return ModelUnavailable(retry_after_s=1.0)
    logger.error("model server refused the request: %s %s", code.name, details)
    return ModelBadResponse()


def _version_state(item: model_status_pb2.ModelVersionStatus) -> VersionState:
    return VersionState(
        version=int(item.version),
        state=STATE_NAMES.get(int(item.state), "UNKNOWN"),
        error=item.status.error_message,
    )


def _tensor_info(info: tensor_pb2.TensorInfo) -> tuple[str, tuple[int | None, ...]]:
    """(NumPy dtype name, shape with None for free dimensions) of a signature's TensorInfo."""
    names = {value: name for name, value in contract.DATA_TYPE_ENUM.items()}
    shape = tuple(None if dim.size < 0 else int(dim.size) for dim in info.tensor_shape.dim)
    return names.get(int(info.dtype), f"enum {int(info.dtype)}"), shape


def _read_prediction(
    response: predict_pb2.PredictResponse, layout: contract.Layout | None, rows: int = 1
) -> Prediction:
    """Read a PredictResponse for one face by output name, each output checked against the contract;
    raises ModelBadResponse."""
    if layout is None:
        given: contract.Signature = {"outputs": {name: ("float32", ()) for name in response.outputs}}
        layout = contract.read_layout(given)
    specs = {spec.name: spec for spec in (*contract.outputs(), contract.SIGNAL_AXIS)}

    arrays = {name: _output(response, specs[name], rows) for name in layout.outputs}
    if not response.model_spec.HasField("version"):
        logger.error("model response does not name its version")
        raise ModelBadResponse()
    if layout.signal_axis:
        signals = signal_columns(arrays[contract.SIGNAL_AXIS.name][0], contract.SIGNAL_AXIS_NAMES)
    else:
        signals = {name: arrays[contract.SIGNAL_PREFIX + name][0] for name in layout.signals}
    return Prediction(
        model_name=response.model_spec.name,
        version=int(response.model_spec.version.value),
        signals={name: signals[name] for name in layout.signals},
        acne_peaks=arrays[contract.ACNE_PEAKS.name][0] if layout.acne else None,
        zones={name: arrays[contract.ZONE_PREFIX + name][0] for name in layout.zone_measures}
        if layout.zone_measures
        else None,
    )


def _output(
    response: predict_pb2.PredictResponse, spec: contract.TensorSpec, rows: int
) -> NDArray[np.float32]:
    """One output of the response, checked against its spec; raises ModelBadResponse."""
    if spec.name not in response.outputs:
        logger.error("model response lacks output %r", spec.name)
        raise ModelBadResponse()
    try:
        array = make_ndarray(response.outputs[spec.name])
    except ValueError as exc:
        raise ModelBadResponse() from exc
    want = (rows, *spec.shape[1:])
    if array.dtype != np.dtype(spec.dtype) or array.shape != want:
        logger.error(
            "model output %r is %s%s, contract says %s%s",
            spec.name,
            array.dtype,
            array.shape,
            spec.dtype,
            want,
        )
        raise ModelBadResponse()
    if not np.all(np.isfinite(array)):
        logger.error("model output %r holds NaN or inf", spec.name)
        raise ModelBadResponse()
    return np.asarray(array, dtype=np.float32)
