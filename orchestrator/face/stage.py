"""The face stage as one step: find the face, take its landmarks and pose, decide the view, align it and
label its regions; or, where there is no whole face, take the photo as a profile or a skin close-up.

Views, in the order they are tried:
* frontal and three_quarter: a detection the face mesh confirms; regions from the 468 landmarks.
* profile: a confirmed face turned past PROFILE_YAW_DEG, or a confident detection the mesh does not
  confirm (the mesh holds three-quarter views, not profiles). Without a mesh the visible cheek is
  placed from the detector's six keypoints; everything else on that side is other skin.
* closeup: no face, but most of the photo is skin (a dermatology close-up of a cheek or a jaw):
  analysed as one skin region.
Profile and close-up candidates must also pass the scene check (scene.py): a pet or an object that
happens to be skin-coloured is refused, as a photo with neither a face nor skin is.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.errors import NoFaceFound
from orchestrator.face.alignment import FACE_HEIGHT_SHARE, Alignment, align_face
from orchestrator.face.detection import Box, Detection, FaceDetector
from orchestrator.face.landmarks import FaceMesh, Mesh
from orchestrator.face.pose import Pose, estimate_pose
from orchestrator.face.regions import RegionMask, build_mask, close_up_mask, keypoint_mask, to_lab
from orchestrator.face.scale import PhysicalScale, ScaleReader
from orchestrator.face.scene import SceneCheck
from orchestrator.notices import VIEW_TABLE
from serving import contract

logger = logging.getLogger(__name__)

VIEWS: tuple[str, ...] = tuple(VIEW_TABLE)
# What an app may ask for: any view the service finds, only a face, or a skin close-up.
VIEW_REQUESTS: tuple[str, ...] = ("auto", "face", "closeup")
# Yaw bounds of the views, degrees. Most ACNE04 three-quarter photos sit at 30-50.
FRONTAL_YAW_DEG = 20.0
PROFILE_YAW_DEG = 60.0
# At most this many candidate faces are checked with the mesh (2-3 ms each).
MAX_CANDIDATES = 4
# A detection the mesh does not confirm is taken as a profile only above this detector score. On
# ACNE04 train and valid, unconfirmed true profiles score 0.5-0.95; the one non-face candidate among
# the photos in data/ (a pug) scores 0.55.
PROFILE_MIN_SCORE = 0.6
# Skin shares (of the photo for a close-up, of the face's frame for a profile) a candidate needs. On
# ACNE04 train and valid close-ups without a detected face, the photo's skin share is 0.46 or more in
# 95 of 100; landscapes, rocks, coins and text stay below 0.3.
CLOSEUP_MIN_SKIN = 0.45
PROFILE_MIN_SKIN = 0.3
# A close-up's skin is smooth at the finest scale: the 90th percentile of its L* gradient (Sobel after
# a sigma-1 Gaussian, L* units per pixel of the fitted frame) is 1.0-3.2 on 95 of 100 ACNE04 train
# and valid close-ups, 4.1 at most; dry grass, wooden walls, fur and a cup of coffee read 3.7-5.9.
CLOSEUP_MAX_TEXTURE = 3.5
# For a profile, the detector's eye-to-mouth distance over the forehead-to-chin distance of faces the
# mesh confirms (median over ACNE04 train three-quarter views), to place the profile at the same scale.
EYES_TO_MOUTH_PER_FACE_HEIGHT = 0.36


@dataclass(frozen=True)
class Geometry:
    """One photo's face stage: the view taken, the aligned image and its region mask."""

    view: str
    faces_detected: int
    face: NDArray[np.uint8]  # the aligned image, contract.FACE_SIZE_PX square, RGB
    mask: RegionMask
    alignment: Alignment
    box: Box  # the face (or close-up) in the decoded photo's pixels
    confidence: float
    face_width_px: float  # in the decoded photo's pixels
    pose: Pose | None = None
    # Photo pixels per millimetre on the face (frontal and three-quarter views; None where no mesh is
    # read), and the mesh's 468 landmarks in the decoded photo's pixels [468, 3].
    scale: PhysicalScale | None = None
    points: NDArray[np.float32] | None = None


