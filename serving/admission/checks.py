"""What a version folder must pass before it is served: complete files, a calibration that reads and is
bound to the model's content fingerprint, a served signature that is the contract's, and answers to its
own warmup requests that the contract can use. Each failed check is a Refusal with a short code and a
reason safe to show a client (no paths). No TensorFlow: warmup records are read as TFRecord framing
around serialized PredictionLog messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from orchestrator.scoring.scorer import CalibrationProblem, load_calibration
from serving import contract
from serving.fingerprint import content_fingerprint, is_fingerprint
from serving.tensors import make_ndarray
from serving.wire import predict_pb2

logger = logging.getLogger(__name__)

# At most this many warmup records are sent as the probe (each is a batch of faces).
MAX_PROBE_RECORDS = 8
# PredictionLog.predict_log and PredictLog.request (tensorflow_serving/apis/prediction_log.proto).
_PREDICT_LOG_FIELD = 6
_REQUEST_FIELD = 1
_LENGTH_DELIMITED = 2


class Refusal(Exception):
    """A version fails a check: `code` names the check (metrics, logs), `reason` says why in words."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def folder_listing(folder: Path) -> str:
    """A digest of every file's relative name, size and modification time: changes while a folder is
    being written, and whenever anything in it is replaced."""
    digest = hashlib.sha256()
    try:
        paths = sorted(p for p in folder.rglob("*") if p.is_file())
        for path in paths:
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    except OSError:  # a file vanished while listing: the folder is changing
        digest.update(b"changing")
    return digest.hexdigest()


def check_files(folder: Path) -> None:
    """Every file a published version carries is there; raises Refusal("incomplete"|"empty")."""
    if not folder.is_dir() or not any(folder.iterdir()):
        raise Refusal("empty", "the version folder is empty")
    missing = []
    if not (folder / "saved_model.pb").is_file():
        missing.append("saved_model.pb")
    variables = folder / "variables"
    if not (variables / "variables.index").is_file():
        missing.append("variables/variables.index")
    shards = sorted(variables.glob("variables.data-*-of-*")) if variables.is_dir() else []
    if not shards:
        missing.append("variables/variables.data-*")
    else:
        # Shards are named variables.data-<i>-of-<n>: all n must be there.
        try:
            count = int(shards[0].name.rsplit("-of-", 1)[1])
        except ValueError:
            count = len(shards)
        if len(shards) != count:
            missing.append(f"{count - len(shards)} of {count} weight shards")
    extra = folder / "assets.extra"
    for name in (contract.CALIBRATION_FILE, contract.WARMUP_FILE, contract.MODEL_CARD_JSON):
        if not (extra / name).is_file():
            missing.append(f"assets.extra/{name}")
    if missing:
        raise Refusal("incomplete", "the version is incomplete: " + ", ".join(missing) + " missing")


def check_binding(folder: Path) -> str:
    """The calibration reads and was fitted on the model in `folder`; returns the model's content
    fingerprint. Raises Refusal: "calibration_*" (unreadable, wrong format, fitted on another model)
    or "model_changed" (the model files are not those its calibration and model card were made for:
    cut short, or changed after publishing)."""
    try:
        fingerprint = content_fingerprint(folder)
    except OSError as exc:
        logger.error("cannot fingerprint %s: %s", folder, exc)
        raise Refusal("model_unreadable", "its model files cannot be read") from exc
    try:
        calibration = load_calibration(folder / "assets.extra" / contract.CALIBRATION_FILE)
    except CalibrationProblem as problem:
        raise Refusal(problem.code, problem.reason) from problem
    if calibration.model_fingerprint == fingerprint:
        return fingerprint
    card = _card_fingerprint(folder)
    if card == calibration.model_fingerprint:
        logger.error(
            "%s: calibration and model card are for %s, the model files hash to %s",
            folder,
            card,
            fingerprint,
        )
        raise Refusal(
            "model_changed",
            "its model files are not the ones its calibration and model card were made for "
            "(cut short, or changed after publishing)",
        )
    logger.error(
        "%s: calibration is for %s, the model is %s", folder, calibration.model_fingerprint, fingerprint
    )
    raise Refusal("calibration_mismatch", "its calibration was fitted on another model (fingerprints differ)")


def _card_fingerprint(folder: Path) -> str | None:
    try:
        card = json.loads((folder / "assets.extra" / contract.MODEL_CARD_JSON).read_text())
    except (OSError, ValueError):
        return None
    value = card.get("model_fingerprint") if isinstance(card, dict) else None
    return value if is_fingerprint(value) else None


