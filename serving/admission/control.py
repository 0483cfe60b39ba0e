"""The model server as admission drives it: ModelService (status, HandleReloadConfigRequest) and
PredictionService (GetModelMetadata, Predict of probes), the same calls on TF Serving and the local
model server. Every call has a deadline; failures come out as ServerDown or ReloadRefused."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import text_format

from serving import contract
from serving.wire import model_status_pb2, predict_pb2, services_pb2_grpc

# The server went away or did not answer in time (a connection cut mid-call is CANCELLED or UNAVAILABLE):
# nothing is known about the config, so nothing is decided on it.
_TRANSPORT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
STATE_NAMES = {v.number: v.name for v in model_status_pb2.ModelVersionStatus.State.DESCRIPTOR.values}


class ServerDown(Exception):
    """The model server cannot be reached or did not answer in time: nothing is known about versions."""


class ReloadRefused(Exception):
    """The model server refused a config (its message says why)."""


@dataclass(frozen=True)
class ServerVersion:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error: str = ""


class ModelServerControl:
    """One channel to one model server."""

    def __init__(self, address: str, model_name: str, timeout_s: float = 5.0) -> None:
        self.address = address
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", contract.MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", contract.MAX_MESSAGE_BYTES),
            ],
        )
        self._models = services_pb2_grpc.ModelServiceStub(self._channel)
        self._predict = services_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def status(self) -> dict[int, ServerVersion]:
        """Every version the server knows; an empty dict when it knows none yet. Raises ServerDown."""
        request = model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        try:
            response = self._models.GetModelStatus(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return {}
            raise ServerDown(f"{self.address}: {exc.code().name} {exc.details()}") from exc
        return {
            int(item.version): ServerVersion(
                int(item.version), STATE_NAMES.get(int(item.state), "UNKNOWN"), item.status.error_message
            )
            for item in response.model_version_status
        }

    def reload(self, config_text: str, timeout_s: float = 120.0) -> None:
        """Hand the server a whole ModelServerConfig; raises ReloadRefused or ServerDown."""
        request = model_status_pb2.ReloadConfigRequest()
        text_format.Parse(config_text, request.config)
        try:
            response = self._models.HandleReloadConfigRequest(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            # TF Serving answers a refused config with an RPC error; the local server in the response.
            if exc.code() in _TRANSPORT_CODES:
                raise ServerDown(f"{self.address}: {exc.code().name} {exc.details()}") from exc
            raise ReloadRefused(f"{exc.code().name} {exc.details()}") from exc
        if response.status.error_code != 0:
            raise ReloadRefused(response.status.error_message)

    def metadata(self, version: int) -> predict_pb2.GetModelMetadataResponse:
        """GetModelMetadata(signature_def) of one version; raises ServerDown, grpc.RpcError."""
        request = predict_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.model_spec.version.value = version
        request.metadata_field.append("signature_def")
        try:
            return self._predict.GetModelMetadata(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() in _TRANSPORT_CODES:
                raise ServerDown(f"{self.address}: {exc.code().name} {exc.details()}") from exc
            raise

    def predict(
        self, request: predict_pb2.PredictRequest, version: int, timeout_s: float
    ) -> predict_pb2.PredictResponse:
        """Send one probe to exactly `version`; raises ServerDown, grpc.RpcError."""
        probe = predict_pb2.PredictRequest()
        probe.CopyFrom(request)
        probe.model_spec.name = self.model_name
        probe.model_spec.version.value = version
        probe.model_spec.signature_name = request.model_spec.signature_name or contract.SIGNATURE_NAME
        try:
            return self._predict.Predict(probe, timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise ServerDown(f"{self.address}: {exc.code().name} {exc.details()}") from exc
            raise
