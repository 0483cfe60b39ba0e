"""The physical scale read from the irises (and from the eye distance where no iris is read), on real
portraits: it follows the photo's size, the two eyes agree, and the two rulers agree on frontal faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from orchestrator.face.detection import FaceDetector
from orchestrator.face.landmarks import FaceMesh
from orchestrator.face.scale import (
    LEFT_EYE_CORNERS,
    RIGHT_EYE_CORNERS,
    PhysicalScale,
    ScaleReader,
    interpupillary_scale,
)
from orchestrator.face.stage import FaceGeometry

# The frontal studio portraits of data/faces (450x550, the face about 250 px wide).
PORTRAITS = ("congress_B001287.jpg", "congress_C000984.jpg", "congress_L000174.jpg", "congress_S001184.jpg")
# A portrait resized to 60% must read 0.6 x its px/mm within this relative tolerance. Measured on the
# 24 congress portraits of data/faces: 0.587-0.612.
RESIZE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def reader() -> ScaleReader:
    return ScaleReader()


@pytest.fixture(scope="module")
def finder() -> tuple[FaceDetector, FaceMesh]:
    return FaceDetector(), FaceMesh()


def _rgb(path: Path, factor: float = 1.0) -> NDArray[np.uint8]:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    if factor != 1.0:
        bgr = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[..., ::-1])


def _points(finder: tuple[FaceDetector, FaceMesh], rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    detector, mesh = finder
    detections = detector.detect(rgb)
    assert detections
    found = mesh.landmarks(rgb, detections[0])
    assert found.confirmed
    return found.points


def _scale(
    reader: ScaleReader, finder: tuple[FaceDetector, FaceMesh], rgb: NDArray[np.uint8]
) -> PhysicalScale:
    return reader.read(rgb, _points(finder, rgb))


@pytest.mark.parametrize("name", PORTRAITS)
def test_scale_follows_the_photo_size(
    faces_dir: Path, reader: ScaleReader, finder: tuple[FaceDetector, FaceMesh], name: str
) -> None:
    full = _scale(reader, finder, _rgb(faces_dir / name))
    smaller = _scale(reader, finder, _rgb(faces_dir / name, 0.6))
    assert full.source == smaller.source == "iris"
    assert smaller.px_per_mm / full.px_per_mm == pytest.approx(0.6, rel=RESIZE_TOLERANCE)


@pytest.mark.parametrize("name", PORTRAITS)
def test_eyes_and_rulers_agree_on_frontal_portraits(
    faces_dir: Path, reader: ScaleReader, finder: tuple[FaceDetector, FaceMesh], name: str
) -> None:
    rgb = _rgb(faces_dir / name)
    points = _points(finder, rgb)
    right, left = (
        reader.read_iris(rgb, points, corners) for corners in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS)
    )
    # The two irises within 10% of each other, and about where an iris should be: near the eye centre.
    assert max(right.horizontal_px, left.horizontal_px) / min(right.horizontal_px, left.horizontal_px) < 1.1
    for reading, corners in ((right, RIGHT_EYE_CORNERS), (left, LEFT_EYE_CORNERS)):
        eye_centre = points[list(corners), :2].mean(axis=0)
        span = float(np.linalg.norm(points[corners[0], :2] - points[corners[1], :2]))
        assert float(np.linalg.norm(reading.centre - eye_centre)) < 0.25 * span
    scale = reader.read(rgb, points)
    # Iris and pupil distance within 15% on a frontal adult face (their spreads: 11.7 +- 0.5 mm and
    # 63 +- 3.8 mm).
    assert scale.px_per_mm / interpupillary_scale(points) == pytest.approx(1.0, abs=0.15)


def test_an_eye_too_small_for_the_iris_model_falls_back_to_the_eye_distance(
    faces_dir: Path, reader: ScaleReader, finder: tuple[FaceDetector, FaceMesh]
) -> None:
    full = _scale(reader, finder, _rgb(faces_dir / PORTRAITS[0]))
    small = _rgb(faces_dir / PORTRAITS[0], 0.2)
    points = _points(finder, small)
    scale = reader.read(small, points)
    assert scale.source == "interpupillary"
    assert scale.iris_px == (None, None)
    assert scale.px_per_mm / full.px_per_mm == pytest.approx(0.2, rel=0.2)


def test_face_stage_carries_the_scale_and_landmarks(faces_dir: Path) -> None:
    geometry = FaceGeometry(scale=ScaleReader()).analyse(_rgb(faces_dir / PORTRAITS[1]))
    assert geometry.scale is not None and geometry.scale.source == "iris"
    assert geometry.points is not None and geometry.points.shape == (468, 3)
    # A face about 140 mm wide: the landmark width over px/mm lands within a plausible span.
    assert 110.0 < geometry.face_width_px / geometry.scale.px_per_mm < 170.0
