"""A face's physical scale: how many of the decoded photo's pixels make one millimetre on the face.

Read from the irises with MediaPipe's iris landmark model (Ablavatski et al. 2020, "Real-time Pupil
Tracking from Monocular Video for Digital Puppetry", arXiv:2006.11341): the horizontal diameter of the
human iris is nearly the same in every adult, 11.7 +- 0.5 mm, the constant that paper's depth estimate
rests on. The model reads a 64-px square around one eye (the eye-corner span enlarged 2.3 times,
levelled on the corners; a left eye, so the subject's left eye is mirrored) and returns 71 eye-contour
and 5 iris points (centre, then the iris edge at its left, top, right and bottom) in input pixels.

Where neither iris can be read (closed eyes, dark glasses, an eye too small to resolve), the distance
between the eye centres stands in: the adult mean interpupillary distance is 63 mm (Dodgson 2004,
"Variation and extrema of human interpupillary distance", Proc. SPIE 5291, from the 1988 ANSURvey:
mean 63.4 mm, standard deviation 3.8 mm), so it is the coarser of the two rulers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.landmarks import Roi
from orchestrator.face.models import IRIS, NetPool, load_net

logger = logging.getLogger(__name__)

IRIS_DIAMETER_MM = 11.7
INTERPUPILLARY_MM = 63.0
IRIS_INPUT_PX = 64
EYE_ROI_SCALE = 2.3
_OUTPUTS = ["output_eyes_contours_and_brows", "output_iris"]  # [1, 213], [1, 15]
# Eye corners (outer, inner) of the subject's right eye and (inner, outer) of the left, in image order.
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)
# An iris reading is kept when its diameter is this share of the eye-corner span: the palpebral fissure
# is about 28-30 mm wide in adults, so an iris reads near 0.4 of it; far outside means the model saw no
# iris (a closed eye, a glasses rim, a reflection).
MIN_IRIS_SHARE, MAX_IRIS_SHARE = 0.25, 0.6
# Two iris readings further apart than this (ratio of diameters) disagree: the larger one is kept only
# if it also matches the pupil-distance ruler better; a turned head narrows the far eye first.
MAX_EYES_RATIO = 1.25
# An eye spanning fewer photo pixels than this between its corners cannot be read by the iris model
# (its 64-px input would enlarge it more than about 4 times).
MIN_EYE_SPAN_PX = 12.0
SOURCES: tuple[str, ...] = ("iris", "interpupillary")


@dataclass(frozen=True)
class PhysicalScale:
    """Photo pixels per millimetre on the face, and which ruler gave it."""

    px_per_mm: float
    source: str  # one of SOURCES
    iris_px: tuple[float | None, float | None]  # (subject's right, left) iris diameters, photo pixels


@dataclass(frozen=True)
class IrisReading:
    """One eye as the iris model reads it: iris centre and diameters, photo pixels."""

    centre: NDArray[np.float64]
    horizontal_px: float
    vertical_px: float


class ScaleReader:
    """Reads a face's pixels per millimetre from its irises, or from the distance between the eyes."""

    def __init__(self) -> None:
        # Loading fails here, at start-up, if the model file is missing or altered.
        self._pool = NetPool(lambda: load_net(IRIS))

    def read_iris(
        self, rgb: NDArray[np.uint8], points: NDArray[np.float32], corners: tuple[int, int]
    ) -> IrisReading:
        """The iris of the eye between mesh landmarks `corners` (in image order, left to right)."""
        first, second = points[corners[0], :2].astype(np.float64), points[corners[1], :2].astype(np.float64)
        span = float(np.linalg.norm(second - first))
        centre = (first + second) / 2.0
        angle = math.atan2(second[1] - first[1], second[0] - first[0])
        roi = Roi(cx=float(centre[0]), cy=float(centre[1]), side=span * EYE_ROI_SCALE, angle=angle)
        size = IRIS_INPUT_PX
        to_photo = roi.to_input(size)
        crop = roi.crop(rgb, size, cv2.BORDER_REPLICATE)
        mirrored = corners == LEFT_EYE_CORNERS
        if mirrored:
            crop = crop[:, ::-1]
        blob = (crop.astype(np.float32) * (1.0 / 255.0)).transpose(2, 0, 1)[None]
        with self._pool.borrow() as net:
            net.setInput(np.ascontiguousarray(blob))
            _, iris = net.forward(_OUTPUTS)
        local = iris.reshape(5, 3)[:, :2].astype(np.float64)
        if mirrored:
            local[:, 0] = size - local[:, 0]
        photo = local @ to_photo[:, :2].T + to_photo[:, 2]
        return IrisReading(
            centre=photo[0],
            horizontal_px=float(np.linalg.norm(photo[1] - photo[3])),
            vertical_px=float(np.linalg.norm(photo[2] - photo[4])),
        )

    def read(self, rgb: NDArray[np.uint8], points: NDArray[np.float32]) -> PhysicalScale:
        """The scale of the face whose mesh landmarks [468, 3] (photo pixels) are `points`."""
        pupils = interpupillary_scale(points)
        diameters: list[float | None] = []
        for corners in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS):
            span = float(np.linalg.norm(points[corners[0], :2] - points[corners[1], :2]))
            if span < MIN_EYE_SPAN_PX:
                diameters.append(None)
                continue
            reading = self.read_iris(rgb, points, corners)
            share = reading.horizontal_px / span
            diameters.append(reading.horizontal_px if MIN_IRIS_SHARE <= share <= MAX_IRIS_SHARE else None)
        found = [d for d in diameters if d is not None]
        iris_px = (diameters[0], diameters[1])
        if not found:
            return PhysicalScale(px_per_mm=pupils, source="interpupillary", iris_px=iris_px)
        if len(found) == 2 and max(found) / min(found) > MAX_EYES_RATIO:
            # The eyes disagree: keep the one nearer the pupil-distance ruler.
            found = [min(found, key=lambda d: abs(math.log(d / IRIS_DIAMETER_MM / pupils)))]
        return PhysicalScale(
            px_per_mm=float(np.mean(found)) / IRIS_DIAMETER_MM, source="iris", iris_px=iris_px
        )


def interpupillary_scale(points: NDArray[np.float32]) -> float:
    """Pixels per millimetre from the 3-D distance between the eye centres (the middles of each eye's
    corners) over the adult mean interpupillary distance; the depth keeps a turned head's scale."""
    right = points[list(RIGHT_EYE_CORNERS)].astype(np.float64).mean(axis=0)
    left = points[list(LEFT_EYE_CORNERS)].astype(np.float64).mean(axis=0)
    return float(np.linalg.norm(left - right)) / INTERPUPILLARY_MM
