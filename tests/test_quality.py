"""Photo quality: blur, exposure and tilt move the right way on real photos, and warn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.decode.images import decode_image
from orchestrator.face.detection import FaceDetector
from orchestrator.face.quality import QualityMeter


@pytest.fixture(scope="module")
def portrait(faces_dir: Path) -> tuple[np.ndarray, object]:
    rgb = decode_image(
        (faces_dir / "congress_C001091.jpg").read_bytes(), max_pixels=10**8, long_side_px=2000
    ).rgb
    return np.array(rgb), FaceDetector().detect(rgb)[0].box


def test_sharp_portrait_has_no_warnings(portrait: tuple[np.ndarray, object]) -> None:
    rgb, box = portrait
    quality = QualityMeter().measure(rgb, box, 300, [])  # type: ignore[arg-type]
    assert quality.warnings == []
    assert quality.tilt_deg is not None and abs(quality.tilt_deg) < 10


def test_blur_lowers_sharpness_and_warns(portrait: tuple[np.ndarray, object]) -> None:
    rgb, box = portrait
    meter = QualityMeter()
    sharp = meter.measure(rgb, box, 300, [])  # type: ignore[arg-type]
    blurred = meter.measure(cv2.GaussianBlur(rgb, (0, 0), 4), box, 300, [])  # type: ignore[arg-type]
    assert blurred.sharpness < sharp.sharpness / 4
    assert "BLURRY" in blurred.warnings


def test_exposure_warnings(portrait: tuple[np.ndarray, object]) -> None:
    rgb, box = portrait
    meter = QualityMeter()
    dark = meter.measure((rgb * 0.15).astype(np.uint8), box, 300, [])  # type: ignore[arg-type]
    bright = meter.measure(np.clip(rgb.astype(int) * 3, 0, 255).astype(np.uint8), box, 300, [])  # type: ignore[arg-type]
    assert "UNDEREXPOSED" in dark.warnings
    assert "OVEREXPOSED" in bright.warnings


def test_dark_skin_is_not_called_underexposed(faces_dir: Path) -> None:
    rgb = decode_image(
        (faces_dir / "congress_S001185.jpg").read_bytes(), max_pixels=10**8, long_side_px=2000
    ).rgb
    box = FaceDetector().detect(rgb)[0].box
    assert "UNDEREXPOSED" not in QualityMeter().measure(rgb, box, 300, []).warnings


def test_rotated_head_reports_tilt(portrait: tuple[np.ndarray, object]) -> None:
    rgb, box = portrait
    centre = (box.x + box.width / 2, box.y + box.height / 2)  # type: ignore[attr-defined]
    matrix = cv2.getRotationMatrix2D(centre, 20, 1.0)  # the eye cascade loses eyes past ~20 degrees
    rotated = cv2.warpAffine(rgb, matrix, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    quality = QualityMeter().measure(rotated, box, 300, [])  # type: ignore[arg-type]
    assert quality.tilt_deg is not None and abs(quality.tilt_deg) > 15
    assert "HEAD_TILTED" in quality.warnings


def test_small_face_warns(portrait: tuple[np.ndarray, object]) -> None:
    rgb, box = portrait
    assert "FACE_SMALL" in QualityMeter().measure(rgb, box, 120, []).warnings  # type: ignore[arg-type]
