"""The served model: one tf.Module whose serving signature follows serving/contract.py.

Inputs are the aligned face and its region mask; the measured concerns are fixed filters
(export/measures.py) read per region under the mask, and the acne head runs over the whole face image
with its candidates kept only on skin (mask label > 0). The head is either the fixed redness-peak filter
or a detector learned from ACNE04 (export/acne/); either can be swapped without the orchestrator
noticing, because the outputs keep their names. Each signal is its own output (contract 3).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from export.acne.network import OUTPUT_STRIDE, build_detector, decode_peaks, heatmap_probabilities
from export.concerns.measures import zone_measures
from export.measures import measure_faces
from serving import contract

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorHead:
    """Where a learned acne detector's weights are and which network they belong to."""

    weights: Path
    network: str = "plain"  # "plain": export.acne.network.build_detector; "lite": the EfficientNet one
    width: int = 24
    context: bool = False  # the stride-32 level of build_detector
    # Average with a mirrored pass: a little more accurate, twice the detector's time.
    flip_tta: bool = False

    @classmethod
    def from_dir(cls, folder: Path) -> DetectorHead:
        """The head trained into `folder` (detector.weights.h5 and acne_calibration.json)."""
        params = json.loads((folder / "acne_calibration.json").read_text())
        return cls(
            weights=folder / "detector.weights.h5",
            network=str(params.get("network", "plain")),
            width=int(params.get("width", 24)),
            context=bool(params.get("context", False)),
        )

    @classmethod
    def from_version(cls, folder: Path, network: str, width: int = 24, context: bool = False) -> DetectorHead:
        """The head a published version serves (its SavedModel's variables), for a new version that keeps
        its detector unchanged; the network must be the one that version was built with."""
        return cls(weights=folder / "variables" / "variables", network=network, width=width, context=context)

    def build(self) -> keras.Model:
        """The served (batch-norm folded) network with its weights loaded."""
        if self.network == "lite":
            from export.acne.lite_detector import build_lite_detector

            model = build_lite_detector(batch_norm=False)
        else:
            model = build_detector(width=self.width, context=self.context)
        if self.weights.name == "variables":
            # A published version's checkpoint: SkinModel tracks the network as "detector".
            tf.train.Checkpoint(detector=model).read(str(self.weights)).assert_existing_objects_matched()
        else:
            model.load_weights(str(self.weights))
        return model


def input_signature(patches: bool = True) -> list[tf.TensorSpec]:
    specs = (*contract.INPUTS, *contract.PATCH_INPUTS) if patches else contract.INPUTS
    return [tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name) for spec in specs]


def skin_cells(mask: tf.Tensor) -> tf.Tensor:
    """1 for each heatmap cell [B, H/4, W/4, 1] holding, or next to a cell holding, a skin pixel of the
    mask [B, H, W]; else 0.

    The one-cell margin (4 px of the aligned face) takes back lesions the mask's colour test cut out: a
    dark nodule or a crust is not the face's skin colour, and lesions sit at the hairline and the jaw's
    edge. On ACNE04 valid it raises the labelled lesions the head may report from 94.0% to 97.2% and
    lesion F1 from 0.698 to 0.704.
    """
    skin = tf.cast(mask > contract.NOT_SKIN, tf.float32)[..., None]
    cells = tf.nn.max_pool2d(skin, ksize=OUTPUT_STRIDE, strides=OUTPUT_STRIDE, padding="VALID")
    return tf.nn.max_pool2d(cells, ksize=3, strides=1, padding="SAME")


class SkinModel(tf.Module):
    """Aligned faces and masks in, the contract's outputs out; every output row depends on its own face.

    With a `wrinkle_response` (the design run's choice, reports/concerns_design.json) it is a contract-4
    model: the fixed-scale patch slots come in too and the zone measures go out; without one, contract 3
    (the aligned face alone)."""

    def __init__(self, head: DetectorHead | None = None, wrinkle_response: str | None = None) -> None:
        super().__init__(name="skin_model")
        self.head = head
        self.detector: keras.Model | None = head.build() if head is not None else None
        self.wrinkle_response = wrinkle_response
        if wrinkle_response is None:
            self.serve = tf.function(self._serve, input_signature=input_signature(patches=False))
        else:
            self.serve = tf.function(self._serve_patches, input_signature=input_signature())

    def _serve_patches(
        self, face: tf.Tensor, mask: tf.Tensor, patches: tf.Tensor, patch_skin: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        outputs = self._serve(face, mask)
        assert self.wrinkle_response is not None
        for name, values in zone_measures(patches, patch_skin, self.wrinkle_response).items():
            outputs[contract.ZONE_PREFIX + name] = tf.ensure_shape(values, [None, len(contract.PATCH_SLOTS)])
        return outputs

    def _serve(self, face: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        signals, redness = measure_faces(face, mask, contract.MAX_LESIONS)
        if self.detector is None or self.head is None:
            peaks = redness
        else:
            heatmap = heatmap_probabilities(
                self.detector, tf.cast(face, tf.float32), flip_tta=self.head.flip_tta
            )
            peaks = decode_peaks(heatmap * skin_cells(mask), contract.MAX_LESIONS)
        outputs = {
            contract.SIGNAL_PREFIX + name: tf.ensure_shape(signal, [None, len(contract.LABEL_NAMES)])
            for name, signal in signals.items()
        }
        outputs[contract.ACNE_PEAKS.name] = tf.ensure_shape(peaks, [None, contract.MAX_LESIONS, 3])
        return outputs

    def describe(self) -> str:
        zones = (
            ""
            if self.wrinkle_response is None
            else f"; zone measures at fixed scales (lines: {self.wrinkle_response})"
        )
        if self.head is None:
            return f"fixed filters; acne head: redness peaks (difference of Gaussians on CIELAB a*){zones}"
        detector = f"ACNE04 detector ({self.head.network}, {self.head.weights.name})"
        return f"fixed filters; acne head: {detector}{zones}"
