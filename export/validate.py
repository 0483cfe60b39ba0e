"""Validating a version folder against the model contract before it may be published.

Checks the signature (names, dtypes, shapes), the files every version carries in assets.extra/ (the
calibration and model card bound to the SavedModel's content fingerprint, whatever the folder's
number), and the model's behaviour: it runs, its outputs are finite and in range, each row depends on
its own crop only (server-side batching merges faces), and every signal column varies across the
validation crops.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from orchestrator.predict.prediction import batch_signals
from orchestrator.scoring.scorer import CALIBRATION_FORMAT, CalibrationProblem, load_calibration
from serving import contract
from serving.fingerprint import content_fingerprint
from serving.tensors import make_ndarray

logger = logging.getLogger(__name__)


class InvalidVersion(Exception):
    """A version folder breaks the contract; the message lists every problem found."""


@dataclass
class ValidationReport:
    version: int
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def check(self, ok: bool, passed: str, failed: str) -> bool:
        (self.checks if ok else self.problems).append(passed if ok else failed)
        return ok


def _dims(shape: Any) -> tuple[int | None, ...]:
    """A TensorShapeProto as a tuple, None for a free dimension."""
    return tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


def check_signature(path: Path, report: ValidationReport) -> None:
    """The serving_default signature takes the contract's inputs and its outputs can be read
    (contract.signature_problem: contract 3's named outputs, or contract 2's "signals" axis)."""
    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    signatures = saved.meta_graphs[0].signature_def
    if not report.check(
        contract.SIGNATURE_NAME in signatures,
        f"signature {contract.SIGNATURE_NAME} present",
        f"no signature {contract.SIGNATURE_NAME!r}",
    ):
        return
    signature = signatures[contract.SIGNATURE_NAME]
    report.check(
        signature.method_name == contract.METHOD_NAME,
        "method is predict",
        f"method_name {signature.method_name!r}, expected {contract.METHOD_NAME!r}",
    )
    given: contract.Signature = {
        kind: {
            name: (tf.dtypes.as_dtype(info.dtype).name, _dims(info.tensor_shape))
            for name, info in infos.items()
        }
        for kind, infos in (("inputs", signature.inputs), ("outputs", signature.outputs))
    }
    problem = contract.signature_problem(given)
    if report.check(problem is None, "signature answerable under the contract", problem or ""):
        layout = contract.read_layout(given)
        report.check(True, f"outputs read: {', '.join(layout.outputs)}", "")


def check_assets(path: Path, report: ValidationReport) -> None:
    """assets.extra/ holds warmup records, a calibration in the current format and a model card, both
    bound to this folder's SavedModel by its content fingerprint (its folder number does not matter)."""
    extra = path / "assets.extra"
    for name in (
        contract.WARMUP_FILE,
        contract.CALIBRATION_FILE,
        contract.MODEL_CARD_FILE,
        contract.MODEL_CARD_JSON,
    ):
        report.check((extra / name).is_file(), f"assets.extra/{name} present", f"assets.extra/{name} missing")
    fingerprint = content_fingerprint(path)
    if (extra / contract.CALIBRATION_FILE).is_file():
        try:
            calibration = load_calibration(extra / contract.CALIBRATION_FILE)
            report.check(
                calibration.model_fingerprint == fingerprint,
                f"calibration format {CALIBRATION_FORMAT}, bound to this model ({fingerprint})",
                f"calibration was fitted on model {calibration.model_fingerprint}, this folder holds "
                f"{fingerprint}",
            )
        except CalibrationProblem as exc:
            report.problems.append(f"calibration unusable: {exc.reason}")
    if (extra / contract.MODEL_CARD_JSON).is_file():
        card = json.loads((extra / contract.MODEL_CARD_JSON).read_text())
        report.check(
            card.get("model_fingerprint") == fingerprint,
            "model card describes this model",
            f"model card describes model {card.get('model_fingerprint')}, this folder holds {fingerprint}",
        )


