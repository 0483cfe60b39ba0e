"""Whole-image inference for evaluation: resize ACNE04 photos to one scale, run the detector (with
optional mirrored test-time augmentation) and decode peaks; plus the per-split valid/test scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from export.acne.dataset import NATIVE_PX, Sample
from export.acne.metrics import (
    ImageMatches,
    choose_threshold,
    count_table,
    lesion_scores,
    match_image,
)
from export.acne.network import decode_peaks, heatmap_probabilities

logger = logging.getLogger(__name__)

MAX_PEAKS = 128
THRESHOLDS = np.round(np.arange(0.05, 0.81, 0.01), 2)


def make_predictor(model: keras.Model, flip_tta: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    """Compile image batch -> peaks [B, MAX_PEAKS, 3] once for any batch and image size."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True)
    def predict(images: tf.Tensor) -> tf.Tensor:
        return decode_peaks(heatmap_probabilities(model, images, flip_tta), MAX_PEAKS)

    return predict


def predict_peaks(
    predictor: Callable[[tf.Tensor], tf.Tensor], images: NDArray[np.uint8], image_px: int, batch: int = 8
) -> NDArray[np.float32]:
    """Resize photos to image_px (INTER_AREA, as the server resizes crops) and decode their peaks."""
    rows: list[NDArray[np.float32]] = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        resized = np.stack(
            [cv2.resize(im, (image_px, image_px), interpolation=cv2.INTER_AREA) for im in chunk]
        )
        rows.append(predictor(tf.constant(resized, tf.float32)).numpy())
    return np.concatenate(rows, axis=0)


def match_split(peaks: NDArray[np.float32], samples: list[Sample]) -> list[ImageMatches]:
    """Match every image's peaks to its boxes in native 640 px coordinates."""
    return [match_image(p, s.boxes, NATIVE_PX) for p, s in zip(peaks, samples, strict=True)]


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
