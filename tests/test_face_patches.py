"""Fixed-scale skin patches cut from real portraits: the scale holds whatever the photo's size, a photo
below a concern's scale is refused, and eyes, lashes and brows stay out of the zones' skin."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from orchestrator.face.patches import (
    NEEDED_SCALES,
    WRINKLE_ZONES,
    ZONES,
    FaceFrame,
    PatchCutter,
    PatchUnavailable,
    zone_outline,
)
from orchestrator.face.regions import LEFT_EYE, RIGHT_EYE
from orchestrator.face.scale import ScaleReader
from orchestrator.face.stage import FaceGeometry, Geometry

PORTRAIT = "congress_C000984.jpg"  # 450x550, about 1.9 px/mm
LARGE = "sn_woman_portrait.jpg"  # about 7 px/mm


@pytest.fixture(scope="module")
def geometry() -> FaceGeometry:
    return FaceGeometry(scale=ScaleReader())


def _rgb(path: Path, factor: float = 1.0) -> NDArray[np.uint8]:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    if factor != 1.0:
        bgr = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[..., ::-1])


def _analyse(geometry: FaceGeometry, rgb: NDArray[np.uint8]) -> Geometry:
    found = geometry.analyse(rgb)
    assert found.scale is not None and found.points is not None
    return found


def test_every_zone_is_cut_from_a_full_size_portrait(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    found = _analyse(geometry, rgb)
    for zone in ZONES:
        patch = PatchCutter().cut(rgb, found.points, found.scale, zone, 1.2)
        assert patch.skin.shape == patch.rgb.shape[:2]
        assert patch.skin.sum() > 30, zone
        assert not (patch.skin & ~patch.zone_mask).any()


def test_patch_scale_does_not_follow_the_photo(faces_dir: Path, geometry: FaceGeometry) -> None:
    full = _rgb(faces_dir / PORTRAIT)
    small = _rgb(faces_dir / PORTRAIT, 0.75)
    cutter = PatchCutter()
    for zone in ("forehead", "right_cheek", "left_nasolabial"):
        a = cutter.cut(full, _analyse(geometry, full).points, _analyse(geometry, full).scale, zone, 1.2)
        found = _analyse(geometry, small)
        b = cutter.cut(small, found.points, found.scale, zone, 1.2)
        # Same physical extent: the patch side in pixels within 5%.
        assert abs(a.rgb.shape[0] - b.rgb.shape[0]) <= 0.05 * a.rgb.shape[0], zone
        side = min(a.rgb.shape[0], b.rgb.shape[0])
        grey_a = a.rgb[:side, :side].mean(axis=2).ravel()
        grey_b = b.rgb[:side, :side].mean(axis=2).ravel()
        assert np.corrcoef(grey_a, grey_b)[0, 1] > 0.8, zone


def test_a_photo_below_the_needed_scale_is_refused_not_enlarged(
    faces_dir: Path, geometry: FaceGeometry
) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    found = _analyse(geometry, rgb)
    assert found.scale is not None
    assert found.scale.px_per_mm < NEEDED_SCALES["pores"].px_per_mm
    with pytest.raises(PatchUnavailable) as refused:
        PatchCutter().cut(rgb, found.points, found.scale, "right_cheek", NEEDED_SCALES["pores"].px_per_mm)
    assert refused.value.reason == "photo_too_small"
    with pytest.raises(PatchUnavailable) as unscaled:
        PatchCutter().cut(rgb, None, None, "right_cheek", 1.0)
    assert unscaled.value.reason == "no_scale"


def test_a_large_photo_is_read_at_its_detail(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / LARGE)
    found = _analyse(geometry, rgb)
    scale = NEEDED_SCALES["pores"].px_per_mm
    patch = PatchCutter().cut(rgb, found.points, found.scale, "left_cheek", min(scale, found.scale.px_per_mm))  # type: ignore[union-attr]
    assert patch.rgb.shape[0] > 200


@pytest.mark.parametrize("zone", WRINKLE_ZONES)
def test_eyes_lashes_and_brows_stay_out_of_wrinkle_zones(
    faces_dir: Path, geometry: FaceGeometry, zone: str
) -> None:
    rgb = _rgb(faces_dir / "congress_L000174.jpg")  # glasses
    found = _analyse(geometry, rgb)
    assert found.points is not None and found.scale is not None
    frame = FaceFrame.of(found.points, found.scale)
    outline = zone_outline(frame, zone)
    for eye in (RIGHT_EYE, LEFT_EYE):
        eye_mm = frame.at(eye)
        # No zone polygon reaches within 2 mm of an eye outline's points.
        inside = [
            cv2.pointPolygonTest(outline.astype(np.float32), (float(x), float(y)), True) for x, y in eye_mm
        ]
        if zone.endswith("nasolabial"):
            continue  # a band, not a polygon
        assert max(inside) < -2.0, zone
