"""Face alignment: the similarity transform that puts a face upright, at a fixed size, in the model's
square input, and the warps between that frame and the photo.

The face is levelled on the line through the outer eye corners and scaled so that the 3-D distance
from the top of the forehead (landmark 10) to the chin (152) is a fixed share of the frame: a 3-D
distance does not shrink when the head turns or nods, so a three-quarter view comes out at the same
scale as a frontal one and an EXIF-rotated copy at the same scale as the upright photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from serving import contract

FOREHEAD_TOP, CHIN = 10, 152
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
# Share of the frame's side taken by the forehead-top-to-chin distance. With 0.75 a frontal face is
# about 0.65 of the frame wide, which leaves room for the hairline above, the jaw and the top of the
# neck below, and the ears at the sides; ACNE04's close-ups come out at about 0.6 of their native
# 640 px, the scale their lesions were labelled at.
FACE_HEIGHT_SHARE = 0.75


@dataclass(frozen=True)
class Alignment:
    """A similarity transform from photo pixels to the aligned frame (contract.FACE_SIZE_PX square).

    Pixel coordinates are continuous: pixel (i, j) covers [i, i + 1) x [j, j + 1).
    """

    matrix: NDArray[np.float64]  # 2x3, photo -> frame
    size: int = contract.FACE_SIZE_PX

    @property
    def scale(self) -> float:
        """Frame pixels per photo pixel."""
        return float(math.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def inverse(self) -> NDArray[np.float64]:
        """2x3, frame -> photo."""
        return np.asarray(cv2.invertAffineTransform(self.matrix), dtype=np.float64)

    def to_frame(self, points: NDArray[np.floating]) -> NDArray[np.float64]:
        """Photo points [N, 2] -> frame points [N, 2]."""
        return np.asarray(points, dtype=np.float64)[:, :2] @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_photo(self, points: NDArray[np.floating]) -> NDArray[np.float64]:
        """Frame points [N, 2] -> photo points [N, 2]."""
        inverse = self.inverse
        return np.asarray(points, dtype=np.float64)[:, :2] @ inverse[:, :2].T + inverse[:, 2]

    def warp(self, rgb: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """The aligned face image [size, size, 3] and which of its pixels lie inside the photo."""
        sampling = _sampling_matrix(self.matrix)
        # Shrinking a large photo: pre-reduce by an integer factor with area averaging so the linear
        # warp does not alias (and touches fewer pixels).
        face = _warp_with_prefilter(rgb, sampling, self.size, self.scale)
        height, width = rgb.shape[:2]
        corners = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
        inside = np.zeros((self.size, self.size), dtype=np.uint8)
        cv2.fillConvexPoly(
            inside, fixed_point(self.to_frame(corners)), 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS
        )
        return face, inside.astype(bool)


FIXED_POINT_BITS = 4  # fixed-point bits for OpenCV polygon drawing: sub-pixel precise outlines


def fixed_point(points: NDArray[np.floating]) -> NDArray[np.int32]:
    """Continuous pixel coordinates -> OpenCV's fixed-point vertex coordinates (centre-at-integer)."""
    return np.round((np.asarray(points) - 0.5) * (1 << FIXED_POINT_BITS)).astype(np.int32)


def _sampling_matrix(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """The photo -> frame map in OpenCV's centre-at-integer convention, for warpAffine."""
    fixed = matrix.copy()
    fixed[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return fixed


def _warp_with_prefilter(
    rgb: NDArray[np.uint8], sampling: NDArray[np.float64], size: int, scale: float
) -> NDArray[np.uint8]:
    """warpAffine of the photo into the frame. When the frame shrinks the photo by more than half, the
    part of the photo the frame covers (not the whole photo) is first reduced by an integer factor with
    area averaging, so the linear warp does not alias."""
    reduce = int(1.0 / scale) if scale < 0.5 else 1
    source, matrix = rgb, sampling
    if reduce > 1:
        height, width = rgb.shape[:2]
        # The photo pixels the frame reads: its corners mapped back, with a margin of one step.
        inverse = cv2.invertAffineTransform(sampling)
        corners = (
            np.array([[0.0, 0.0, 1.0], [size, 0.0, 1.0], [size, size, 1.0], [0.0, size, 1.0]]) @ inverse.T
        )
        x0 = int(np.clip(np.floor(corners[:, 0].min()) - reduce, 0, width))
        y0 = int(np.clip(np.floor(corners[:, 1].min()) - reduce, 0, height))
        x1 = int(np.clip(np.ceil(corners[:, 0].max()) + reduce, 0, width))
        y1 = int(np.clip(np.ceil(corners[:, 1].max()) + reduce, 0, height))
        # Whole multiples of the factor: OpenCV's area resize is exact (and fastest) for integer factors.
        x1, y1 = x0 + (x1 - x0) // reduce * reduce, y0 + (y1 - y0) // reduce * reduce
        if x1 <= x0 or y1 <= y0:
            return np.zeros((size, size, 3), dtype=np.uint8)  # the frame lies outside the photo
        size_small = ((x1 - x0) // reduce, (y1 - y0) // reduce)
        source = np.asarray(cv2.resize(rgb[y0:y1, x0:x1], size_small, interpolation=cv2.INTER_AREA), np.uint8)
        # Pixel centres move: x = x0 + reduce * x_small + (reduce - 1) / 2.
        to_part = np.array([[reduce, 0.0, x0 + (reduce - 1) / 2.0], [0.0, reduce, y0 + (reduce - 1) / 2.0]])
        matrix = sampling[:, :2] @ to_part[:, :2]
        matrix = np.concatenate([matrix, (sampling[:, :2] @ to_part[:, 2] + sampling[:, 2])[:, None]], 1)
    warped = cv2.warpAffine(
        source, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return np.asarray(warped, dtype=np.uint8)


def align_face(points: NDArray[np.float32], size: int = contract.FACE_SIZE_PX) -> Alignment:
    """The alignment of a face from its mesh landmarks [468, 3] (photo pixels, z on x's scale)."""
    p = points.astype(np.float64)
    eye_line = p[LEFT_EYE_OUTER, :2] - p[RIGHT_EYE_OUTER, :2]
    roll = math.atan2(eye_line[1], eye_line[0])
    height = float(np.linalg.norm(p[CHIN] - p[FOREHEAD_TOP]))
    scale = FACE_HEIGHT_SHARE * size / max(height, 1e-6)
    cos, sin = math.cos(-roll) * scale, math.sin(-roll) * scale
    rotation = np.array([[cos, -sin], [sin, cos]])
    # Centred on the middle of forehead and chin vertically, and on the middle of the visible face
    # (the landmarks' extent across the levelled frame) horizontally.
    levelled = p[:, :2] @ rotation.T
    centre_y = (levelled[FOREHEAD_TOP, 1] + levelled[CHIN, 1]) / 2.0
    centre_x = (levelled[:, 0].min() + levelled[:, 0].max()) / 2.0
    offset = np.array([size / 2.0 - centre_x, size / 2.0 - centre_y])
    return Alignment(matrix=np.concatenate([rotation, offset[:, None]], axis=1), size=size)