def edited_crops(crops: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Four edits of every RGB image [N, H, W, 3] (faces, each edit after its face's others), each moving
    a kind of measurement the warmup's smooth synthetic skin leaves still: small dark spots, a specular
    highlight, half the image covered by a colour no skin has, and dark lines. Sizes follow the images'
    own; other inputs come back empty."""
    if crops.ndim != 4 or crops.shape[-1] != 3:
        return crops[:0]
    height, width = crops.shape[1:3]
    yy, xx = np.mgrid[0:height, 0:width]
    cell_y, cell_x = max(2, height // 8), max(2, width // 8)
    radius = max(1, min(height, width) // 30)
    spots = (yy % cell_y - cell_y // 2) ** 2 + (xx % cell_x - cell_x // 2) ** 2 <= radius**2
    highlight = (yy - height // 3) ** 2 + (xx - width // 3) ** 2 <= (min(height, width) // 8) ** 2
    lines = yy % max(3, height // 10) < max(1, height // 80)
    edited = []
    for crop in crops.astype(np.float32):
        spotted, shiny, covered, lined = (crop.copy() for _ in range(4))
        spotted[spots] *= 0.55
        shiny[highlight] = 250.0
        covered[:, width // 2 :] = (40.0, 90.0, 200.0)
        lined[lines] *= 0.6
        edited += [spotted, shiny, covered, lined]
    return np.clip(np.stack(edited), 0, 255).astype(np.uint8)


def constant_signals(signals: dict[str, NDArray[np.float32]]) -> list[str]:
    """The signals that take (to float precision) one value over all faces and labels."""
    constant = []
    for name, values in signals.items():
        spread = float(np.ptp(values))
        if not spread > 1e-6 * (1.0 + float(np.abs(values).max())):
            constant.append(name)
    return constant


def check_behaviour(path: Path, report: ValidationReport) -> None:
    """Run the warmup requests and edits of them: finite outputs in range, row independence, and every
    signal column varies (a column that never moves is a head that measures nothing)."""
    serve = tf.saved_model.load(str(path)).signatures[contract.SIGNATURE_NAME]
    wanted = [name for name in serve.structured_input_signature[1]]
    records = path / "assets.extra" / contract.WARMUP_FILE
    batches = []
    for raw in tf.data.TFRecordDataset(str(records)):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        inputs = log.predict_log.request.inputs
        batches.append({name: make_ndarray(inputs[name]) for name in wanted if name in inputs})
    if not report.check(
        bool(batches) and all(len(b) == len(wanted) for b in batches),
        "warmup records readable",
        "no warmup records, or records without every input",
    ):
        return
    largest = max(batches, key=lambda b: b["face"].shape[0])
    edits = edited_crops(largest["face"])
    per_face = len(edits) // max(1, len(largest["face"]))
    inputs = {
        "face": np.concatenate([largest["face"], edits]),
        "mask": np.concatenate([largest["mask"], np.repeat(largest["mask"], per_face, axis=0)]),
    }
    # Patch slots (contract 4) go with their face, unchanged by the face's edits.
    for name in (spec.name for spec in contract.PATCH_INPUTS if spec.name in largest):
        inputs[name] = np.concatenate([largest[name], np.repeat(largest[name], per_face, axis=0)])
    outputs = {k: v.numpy() for k, v in serve(**{n: tf.constant(a) for n, a in inputs.items()}).items()}
    signals, peaks = batch_signals(outputs), outputs[contract.ACNE_PEAKS.name]
    report.check(
        all(np.all(np.isfinite(v)) for v in signals.values()) and bool(np.all(np.isfinite(peaks))),
        "outputs finite",
        "outputs hold NaN or inf",
    )
    report.check(
        bool(np.all((peaks >= 0.0) & (peaks <= 1.0))), "acne_peaks within [0, 1]", "acne_peaks outside [0, 1]"
    )
    zone_outputs = [v for k, v in outputs.items() if k.startswith(contract.ZONE_PREFIX)]
    if zone_outputs:
        report.check(
            all(np.all(np.isfinite(v)) for v in zone_outputs)
            and any(float(np.ptp(v)) > 0 for v in zone_outputs),
            "zone measures finite and varying",
            "zone measures hold NaN or inf, or never vary",
        )
    faces = len(inputs["face"])
    constant = constant_signals(signals)
    report.check(
        not constant,
        f"every signal varies across {faces} validation faces",
        f"signals constant across {faces} validation faces: {', '.join(constant)}",
    )
    single = {k: v.numpy() for k, v in serve(**{n: tf.constant(a[:1]) for n, a in inputs.items()}).items()}
    same = all(np.allclose(single[k][0], outputs[k][0], rtol=1e-4, atol=1e-3) for k in outputs)
    report.check(same, "rows independent of their batch", "a row's output changes with its batch")


def validate_version(path: Path, version: int) -> ValidationReport:
    """Validate a version folder (staged or published); raises InvalidVersion listing the problems."""
    report = ValidationReport(version)
    if not (path / "saved_model.pb").is_file():
        raise InvalidVersion(f"{path} holds no saved_model.pb")
    check_signature(path, report)
    check_assets(path, report)
    if not report.problems:
        check_behaviour(path, report)
    if report.problems:
        raise InvalidVersion(f"version {version} at {path}: " + "; ".join(report.problems))
    logger.info("version %d valid: %s", version, "; ".join(report.checks))
    return report
