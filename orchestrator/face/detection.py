"""Face detection: MediaPipe's BlazeFace on OpenCV DNN, short range first, full range for small faces.

BlazeFace (Bazarevsky et al. 2019, "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs")
scores fixed anchors and regresses a box and six keypoints (both eyes, nose tip, mouth, both ear
tragions) for each. The photo is letterboxed into the model's square input; anchors follow MediaPipe's
SSD anchor options (short range: 128 px, strides 8 and 16 with 2 and 6 anchors per cell; full range:
192 px, stride 4, 1 anchor per cell; unit anchor size) and overlapping candidates are merged by
score-weighted averaging, as MediaPipe's weighted non-maximum suppression does. Detections are
candidates only: the face mesh (landmarks.py) confirms them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.models import FULL_RANGE, SHORT_RANGE, ModelFile, NetPool, load_net

logger = logging.getLogger(__name__)

# Candidates scoring below this are dropped (MediaPipe's min_score_thresh for both models).
MIN_SCORE = 0.5
# Candidates overlapping more than this are one face (MediaPipe's min_suppression_threshold).
SUPPRESSION_IOU = 0.3
# Raw scores are clipped before the sigmoid, as MediaPipe's score_clipping_thresh.
SCORE_CLIP = 100.0
# Keypoint order of both models. The first eye is on the image's left in an upright, unmirrored photo:
# the subject's right eye.
KEYPOINTS: tuple[str, ...] = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in image pixels."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Detection:
    """One candidate face: box and keypoints in image pixels, and the detector's score (0-1)."""

    box: Box
    keypoints: NDArray[np.float32]  # [6, 2] (x, y) in KEYPOINTS order
    score: float

    def keypoint(self, name: str) -> NDArray[np.float32]:
        return self.keypoints[KEYPOINTS.index(name)]


@dataclass(frozen=True)
class _Model:
    """How one BlazeFace variant is fed and decoded."""

    file: ModelFile
    input_px: int
    # (stride, anchors per cell) per feature-map level, in output order.
    levels: tuple[tuple[int, int], ...]
    outputs: tuple[str, str]  # (scores, regressors)

    def anchors(self) -> NDArray[np.float32]:
        """Anchor centres [N, 2] (x, y) relative to the input, each cell's anchors together."""
        centres = []
        for stride, per_cell in self.levels:
            cells = self.input_px // stride
            grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
            ys, xs = np.meshgrid(grid, grid, indexing="ij")
            cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
            centres.append(np.repeat(cell, per_cell, axis=0))
        return np.concatenate(centres).astype(np.float32)


SHORT = _Model(SHORT_RANGE, 128, ((8, 2), (16, 6)), ("classificators", "regressors"))
FULL = _Model(FULL_RANGE, 192, ((4, 1),), ("reshaped_classifier_face_4", "reshaped_regressor_face_4"))


class _Runner:
    """One BlazeFace variant: its nets (pooled) and anchors."""

    def __init__(self, model: _Model) -> None:
        self.model = model
        self.anchors = model.anchors()
        self.pool = NetPool(lambda: load_net(model.file))

    def detect(self, rgb: NDArray[np.uint8]) -> list[Detection]:
        size = self.model.input_px
        height, width = rgb.shape[:2]
        # A large photo is first thinned to every k-th pixel, still at least four times the input's
        # side, so the area-averaging resize below reads a fraction of it (8 ms to 3 ms for a 12 MP
        # phone photo) and still averages enough pixels per input pixel not to alias.
        step = max(1, max(height, width) // (4 * size))
        if step > 1:
            rgb = np.ascontiguousarray(rgb[::step, ::step])
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        # Letterbox: the photo centred in the square input, the rest at -1 (black), as MediaPipe pads.
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        off_x, off_y = (size - new_w) // 2, (size - new_h) // 2
        canvas[off_y : off_y + new_h, off_x : off_x + new_w] = cv2.resize(
            rgb, (new_w, new_h), interpolation=cv2.INTER_AREA
        )
        blob = (canvas.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)[None]
        with self.pool.borrow() as net:
            net.setInput(np.ascontiguousarray(blob))
            raw_scores, raw_boxes = net.forward(list(self.model.outputs))
        logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        keep = np.flatnonzero(scores >= MIN_SCORE)
        if keep.size == 0:
            return []
        raw = raw_boxes.reshape(-1, 16)[keep] / size
        anchors = self.anchors[keep]
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2.0
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        # Input-relative -> photo pixels.
        offset = np.array([off_x, off_y], dtype=np.float32) / size
        to_px = size / scale
        boxes = np.concatenate([(centre - half - offset) * to_px, (centre + half - offset) * to_px], axis=1)
        points = (points - offset) * to_px
        return _weighted_suppression(boxes, points, scores[keep])


def _iou(box: NDArray[np.float32], others: NDArray[np.float32]) -> NDArray[np.float32]:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9), dtype=np.float32)


def _weighted_suppression(
    boxes: NDArray[np.float32], points: NDArray[np.float32], scores: NDArray[np.float32]
) -> list[Detection]:
    """Merge overlapping candidates: each face is the score-weighted mean of the candidates that
    overlap its best one by more than SUPPRESSION_IOU, and keeps the best one's score."""
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    faces = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (_iou(boxes[i], boxes) > SUPPRESSION_IOU)
        group[i] = True
        remaining &= ~group
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(axis=0) / weights.sum()
        kps = (points[group] * weights[:, :, None]).sum(axis=0) / weights.sum()
        faces.append(
            Detection(
                box=Box(float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])),
                keypoints=kps.astype(np.float32),
                score=float(scores[i]),
            )
        )
    return faces


class FaceDetector:
    """Finds candidate faces, best first: short range, then full range where short range finds none."""

    def __init__(self) -> None:
        # Loading fails here, at start-up, if a model file is missing or altered.
        self._short = _Runner(SHORT)
        self._full = _Runner(FULL)

    def detect(self, rgb: NDArray[np.uint8]) -> list[Detection]:
        """Candidate faces in an RGB image, highest score first, in its pixels."""
        faces = self._short.detect(rgb)
        if not faces:
            faces = self._full.detect(rgb)
        return faces
