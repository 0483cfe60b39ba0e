"""Face landmarks: MediaPipe's face mesh (468 points in 3-D, and a face flag) on OpenCV DNN.

The mesh (Kartynnik et al. 2019, "Real-time Facial Surface Geometry from Monocular Video on Mobile
GPUs") reads a square crop around a face, rotated so the eyes are level: MediaPipe cuts it from the
detection box enlarged 1.5 times on its long side, turned by the angle of the line from the first eye
keypoint to the second. Its face flag (a logit) says whether the crop holds a face; above 0.5 it
confirms the detection. Points come back in photo pixels; z is depth on the same scale as x, smaller
towards the camera.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.detection import Detection
from orchestrator.face.models import FACE_MESH, NetPool, load_net

logger = logging.getLogger(__name__)

MESH_INPUT_PX = 192
POINTS = 468
ROI_SCALE = 1.5
# The mesh's face flag (sigmoid of its logit) must exceed this to confirm a face (MediaPipe's 0.5).
MIN_FACE_FLAG = 0.5
_OUTPUTS = ["conv2d_30", "conv2d_20"]  # face flag logit [1,1,1,1], landmarks [1,1404,1,1]


@dataclass(frozen=True)
class Mesh:
    """A face's 468 landmarks in photo pixels [468, 3] (x, y, z) and the mesh's face flag (0-1)."""

    points: NDArray[np.float32]
    flag: float

    @property
    def confirmed(self) -> bool:
        return self.flag > MIN_FACE_FLAG


@dataclass(frozen=True)
class Roi:
    """A rotated square in photo pixels: centre, side and angle (radians, x axis towards y)."""

    cx: float
    cy: float
    side: float
    angle: float

    def to_input(self, size: int) -> NDArray[np.float64]:
        """The 2x3 affine map from a `size`-pixel square input's pixel coordinates to photo pixels."""
        scale = self.side / size
        cos, sin = math.cos(self.angle) * scale, math.sin(self.angle) * scale
        half = size / 2.0
        return np.array(
            [
                [cos, -sin, self.cx - cos * half + sin * half],
                [sin, cos, self.cy - sin * half - cos * half],
            ]
        )

    def crop(self, rgb: NDArray[np.uint8], size: int, border: int) -> NDArray[np.uint8]:
        """The square, upright, resampled to `size` pixels from `rgb`; outside the photo `border`
        (an OpenCV border mode) fills it."""
        to_photo = self.to_input(size)
        # warpAffine samples pixel centres: output pixel (u, v) reads the photo at the map of
        # (u + 0.5, v + 0.5), minus half a pixel to go back to OpenCV's centre-at-integer convention.
        sampling = to_photo.copy()
        sampling[:, 2] += to_photo[:, :2] @ np.array([0.5, 0.5]) - 0.5
        crop = cv2.warpAffine(
            rgb, sampling, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border
        )
        return np.asarray(crop, dtype=np.uint8)


def detection_roi(detection: Detection) -> Roi:
    """MediaPipe's mesh crop for a detection: the box's centre, 1.5 x its long side, eyes level."""
    box = detection.box
    right_eye, left_eye = detection.keypoints[0], detection.keypoints[1]
    angle = math.atan2(float(left_eye[1] - right_eye[1]), float(left_eye[0] - right_eye[0]))
    return Roi(
        cx=box.x + box.width / 2.0,
        cy=box.y + box.height / 2.0,
        side=max(box.width, box.height) * ROI_SCALE,
        angle=angle,
    )


class FaceMesh:
    """Runs the face mesh on a rotated crop of a photo."""

    def __init__(self) -> None:
        # Loading fails here, at start-up, if the model file is missing or altered.
        self._pool = NetPool(lambda: load_net(FACE_MESH))

    def run(self, rgb: NDArray[np.uint8], roi: Roi) -> Mesh:
        """The landmarks and face flag of the face inside `roi` of an RGB photo."""
        size = MESH_INPUT_PX
        crop = roi.crop(rgb, size, cv2.BORDER_CONSTANT)
        blob = (crop.astype(np.float32) * (1.0 / 255.0)).transpose(2, 0, 1)[None]
        with self._pool.borrow() as net:
            net.setInput(np.ascontiguousarray(blob))
            flag_logit, raw = net.forward(_OUTPUTS)
        flag = 1.0 / (1.0 + math.exp(-float(np.clip(flag_logit.reshape(-1)[0], -50.0, 50.0))))
        local = raw.reshape(POINTS, 3).astype(np.float64)
        to_photo = roi.to_input(size)
        xy = local[:, :2] @ to_photo[:, :2].T + to_photo[:, 2]
        z = local[:, 2] * (roi.side / size)
        points = np.concatenate([xy, z[:, None]], axis=1).astype(np.float32)
        return Mesh(points=points, flag=flag)

    def landmarks(self, rgb: NDArray[np.uint8], detection: Detection) -> Mesh:
        """Landmarks of a detected face, refined by a second pass on a crop placed from the first
        pass's own points (as MediaPipe's tracking does), which centres profiles and tilted heads."""
        first = self.run(rgb, detection_roi(detection))
        if not first.confirmed:
            return first
        second = self.run(rgb, mesh_roi(first.points))
        return second if second.flag >= first.flag * 0.9 else first


# Landmarks at the outer corners of the eyes (subject's right, then left), used to level the crop.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


def mesh_roi(points: NDArray[np.float32]) -> Roi:
    """A mesh crop around landmarks: their box's centre, 1.5 x its long side, eye corners level."""
    right, left = points[RIGHT_EYE_OUTER], points[LEFT_EYE_OUTER]
    angle = math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))
    cos, sin = math.cos(-angle), math.sin(-angle)
    # The box is taken in the levelled frame, so a tilted head does not inflate it.
    xy = points[:, :2].astype(np.float64)
    centre = xy.mean(axis=0)
    rotated = (xy - centre) @ np.array([[cos, sin], [-sin, cos]])
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    mid = (low + high) / 2.0
    cos_b, sin_b = math.cos(angle), math.sin(angle)
    cx = centre[0] + mid[0] * cos_b - mid[1] * sin_b
    cy = centre[1] + mid[0] * sin_b + mid[1] * cos_b
    return Roi(cx=float(cx), cy=float(cy), side=float(max(high - low)) * ROI_SCALE, angle=angle)
