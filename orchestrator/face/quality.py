"""Photo quality of the analysed face: sharpness, exposure, size, pose, and the warnings they raise.

Measured on the aligned face (a fixed scale, so the numbers do not depend on photo resolution): a face
photographed small is enlarged into the frame and reads as soft, which is what a user should hear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.pose import Pose
from orchestrator.face.stage import Geometry

# Variance of the Laplacian (Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy: a
# comparative study", ICPR 2000) over the middle of the aligned face (eyes, nose, mouth and cheeks).
# Measured on the 39 photos in data/faces: 20-492 (median 164) as shot; 3-10 after a Gaussian blur
# of sigma 2 px in the aligned frame.
BLUR_WARN_BELOW = 15.0
# Exposure from the skin's grey levels (0-255). The mean alone would call dark skin underexposed (the
# darkest well-exposed faces in data/faces average 59-73 over their skin), so a face is dark only when
# its mean is far below that or much of it is crushed to black; bright when much of it is clipped.
DARK_BELOW = 35.0
BRIGHT_ABOVE = 215.0
CRUSHED_ABOVE = 0.2
CLIPPED_ABOVE = 0.05
# Faces narrower than this (photo pixels) still get a report, with a warning that detail is limited.
RECOMMENDED_FACE_PX = 200
# Pose warnings, degrees: a tilt the user can fix by holding the phone level; a turn or a nod that
# hides part of the face (three-quarter views are expected from dermatology users: the regions that
# cannot be read are reported as not visible, and REGIONS_NOT_VISIBLE says so).
TILT_WARN_DEG = 15.0
PITCH_WARN_DEG = 25.0


@dataclass(frozen=True)
class Quality:
    face_size_px: int
    sharpness: float
    brightness: float
    crushed_share: float
    clipped_share: float
    tilt_deg: float | None
    pose: Pose | None = None
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
            "pose": None if self.pose is None else self.pose.as_dict(),
            "warnings": list(self.warnings),
        }


def sharpness(grey: NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of a grey image."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def measure_quality(geometry: Geometry, face_size_px: int) -> Quality:
    """Sharpness, exposure and pose warnings of the face stage's result; `face_size_px` is the face's
    width in the original photo."""
    grey = np.asarray(cv2.cvtColor(geometry.face, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    size = grey.shape[0]
    if geometry.view == "closeup":
        middle = grey
    else:
        low, high = round(size * 0.25), round(size * 0.75)
        middle = grey[low:high, low:high]
    skin = grey[geometry.mask.labels > 0]
    if skin.size == 0:
        skin = grey.ravel()
    brightness = float(skin.mean())
    crushed = float(np.mean(skin <= 5))
    clipped = float(np.mean(skin >= 250))
    sharp = sharpness(middle)
    pose = geometry.pose
    warnings = []
    if face_size_px < RECOMMENDED_FACE_PX and geometry.view != "closeup":
        warnings.append("FACE_SMALL")
    if sharp < BLUR_WARN_BELOW:
        warnings.append("BLURRY")
    if brightness < DARK_BELOW or crushed > CRUSHED_ABOVE:
        warnings.append("UNDEREXPOSED")
    elif brightness > BRIGHT_ABOVE or clipped > CLIPPED_ABOVE:
        warnings.append("OVEREXPOSED")
    if pose is not None and abs(pose.roll_deg) > TILT_WARN_DEG:
        warnings.append("HEAD_TILTED")
    if pose is not None and abs(pose.pitch_deg) > PITCH_WARN_DEG:
        warnings.append("HEAD_PITCHED")
    tilt = None if pose is None else pose.roll_deg
    return Quality(face_size_px, sharp, brightness, crushed, clipped, tilt, pose, warnings)
