"""The wire subset is byte-compatible with the official tensorflow-serving-api messages, both ways."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from serving import contract
from serving.tensors import encode_predict_request, fill_tensor_proto, make_ndarray
from serving.wire import generate, model_status_pb2, predict_pb2, services_pb2

official_predict = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
from tensorflow_serving.apis import (  # noqa: E402 - after the importorskip guard
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    prediction_service_pb2,
)
from tensorflow_serving.apis import model_service_pb2 as official_model_service  # noqa: E402


def _request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = contract.MODEL_NAME
    request.model_spec.version.value = 7
    request.model_spec.signature_name = contract.SIGNATURE_NAME
    size = contract.FACE_SIZE_PX
    rng = np.random.default_rng(0)
    fill_tensor_proto(request.inputs["face"], rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8))
    fill_tensor_proto(request.inputs["mask"], rng.integers(0, 9, (1, size, size), dtype=np.uint8))
    request.output_filter.append("signals")
    return request


def test_predict_request_bytes_identical_both_ways() -> None:
    ours = _request()
    raw = ours.SerializeToString(deterministic=True)
    theirs = official_predict.PredictRequest.FromString(raw)
    assert theirs.SerializeToString(deterministic=True) == raw
    assert theirs.model_spec.version.value == 7
    assert predict_pb2.PredictRequest.FromString(theirs.SerializeToString()) == ours


def test_predict_request_tensor_reads_the_same_with_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")
    ours = _request()
    theirs = official_predict.PredictRequest.FromString(ours.SerializeToString())
    for name in contract.INPUT_NAMES:
        expected = make_ndarray(ours.inputs[name])
        np.testing.assert_array_equal(tf.make_ndarray(theirs.inputs[name]), expected)


def test_predict_response_from_official_parses_in_subset() -> None:
    tf = pytest.importorskip("tensorflow")
    theirs = official_predict.PredictResponse()
    theirs.model_spec.name = contract.MODEL_NAME
    theirs.model_spec.version.value = 3
    signals = np.linspace(-5, 5, 7 * len(contract.SIGNAL_AXIS_NAMES), dtype=np.float32).reshape(7, -1)
    theirs.outputs["signals"].CopyFrom(tf.make_tensor_proto(signals))
    # TensorFlow writes small tensors as float_val and large ones as tensor_content: read both.
    theirs.outputs["small"].CopyFrom(tf.make_tensor_proto(np.float32(2.5), shape=[2, 2]))
    raw = theirs.SerializeToString(deterministic=True)
    ours = predict_pb2.PredictResponse.FromString(raw)
    assert ours.SerializeToString(deterministic=True) == raw
    np.testing.assert_array_equal(make_ndarray(ours.outputs["signals"]), signals)
    np.testing.assert_array_equal(make_ndarray(ours.outputs["small"]), np.full((2, 2), 2.5, np.float32))


def test_metadata_any_unpacks_into_subset() -> None:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature = signature_map.signature_def[contract.SIGNATURE_NAME]
    signature.method_name = contract.METHOD_NAME
    info = signature.inputs["face"]
    info.name = "serving_default_regions:0"
    info.dtype = contract.DATA_TYPE_ENUM["uint8"]
    for size in (-1, 384, 384, 3):
        info.tensor_shape.dim.add().size = size
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = contract.MODEL_NAME
    response.metadata["signature_def"].Pack(signature_map)
    ours = predict_pb2.GetModelMetadataResponse.FromString(response.SerializeToString())
    unpacked = predict_pb2.SignatureDefMap()
    assert ours.metadata["signature_def"].Unpack(unpacked)
    got = unpacked.signature_def[contract.SIGNATURE_NAME].inputs["face"]
    assert [d.size for d in got.tensor_shape.dim] == [-1, 384, 384, 3]
    assert got.dtype == contract.DATA_TYPE_ENUM["uint8"]


def test_model_status_round_trip() -> None:
    theirs = get_model_status_pb2.GetModelStatusResponse()
    item = theirs.model_version_status.add()
    item.version = 2
    item.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    item.status.error_code = 0
    failed = theirs.model_version_status.add()
    failed.version = 3
    failed.state = get_model_status_pb2.ModelVersionStatus.END
    failed.status.error_code = 9
    failed.status.error_message = "load failed"
    raw = theirs.SerializeToString(deterministic=True)
    ours = model_status_pb2.GetModelStatusResponse.FromString(raw)
    assert ours.SerializeToString(deterministic=True) == raw
    assert ours.model_version_status[1].status.error_message == "load failed"
    assert ours.model_version_status[0].state == model_status_pb2.ModelVersionStatus.AVAILABLE


def test_reload_config_request_round_trip() -> None:
    text = (Path(__file__).parent.parent / "serving" / "models.config").read_text()
    ours = model_status_pb2.ReloadConfigRequest()
    text_format.Parse(text, ours.config)
    ours.config.model_config_list.config[0].version_labels["stable"] = 1
    raw = ours.SerializeToString(deterministic=True)
    theirs = model_management_pb2.ReloadConfigRequest.FromString(raw)
    assert theirs.SerializeToString(deterministic=True) == raw
    config = theirs.config.model_config_list.config[0]
    assert config.name == contract.MODEL_NAME
    # Admission serves an explicit set: the committed config names the published versions.
    published = sorted(
        int(p.name)
        for p in (Path(__file__).parent.parent / "model_repo" / config.name).iterdir()
        if p.name.isdigit()
    )
    assert list(config.model_version_policy.specific.versions) == published
    assert dict(config.version_labels) == {"stable": 1}


@pytest.mark.parametrize(
    ("service", "official"),
    [
        ("PredictionService", prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]),
        ("ModelService", official_model_service.DESCRIPTOR.services_by_name["ModelService"]),
    ],
)
def test_service_names_and_methods_match(service: str, official: object) -> None:
    ours = services_pb2.DESCRIPTOR.services_by_name[service]
    assert ours.full_name == official.full_name  # type: ignore[attr-defined]
    theirs = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in official.methods}  # type: ignore[attr-defined]
    for method in ours.methods:
        assert theirs[method.name] == (method.input_type.full_name, method.output_type.full_name)


def test_generated_modules_match_the_protos() -> None:
    """The committed *_pb2 modules are what `make protos` produces from the committed .proto files."""
    with tempfile.TemporaryDirectory() as tmp:
        # protoc runs in its own process: it shares native libraries badly with TensorFlow.
        subprocess.run([sys.executable, "-m", "serving.wire.generate", tmp], check=True, timeout=120)
        for committed in sorted((generate.ROOT / "serving" / "wire").glob("*_pb2*.py*")):
            fresh = Path(tmp) / committed.relative_to(generate.ROOT)
            assert fresh.read_text() == committed.read_text(), f"{committed} is stale: run make protos"


def test_orchestrator_imports_no_tensorflow() -> None:
    """Importing the whole orchestrator (app, client, wire) loads neither TensorFlow nor its protos."""
    code = (
        "import sys, orchestrator.web.app, orchestrator.predict.client, orchestrator.pipeline;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('tensorflow','keras','tensorflow_serving')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_encoded_predict_request_parses_as_the_filled_message() -> None:
    head = predict_pb2.PredictRequest()
    head.model_spec.name = contract.MODEL_NAME
    head.model_spec.version.value = 7
    head.model_spec.signature_name = contract.SIGNATURE_NAME
    head.output_filter.extend(["signals", "acne_peaks"])
    rng = np.random.default_rng(1)
    size = contract.PATCH_SIZE_PX
    inputs = {
        "face": rng.integers(0, 256, (1, contract.FACE_SIZE_PX, contract.FACE_SIZE_PX, 3), dtype=np.uint8),
        # Not contiguous: sent as its values in order, as fill_tensor_proto sends it.
        "mask": rng.integers(0, 9, (1, 384, 384), dtype=np.uint8)[:, ::-1],
        "patches": rng.integers(0, 256, (1, len(contract.PATCH_SLOTS), size, size, 3), dtype=np.uint8),
        "wide": rng.random((2, 3, 300)).astype(np.float32),
        "empty": np.zeros((0, 3), np.int64),
    }
    filled = predict_pb2.PredictRequest()
    filled.CopyFrom(head)
    for name, array in inputs.items():
        fill_tensor_proto(filled.inputs[name], array)
    parsed = predict_pb2.PredictRequest.FromString(encode_predict_request(head, inputs))
    assert parsed == filled
    for name, array in inputs.items():
        np.testing.assert_array_equal(make_ndarray(parsed.inputs[name]), array)
    # TensorFlow Serving's own message reads it too.
    theirs = official_predict.PredictRequest.FromString(encode_predict_request(head, inputs))
    assert predict_pb2.PredictRequest.FromString(theirs.SerializeToString()) == filled


def test_encoding_refuses_a_head_that_already_has_inputs() -> None:
    with pytest.raises(ValueError, match="no inputs"):
        encode_predict_request(_request(), {"face": np.zeros((1, 2, 2, 3), np.uint8)})