class FaceGeometry:
    """Finds the face in a photo and prepares the model's input; raises NoFaceFound."""

    def __init__(
        self,
        detector: FaceDetector | None = None,
        mesh: FaceMesh | None = None,
        scene: SceneCheck | None = None,
        scale: ScaleReader | None = None,
    ) -> None:
        self.detector = detector or FaceDetector()
        self.mesh = mesh or FaceMesh()
        self.scene = scene
        # The physical scale (the iris model, about 6.6 ms of CPU per face) is read where it is asked for:
        # the service and export's concern measures do; the tests of the other parts need not.
        self.scale = scale

    def analyse(self, rgb: NDArray[np.uint8], request: str = "auto") -> Geometry:
        """The face stage for an RGB photo; `request` is one of VIEW_REQUESTS. Raises NoFaceFound."""
        if request not in VIEW_REQUESTS:
            raise ValueError(f"unknown view request {request!r}")
        if request != "closeup":
            detections = self.detector.detect(rgb)
            confirmed: list[tuple[Detection, Mesh]] = []
            for detection in detections[:MAX_CANDIDATES]:
                mesh = self.mesh.landmarks(rgb, detection)
                if mesh.confirmed:
                    confirmed.append((detection, mesh))
            if confirmed:
                confirmed.sort(key=lambda pair: _face_width(pair[1].points), reverse=True)
                detection, mesh = confirmed[0]
                return self._mesh_view(rgb, detection, mesh, len(confirmed))
            profile = self._profile_view(rgb, detections)
            if profile is not None:
                return profile
            if request == "face":
                raise NoFaceFound()
        closeup = self._closeup_view(rgb)
        if closeup is None:
            raise NoFaceFound()
        return closeup

    def _mesh_view(self, rgb: NDArray[np.uint8], detection: Detection, mesh: Mesh, count: int) -> Geometry:
        pose = estimate_pose(mesh.points)
        alignment = align_face(mesh.points)
        face, inside = alignment.warp(rgb)
        mask = build_mask(face, inside, mesh.points, alignment, pose.yaw_deg)
        yaw = abs(pose.yaw_deg)
        view = "frontal" if yaw < FRONTAL_YAW_DEG else "three_quarter" if yaw < PROFILE_YAW_DEG else "profile"
        outline = mesh.points[:, :2]
        low, high = outline.min(axis=0), outline.max(axis=0)
        box = Box(float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1]))
        return Geometry(
            view=view,
            faces_detected=count,
            face=face,
            mask=mask,
            alignment=alignment,
            box=box,
            confidence=round(min(detection.score, mesh.flag), 3),
            face_width_px=_face_width(mesh.points),
            pose=pose,
            scale=self.scale.read(rgb, mesh.points) if self.scale is not None else None,
            points=mesh.points,
        )

    def _profile_view(self, rgb: NDArray[np.uint8], detections: list[Detection]) -> Geometry | None:
        candidates = [d for d in detections if d.score >= PROFILE_MIN_SCORE]
        if not candidates:
            return None
        detection = candidates[0]
        alignment = keypoint_alignment(detection)
        face, inside = alignment.warp(rgb)
        mask = keypoint_mask(face, inside, detection, alignment)
        share = sum(mask.pixels.values()) / float(face.shape[0] * face.shape[1])
        if share < PROFILE_MIN_SKIN or not self._scene_allows(face):
            return None
        return Geometry(
            view="profile",
            faces_detected=1,
            face=face,
            mask=mask,
            alignment=alignment,
            box=detection.box,
            confidence=round(detection.score, 3),
            face_width_px=detection.box.width,
        )

    def _closeup_view(self, rgb: NDArray[np.uint8]) -> Geometry | None:
        alignment = fit_alignment(rgb.shape[1], rgb.shape[0])
        face, inside = alignment.warp(rgb)
        mask = close_up_mask(face, inside)
        share = sum(mask.pixels.values()) / max(1.0, float(inside.sum()))
        if share < CLOSEUP_MIN_SKIN or fine_texture(face, mask.labels > 0) > CLOSEUP_MAX_TEXTURE:
            return None
        if not self._scene_allows(face):
            return None
        height, width = rgb.shape[:2]
        return Geometry(
            view="closeup",
            faces_detected=0,
            face=face,
            mask=mask,
            alignment=alignment,
            box=Box(0.0, 0.0, float(width), float(height)),
            confidence=round(share, 3),
            face_width_px=float(max(width, height)),
        )

    def _scene_allows(self, face: NDArray[np.uint8]) -> bool:
        return self.scene is None or self.scene.allows(face)


def fine_texture(rgb: NDArray[np.uint8], where: NDArray[np.bool_]) -> float:
    """90th percentile, over `where`, of the L* gradient magnitude after a sigma-1 Gaussian."""
    lightness = to_lab(rgb)[..., 0]
    smooth = cv2.GaussianBlur(lightness, (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0) / 8.0
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1) / 8.0
    magnitude = np.hypot(gx, gy)[where]
    return float(np.percentile(magnitude, 90)) if magnitude.size else float("inf")


def _face_width(points: NDArray[np.float32]) -> float:
    """The face's width across the landmarks, photo pixels."""
    return float(points[:, 0].max() - points[:, 0].min())


def keypoint_alignment(detection: Detection, size: int = contract.FACE_SIZE_PX) -> Alignment:
    """Alignment of a face the mesh cannot read, from the detector's keypoints: levelled so the line
    from the eyes to the mouth is vertical, at the scale a confirmed face of that size would take."""
    eyes = (detection.keypoint("right_eye") + detection.keypoint("left_eye")) / 2.0
    mouth = detection.keypoint("mouth")
    down = mouth.astype(np.float64) - eyes
    span = float(np.hypot(down[0], down[1]))
    if span < 0.1 * detection.box.width:
        # Keypoints collapsed onto each other: keep the photo upright and size from the box.
        angle, span = 0.0, 0.3 * detection.box.width
    else:
        angle = math.atan2(down[0], down[1])  # how far "down the face" leans from the photo's down
    scale = FACE_HEIGHT_SHARE * size * EYES_TO_MOUTH_PER_FACE_HEIGHT / span
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    rotation = np.array([[cos, -sin], [sin, cos]])
    box = detection.box
    centre = np.array([box.x + box.width / 2.0, box.y + box.height / 2.0])
    offset = np.array([size / 2.0, size / 2.0]) - rotation @ centre
    return Alignment(matrix=np.concatenate([rotation, offset[:, None]], axis=1), size=size)


def fit_alignment(width: int, height: int, size: int = contract.FACE_SIZE_PX) -> Alignment:
    """The whole photo fitted into the frame, upright, centred, aspect ratio kept."""
    scale = size / max(width, height)
    offset = np.array([(size - width * scale) / 2.0, (size - height * scale) / 2.0])
    return Alignment(matrix=np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]]), size=size)
