"""Photo quality and head pose on real photos: blur, exposure, size, tilt and turn move the right way."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.decode.images import decode_image
from orchestrator.face.detection import FaceDetector
from orchestrator.face.landmarks import FaceMesh
from orchestrator.face.pose import estimate_pose
from orchestrator.face.quality import measure_quality
from orchestrator.face.stage import FaceGeometry, Geometry

PORTRAIT = "congress_C001091.jpg"


def _rgb(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), max_pixels=10**8, long_side_px=2000).rgb


@functools.cache
def _geometry() -> FaceGeometry:
    return FaceGeometry()


def _analyse(rgb: np.ndarray) -> Geometry:
    return _geometry().analyse(np.ascontiguousarray(rgb))


def test_sharp_portrait_has_no_warnings(faces_dir: Path) -> None:
    quality = measure_quality(_analyse(_rgb(faces_dir / PORTRAIT)), 300)
    assert quality.warnings == []
    assert quality.tilt_deg is not None and abs(quality.tilt_deg) < 10


def test_blur_lowers_sharpness_and_warns(faces_dir: Path) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    sharp = measure_quality(_analyse(rgb), 300)
    blurred = measure_quality(_analyse(cv2.GaussianBlur(rgb, (0, 0), 4)), 300)
    assert blurred.sharpness < sharp.sharpness / 4
    assert "BLURRY" in blurred.warnings


def test_exposure_warnings(faces_dir: Path) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    geometry = _analyse(rgb)
    dark, _ = geometry.alignment.warp((rgb * 0.15).astype(np.uint8))
    bright, _ = geometry.alignment.warp(np.clip(rgb.astype(int) * 3, 0, 255).astype(np.uint8))
    # The same face stage, other exposures: the warnings come from the pixels alone.
    for image, warning in ((dark, "UNDEREXPOSED"), (bright, "OVEREXPOSED")):
        changed = Geometry(**{**geometry.__dict__, "face": image})
        assert warning in measure_quality(changed, 300).warnings


@pytest.mark.parametrize("name", ["congress_S001185.jpg", "congress_M001160.jpg", "congress_C000984.jpg"])
def test_dark_skin_is_not_called_underexposed(faces_dir: Path, name: str) -> None:
    assert "UNDEREXPOSED" not in measure_quality(_analyse(_rgb(faces_dir / name)), 300).warnings


def test_rotated_head_reports_tilt(faces_dir: Path) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    height, width = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 25, 1.0)
    rotated = cv2.warpAffine(rgb, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    quality = measure_quality(_analyse(rotated), 300)
    # OpenCV's positive angle turns the photo anticlockwise: the head now leans anticlockwise.
    assert quality.tilt_deg is not None and quality.tilt_deg == pytest.approx(-25, abs=4)
    assert "HEAD_TILTED" in quality.warnings


def test_small_face_warns(faces_dir: Path) -> None:
    assert "FACE_SMALL" in measure_quality(_analyse(_rgb(faces_dir / PORTRAIT)), 120).warnings


def test_yaw_follows_the_way_the_head_turns(faces_dir: Path) -> None:
    rgb = _rgb(faces_dir / "sn_sophia.jpg")  # turned towards the image's right
    detector, mesh = FaceDetector(), FaceMesh()
    pose = estimate_pose(mesh.landmarks(rgb, detector.detect(rgb)[0]).points)
    mirrored = np.ascontiguousarray(rgb[:, ::-1])
    mirrored_pose = estimate_pose(mesh.landmarks(mirrored, detector.detect(mirrored)[0]).points)
    assert pose.yaw_deg > 20
    assert mirrored_pose.yaw_deg == pytest.approx(-pose.yaw_deg, abs=5)
    assert mirrored_pose.roll_deg == pytest.approx(-pose.roll_deg, abs=3)