def read_signature(metadata: predict_pb2.GetModelMetadataResponse) -> contract.Signature:
    """The contract's signature as a GetModelMetadata answer states it; raises Refusal("signature")."""
    signatures = predict_pb2.SignatureDefMap()
    if "signature_def" not in metadata.metadata or not metadata.metadata["signature_def"].Unpack(signatures):
        raise Refusal("signature", "the model server reports no signature for it")
    if contract.SIGNATURE_NAME not in signatures.signature_def:
        raise Refusal("signature", f"it has no signature {contract.SIGNATURE_NAME!r}")
    names = {value: name for name, value in contract.DATA_TYPE_ENUM.items()}
    signature = signatures.signature_def[contract.SIGNATURE_NAME]

    def info(tensor: object) -> tuple[str, tuple[int | None, ...]]:
        dtype = int(tensor.dtype)  # type: ignore[attr-defined]
        dims = tensor.tensor_shape.dim  # type: ignore[attr-defined]
        return names.get(dtype, f"enum {dtype}"), tuple(None if d.size < 0 else int(d.size) for d in dims)

    return {
        "inputs": {name: info(value) for name, value in signature.inputs.items()},
        "outputs": {name: info(value) for name, value in signature.outputs.items()},
    }


def check_signature(signature: contract.Signature) -> None:
    """Raises Refusal("signature") when the served signature is not the contract's."""
    problem = contract.signature_problem(signature)
    if problem is not None:
        raise Refusal("signature", problem)


def warmup_requests(folder: Path, limit: int = MAX_PROBE_RECORDS) -> list[predict_pb2.PredictRequest]:
    """The first `limit` PredictRequests of assets.extra/tf_serving_warmup_requests; raises
    Refusal("warmup") when the file is not a readable TFRecord of PredictionLogs."""
    path = folder / "assets.extra" / contract.WARMUP_FILE
    requests = []
    try:
        data = path.read_bytes()
        for record in _tfrecords(data):
            payload = _field(record, _PREDICT_LOG_FIELD)
            if payload is None:
                continue  # a classify or regress record: not for this model
            request = predict_pb2.PredictRequest.FromString(_field(payload, _REQUEST_FIELD) or b"")
            requests.append(request)
            if len(requests) >= limit:
                break
    except (OSError, ValueError) as exc:
        raise Refusal("warmup", "its warmup requests cannot be read") from exc
    if not requests:
        raise Refusal("warmup", "it has no warmup requests to probe it with")
    return requests


def _tfrecords(data: bytes) -> Iterator[bytes]:
    """Records of a TFRecord file: u64 length, u32 masked CRC, data, u32 masked CRC (little-endian).
    The CRCs are not verified: a record cut short is caught by its length."""
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError("TFRecord header cut short")
        (length,) = struct.unpack_from("<Q", data, offset)
        start = offset + 12
        end = start + length
        if end + 4 > len(data):
            raise ValueError("TFRecord cut short")
        yield data[start:end]
        offset = end + 4


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("varint cut short")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _field(message: bytes, number: int) -> bytes | None:
    """The bytes of the last length-delimited field `number` of a serialized message (None if absent)."""
    offset, found = 0, None
    while offset < len(message):
        key, offset = _varint(message, offset)
        wire = key & 7
        if wire == 0:
            _, offset = _varint(message, offset)
        elif wire == 1:
            offset += 8
        elif wire == 5:
            offset += 4
        elif wire == _LENGTH_DELIMITED:
            length, offset = _varint(message, offset)
            if offset + length > len(message):
                raise ValueError("field cut short")
            if key >> 3 == number:
                found = message[offset : offset + length]
            offset += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return found


def check_answer(
    request: predict_pb2.PredictRequest, response: predict_pb2.PredictResponse, version: int
) -> None:
    """A probe's answer comes from `version` and has the outputs the orchestrator reads from it
    (contract.read_layout: contract 3's named signals or contract 2's signal axis, the signals no answer
    can do without), each with the request's batch, the contract's dtype and shape, and finite values;
    raises Refusal("probe")."""
    if response.model_spec.version.value != version:
        raise Refusal("probe", f"its probe was answered by version {response.model_spec.version.value}")
    first = next(iter(request.inputs.values()))
    rows = int(first.tensor_shape.dim[0].size) if first.tensor_shape.dim else 0
    known = {spec.name: spec for spec in (*contract.outputs(), contract.SIGNAL_AXIS)}
    layout = contract.read_layout({"outputs": {name: ("", ()) for name in response.outputs}})
    missing = [name for name in contract.REQUIRED_SIGNALS if name not in layout.signals]
    if missing:
        raise Refusal("probe", f"its answer to a warmup request lacks the signals {', '.join(missing)}")
    for spec in (known[name] for name in layout.outputs):
        if spec.name not in response.outputs:
            raise Refusal("probe", f"its answer to a warmup request lacks output {spec.name!r}")
        try:
            array = make_ndarray(response.outputs[spec.name])
        except ValueError as exc:
            raise Refusal("probe", f"its output {spec.name!r} cannot be read") from exc
        want = (rows, *spec.shape[1:])
        if str(array.dtype) != spec.dtype or tuple(array.shape) != want:
            raise Refusal(
                "probe",
                f"its output {spec.name!r} is {array.dtype}{tuple(array.shape)} for a batch of {rows}, "
                f"the contract says {spec.dtype}{want}",
            )
        if not np.all(np.isfinite(array)):
            raise Refusal("probe", f"its output {spec.name!r} is not finite")
