"""Inference for training's valid checks: aligned faces at the served setting (the heatmap zeroed off
the mask's skin, as export/model.py serves it), matched to their lesion boxes and scored per split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from export.acne.metrics import (
    ImageMatches,
    choose_threshold,
    count_table,
    lesion_scores,
    match_image,
)
from export.acne.network import decode_peaks, heatmap_probabilities
from export.model import skin_cells
from serving import contract

logger = logging.getLogger(__name__)

MAX_PEAKS = contract.MAX_LESIONS
THRESHOLDS = np.round(np.arange(0.05, 0.81, 0.01), 2)


def make_served_predictor(
    model: keras.Model, grow_cells: int = 0
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Compile (faces uint8 [B, S, S, 3], masks uint8 [B, S, S]) -> peaks [B, MAX_PEAKS, 3] as the served
    model computes them: sigmoid heatmap, zeroed on cells without skin, up to MAX_PEAKS peaks.

    `grow_cells` > 0 is a diagnostic only (not what is served): it widens the skin cells by that many
    cells on each side, to measure what lesions the mask's edges and holes cost.
    """
    size = contract.FACE_SIZE_PX

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.uint8),
            tf.TensorSpec([None, size, size], tf.uint8),
        ]
    )
    def predict(faces: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
        heatmap = heatmap_probabilities(model, tf.cast(faces, tf.float32))
        cells = skin_cells(masks)
        if grow_cells:
            cells = tf.nn.max_pool2d(cells, ksize=2 * grow_cells + 1, strides=1, padding="SAME")
        return decode_peaks(heatmap * cells, MAX_PEAKS)

    return predict


def predict_aligned(
    predictor: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    faces: NDArray[np.uint8],
    masks: NDArray[np.uint8],
    batch: int = 8,
) -> NDArray[np.float32]:
    """Peaks [N, MAX_PEAKS, 3] of aligned faces and their masks, in batches."""
    rows = [
        np.asarray(predictor(tf.constant(faces[i : i + batch]), tf.constant(masks[i : i + batch])))
        for i in range(0, len(faces), batch)
    ]
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, MAX_PEAKS, 3), np.float32)


def match_aligned(
    peaks: NDArray[np.float32], boxes: list[NDArray[np.float32]], frame_px: int = contract.FACE_SIZE_PX
) -> list[ImageMatches]:
    """Match every face's peaks to its boxes, both in aligned-frame pixels."""
    return [match_image(p, b, frame_px) for p, b in zip(peaks, boxes, strict=True)]


@dataclass(frozen=True)
class SplitScore:
    """Lesion and counting quality of one split at one threshold."""

    threshold: float
    precision: float
    recall: float
    f1: float
    mae: float

    def line(self) -> str:
        """One log line."""
        return (
            f"thr={self.threshold:.2f} P={self.precision:.3f} R={self.recall:.3f} "
            f"F1={self.f1:.3f} MAE={self.mae:.2f}"
        )


def score_split(matches: list[ImageMatches], threshold: float | None = None) -> SplitScore:
    """Score a split at a threshold, choosing the best-F1 one when none is given."""
    if threshold is None:
        threshold = choose_threshold(matches, THRESHOLDS)
    table = count_table(matches, threshold)
    precision, recall, f1 = lesion_scores(table)
    mae = float(np.mean(np.abs(table[:, 1] - table[:, 2])))
    return SplitScore(threshold, precision, recall, f1, mae)
