"""Head pose (yaw, pitch, roll) from the face mesh's 3-D landmarks.

The mesh gives x and y in pixels and z as depth on the same scale (larger away from the camera), so
the face's own axes can be read off it directly: across the face from symmetric landmark pairs (face
sides, outer eye corners, mouth corners), down the face from the forehead to the chin, and the
face's normal as their cross product. No 3-D face model is fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# (subject's right, subject's left) landmark pairs whose difference runs across the face.
ACROSS_PAIRS: tuple[tuple[int, int], ...] = ((234, 454), (33, 263), (61, 291), (127, 356))
# Forehead centre and chin (menton): their difference runs down the face.
FOREHEAD, CHIN = 10, 152


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees, all zero for a face looking straight at the camera, upright.

    yaw: positive when the face is turned towards the image's right (the subject's left cheek turns
    away from the camera). pitch: positive when the chin is raised. roll: positive when the head leans
    clockwise in the image (the line from the subject's right eye to the left eye slopes down).
    """

    yaw_deg: float
    pitch_deg: float
    roll_deg: float

    def as_dict(self) -> dict[str, float]:
        return {
            "yaw_deg": round(self.yaw_deg, 1),
            "pitch_deg": round(self.pitch_deg, 1),
            "roll_deg": round(self.roll_deg, 1),
        }


def _unit(vector: NDArray[np.float64]) -> NDArray[np.float64]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def face_axes(points: NDArray[np.float32]) -> NDArray[np.float64]:
    """The face's orthonormal axes as the columns of a 3x3 matrix: across (towards the subject's
    left), down (towards the chin), and into the face (away from the camera for a frontal face)."""
    p = points.astype(np.float64)
    across = _unit(sum((_unit(p[left] - p[right]) for right, left in ACROSS_PAIRS), np.zeros(3)))
    down = p[CHIN] - p[FOREHEAD]
    down = _unit(down - float(down @ across) * across)
    into = np.cross(across, down)
    return np.stack([across, down, into], axis=1)


def estimate_pose(points: NDArray[np.float32]) -> Pose:
    """Yaw, pitch and roll of a face from its mesh landmarks [468, 3]."""
    axes = face_axes(points)
    across, normal = axes[:, 0], -axes[:, 2]  # the normal points out of the face, towards the camera
    yaw = math.degrees(math.atan2(normal[0], -normal[2]))
    pitch = math.degrees(math.atan2(-normal[1], math.hypot(normal[0], normal[2])))
    roll = math.degrees(math.atan2(across[1], across[0]))
    return Pose(yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll)
