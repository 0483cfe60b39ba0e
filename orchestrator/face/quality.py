"""Photo quality of the analysed face: sharpness, exposure, size, tilt, and the warnings they raise.

Measured on the face box, at a fixed working width so the numbers do not depend on photo resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.detection import Box, CascadePool

WORK_WIDTH_PX = 256
# Variance of the Laplacian (Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy: a
# comparative study", ICPR 2000) of the face at 256 px wide. Measured on the portraits in data/faces:
# 25-480 (median 229) as shot; 4-18 after a Gaussian blur of sigma 1.5 px at that width.
BLUR_WARN_BELOW = 20.0
# Exposure from the face's grey levels (0-255). The mean alone would call dark skin underexposed (the
# darkest well-exposed face in data/faces averages 53), so a face is dark only when its mean is far
# below that or much of it is crushed to black; bright when much of it is clipped to white.
DARK_BELOW = 35.0
BRIGHT_ABOVE = 215.0
CRUSHED_ABOVE = 0.2
CLIPPED_ABOVE = 0.05
# Faces smaller than this still get a report, with a warning that detail is limited.
RECOMMENDED_FACE_PX = 200
TILT_WARN_DEG = 15.0


@dataclass(frozen=True)
class Quality:
    face_size_px: int
    sharpness: float
    brightness: float
    crushed_share: float
    clipped_share: float
    tilt_deg: float | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "face_size_px": self.face_size_px,
            "blur": {"sharpness": round(self.sharpness, 1), "threshold": BLUR_WARN_BELOW},
            "exposure": {
                "brightness": round(self.brightness, 1),
                "crushed_share": round(self.crushed_share, 4),
                "clipped_share": round(self.clipped_share, 4),
            },
            "tilt_deg": None if self.tilt_deg is None else round(self.tilt_deg, 1),
            "warnings": list(self.warnings),
        }


def _eye_cascade() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")  # type: ignore[attr-defined]


class QualityMeter:
    """Measures a face's photo quality; eye cascades for the tilt estimate come from a pool."""

    def __init__(self) -> None:
        self._eyes = CascadePool(_eye_cascade)

    def measure(
        self, rgb: NDArray[np.uint8], face: Box, face_size_px: int, extra_warnings: list[str]
    ) -> Quality:
        """Measure the face in `rgb`; `face_size_px` is its width in the original photo."""
        patch = rgb[face.y : face.y + face.height, face.x : face.x + face.width]
        face_grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
        scale = WORK_WIDTH_PX / max(1, face_grey.shape[1])
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(face_grey, None, fx=scale, fy=scale, interpolation=interpolation)
        grey: NDArray[np.uint8] = np.asarray(resized, dtype=np.uint8)
        sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
        brightness = float(grey.mean())
        crushed = float(np.mean(grey <= 5))
        clipped = float(np.mean(grey >= 250))
        tilt = self._tilt(grey)
        warnings = list(extra_warnings)
        if face_size_px < RECOMMENDED_FACE_PX:
            warnings.append("FACE_SMALL")
        if sharpness < BLUR_WARN_BELOW:
            warnings.append("BLURRY")
        if brightness < DARK_BELOW or crushed > CRUSHED_ABOVE:
            warnings.append("UNDEREXPOSED")
        elif brightness > BRIGHT_ABOVE or clipped > CLIPPED_ABOVE:
            warnings.append("OVEREXPOSED")
        if tilt is not None and abs(tilt) > TILT_WARN_DEG:
            warnings.append("HEAD_TILTED")
        return Quality(face_size_px, sharpness, brightness, crushed, clipped, tilt, warnings)

    def _tilt(self, grey: NDArray[np.uint8]) -> float | None:
        """Head roll from the two eyes in the upper part of the face, or None if not both are found."""
        # Eyes are searched on a half-size copy (the face 128 px wide, an eye about 25 px: just above
        # the cascade's 20 px window) and only near that size, which keeps the search to a few ms.
        half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        upper = half[: half.shape[0] * 3 // 5]
        low, high = 20, round(half.shape[1] * 0.35)
        with self._eyes.borrow() as cascade:
            eyes = cascade.detectMultiScale(
                upper, scaleFactor=1.1, minNeighbors=4, minSize=(low, low), maxSize=(high, high)
            )
        if len(eyes) < 2:
            return None
        # The two largest detections, ordered left to right in the image.
        largest = sorted(eyes, key=lambda e: e[2] * e[3], reverse=True)[:2]
        (x1, y1, w1, h1), (x2, y2, w2, h2) = sorted(largest, key=lambda e: e[0])
        dx = (x2 + w2 / 2) - (x1 + w1 / 2)
        dy = (y2 + h2 / 2) - (y1 + h1 / 2)
        if dx < upper.shape[1] * 0.2:  # both boxes on one eye
            return None
        return math.degrees(math.atan2(dy, dx))
