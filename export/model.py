"""The served model: one tf.Module whose serving signature follows serving/contract.py.

The measured concerns are fixed filters (export/measures.py); the acne head is either the fixed
redness-peak filter (version 1) or the detector learned from ACNE04 (export/acne/). Either head can be
swapped without the orchestrator noticing, because the signature never changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from export.acne.network import build_detector, decode_peaks, heatmap_probabilities
from export.measures import measure_regions
from serving import contract

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorHead:
    """Where the learned acne detector's weights are and how it is run on a region crop."""

    weights: Path
    width: int = 24
    context: bool = False  # the stride-32 level of build_detector
    # Crops are resized to this side before the detector (the scale it was trained for).
    input_px: int = contract.REGION_SIZE_PX
    # Average with a mirrored pass: a little more accurate, twice the detector's time.
    flip_tta: bool = False


def input_signature() -> list[tf.TensorSpec]:
    spec = contract.INPUT
    return [tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name)]


class SkinModel(tf.Module):
    """Region crops in, the contract's outputs out; every output row depends on its input row only."""

    def __init__(self, head: DetectorHead | None = None) -> None:
        super().__init__(name="skin_model")
        self.head = head
        self.detector: keras.Model | None = None
        if head is not None:
            self.detector = build_detector(width=head.width, context=head.context)
            self.detector.load_weights(str(head.weights))
        self.serve = tf.function(self._serve, input_signature=input_signature())

    def _serve(self, regions: tf.Tensor) -> dict[str, tf.Tensor]:
        signals, redness = measure_regions(regions, contract.MAX_LESIONS)
        if self.detector is None or self.head is None:
            peaks = redness
        else:
            images = tf.cast(regions, tf.float32)
            if self.head.input_px != contract.REGION_SIZE_PX:
                size = (self.head.input_px, self.head.input_px)
                images = tf.image.resize(images, size, method="bilinear")
            heatmap = heatmap_probabilities(self.detector, images, flip_tta=self.head.flip_tta)
            peaks = decode_peaks(heatmap, contract.MAX_LESIONS)
        return {
            "signals": tf.ensure_shape(signals, [None, len(contract.SIGNAL_NAMES)]),
            "acne_peaks": tf.ensure_shape(peaks, [None, contract.MAX_LESIONS, 3]),
        }

    def describe(self) -> str:
        if self.head is None:
            return "fixed filters; acne head: redness peaks (difference of Gaussians on CIELAB a*)"
        return f"fixed filters; acne head: ACNE04 detector ({self.head.weights.name})"
