"""Face regions: where each region sits in a face box, and cutting them into the model's input batch.

Region geometry is a fixed fraction of the frontal Haar box (top near the mid-forehead, bottom near
the chin), set on the test portraits: the forehead sits low enough to miss most fringes, the cheeks
stop above the mouth corners. The Haar box's bottom edge moves with the smile, so the chin crop can
land on the lower lip or the top of the neck. "left" and "right" are the subject's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.detection import Box
from serving import contract

# (centre x, centre y, width, height) as fractions of the face box. The subject's left cheek is on
# the image's right in an unmirrored photo, hence x > 0.5.
REGION_LAYOUT: dict[str, tuple[float, float, float, float]] = {
    "forehead": (0.50, 0.15, 0.46, 0.14),
    "left_cheek": (0.75, 0.645, 0.19, 0.19),
    "right_cheek": (0.25, 0.645, 0.19, 0.19),
    "nose": (0.50, 0.585, 0.14, 0.19),
    "chin": (0.50, 0.955, 0.24, 0.09),
    "left_under_eye": (0.68, 0.515, 0.20, 0.08),
    "right_under_eye": (0.32, 0.515, 0.20, 0.08),
}
assert tuple(REGION_LAYOUT) == contract.REGION_NAMES, "regions must follow the contract's order"


@dataclass(frozen=True)
class RegionCrops:
    """The model input for one face and where each crop came from."""

    batch: NDArray[np.uint8]  # [len(REGION_NAMES), REGION_SIZE_PX, REGION_SIZE_PX, 3]
    boxes: tuple[Box, ...]  # each region's box in image pixels, clipped to the image
    coverage: tuple[float, ...]  # share of each intended region that lies inside the image


def region_box(face: Box, name: str) -> Box:
    """The unclipped box of one region of a face, in image pixels."""
    cx, cy, fw, fh = REGION_LAYOUT[name]
    width, height = fw * face.width, fh * face.height
    x = face.x + cx * face.width - width / 2
    y = face.y + cy * face.height - height / 2
    return Box(round(x), round(y), max(1, round(width)), max(1, round(height)))


def crop_regions(rgb: NDArray[np.uint8], face: Box) -> RegionCrops:
    """Cut every contract region of `face` from an RGB image and resize each to the model's size."""
    size = contract.REGION_SIZE_PX
    image_h, image_w = rgb.shape[:2]
    batch = np.zeros((len(contract.REGION_NAMES), size, size, 3), dtype=np.uint8)
    boxes: list[Box] = []
    coverage: list[float] = []
    for index, name in enumerate(contract.REGION_NAMES):
        want = region_box(face, name)
        x0, y0 = min(max(0, want.x), image_w), min(max(0, want.y), image_h)
        x1 = min(image_w, want.x + want.width)
        y1 = min(image_h, want.y + want.height)
        clipped = Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))
        boxes.append(clipped)
        coverage.append(clipped.area / want.area)
        if clipped.area == 0:
            continue  # left black: the model reports no skin there and post-scoring skips it
        patch = rgb[y0:y1, x0:x1]
        shrinking = patch.shape[0] > size or patch.shape[1] > size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        batch[index] = cv2.resize(patch, (size, size), interpolation=interpolation)
    return RegionCrops(batch=batch, boxes=tuple(boxes), coverage=tuple(coverage))


def to_image_point(box: Box, y_rel: float, x_rel: float) -> tuple[int, int]:
    """Map a point given relative to a region crop back to (x, y) image pixels."""
    return round(box.x + x_rel * box.width), round(box.y + y_rel * box.height)
