"""Concern measures on fixed-scale patches of real portraits, checked by what a change to the photo must
do: lines drawn in one wrinkle zone raise that zone only, a blur lowers texture, highlights raise
shine, brown spots raise dark spots, a darkened under-eye raises dark circles."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from numpy.typing import NDArray

from export.concerns import measures
from orchestrator.face.patches import (
    NEEDED_SCALES,
    WRINKLE_ZONES,
    FaceFrame,
    Patch,
    PatchCutter,
    zone_outline,
)
from orchestrator.face.scale import ScaleReader
from orchestrator.face.stage import FaceGeometry, Geometry

PORTRAIT = "congress_C000984.jpg"  # about 1.9 px/mm
LARGE = "sn_woman_portrait.jpg"  # about 7 px/mm


@pytest.fixture(scope="module")
def geometry() -> FaceGeometry:
    return FaceGeometry(scale=ScaleReader())


def _rgb(path: Path) -> NDArray[np.uint8]:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[..., ::-1])


def _found(geometry: FaceGeometry, rgb: NDArray[np.uint8]) -> Geometry:
    found = geometry.analyse(rgb)
    assert found.scale is not None and found.points is not None
    return found


def _cut(found: Geometry, rgb: NDArray[np.uint8], zone: str, px_per_mm: float) -> Patch:
    return PatchCutter().cut(rgb, found.points, found.scale, zone, px_per_mm)


def _tensors(patch: Patch) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.constant(patch.rgb.astype(np.float32)), tf.constant(patch.skin.astype(np.float32))


def _zone_in_photo(found: Geometry, zone: str) -> NDArray[np.float64]:
    """A zone's outline in photo pixels."""
    assert found.points is not None and found.scale is not None
    frame = FaceFrame.of(found.points, found.scale)
    outline = zone_outline(frame, zone)
    inverse = cv2.invertAffineTransform(frame.matrix)
    return np.asarray(outline @ inverse[:, :2].T + inverse[:, 2])


def _wrinkles(found: Geometry, rgb: NDArray[np.uint8]) -> dict[str, float]:
    scale = NEEDED_SCALES["wrinkles"].px_per_mm
    return {
        zone: float(measures.wrinkle_responses(*_tensors(_cut(found, rgb, zone, scale)), scale)["across1.2"])
        for zone in WRINKLE_ZONES
    }


def test_lines_in_the_crows_feet_raise_wrinkles_there_and_nowhere_else(
    faces_dir: Path, geometry: FaceGeometry
) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    found = _found(geometry, rgb)
    before = _wrinkles(found, rgb)
    lined = rgb.copy()
    outline = _zone_in_photo(found, "right_crows_feet")
    (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
    px = found.scale.px_per_mm  # type: ignore[union-attr]
    # Crow's feet: dark lines about 1 mm wide, fanning out from the eye corner.
    for step in range(4):
        y = y0 + (y1 - y0) * (0.2 + 0.2 * step)
        start = (round(x1 - 1.0 * px), round(y))
        end = (round(x0 + 1.0 * px), round(y + (step - 1.5) * 3.0 * px))
        colour = tuple(int(c) for c in (rgb[round(y), round((x0 + x1) / 2)] * 0.6))
        cv2.line(lined, start, end, colour, max(1, round(1.0 * px)), cv2.LINE_AA)
    after = _wrinkles(found, lined)
    assert after["right_crows_feet"] > before["right_crows_feet"] * 1.3
    for zone in WRINKLE_ZONES:
        if zone != "right_crows_feet":
            assert after[zone] == pytest.approx(before[zone], rel=0.02), zone


def test_blur_lowers_texture(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / LARGE)
    found = _found(geometry, rgb)
    scale = NEEDED_SCALES["texture"].px_per_mm
    sharp = measures.texture_roughness(*_tensors(_cut(found, rgb, "left_cheek", scale)), scale)
    blurred_rgb = np.asarray(cv2.GaussianBlur(rgb, (0, 0), 3.0), dtype=np.uint8)
    blurred = measures.texture_roughness(*_tensors(_cut(found, blurred_rgb, "left_cheek", scale)), scale)
    assert float(blurred) < 0.7 * float(sharp)


def _paint(
    rgb: NDArray[np.uint8], found: Geometry, zone: str, colour: tuple[int, int, int], count: int
) -> NDArray[np.uint8]:
    """Small discs (about 2.5 mm across) of `colour` spread over a zone's middle."""
    painted = rgb.copy()
    outline = _zone_in_photo(found, zone)
    centre = outline.mean(axis=0)
    span = outline.max(axis=0) - outline.min(axis=0)
    px = found.scale.px_per_mm  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    for _ in range(count):
        x, y = centre + (rng.random(2) - 0.5) * span * 0.4
        cv2.circle(painted, (round(x), round(y)), max(1, round(1.25 * px)), colour, -1, cv2.LINE_AA)
    return painted


def test_highlights_raise_shine(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    found = _found(geometry, rgb)
    scale = NEEDED_SCALES["oiliness"].px_per_mm
    before, _ = measures.shine_pixels(*_tensors(_cut(found, rgb, "nose", scale)))
    shiny = _paint(rgb, found, "nose", (250, 245, 240), 6)
    after, _ = measures.shine_pixels(*_tensors(_cut(found, shiny, "nose", scale)))
    assert float(after) > float(before) + 5


def test_brown_spots_raise_dark_spots(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / "congress_L000174.jpg")
    found = _found(geometry, rgb)
    scale = NEEDED_SCALES["dark_spots"].px_per_mm
    before, _ = measures.dark_spot_pixels(*_tensors(_cut(found, rgb, "right_cheek", scale)), scale)
    centre = _zone_in_photo(found, "right_cheek").mean(axis=0)
    skin = rgb[round(centre[1]), round(centre[0])].astype(np.float64)
    brown = tuple(int(c) for c in skin * np.array([0.7, 0.62, 0.55]))
    spotted = _paint(rgb, found, "right_cheek", brown, 5)  # type: ignore[arg-type]
    after, _ = measures.dark_spot_pixels(*_tensors(_cut(found, spotted, "right_cheek", scale)), scale)
    assert float(after) > float(before) + 3


def test_darker_under_eye_raises_dark_circles(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    found = _found(geometry, rgb)
    scale = NEEDED_SCALES["dark_circles"].px_per_mm

    def circles(photo: NDArray[np.uint8]) -> float:
        eye = measures.median_lightness(*_tensors(_cut(found, photo, "right_under_eye", scale)))
        cheek = measures.median_lightness(*_tensors(_cut(found, photo, "right_cheek", scale)))
        return float(cheek - eye)

    darker = rgb.copy()
    mask = np.zeros(rgb.shape[:2], dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(_zone_in_photo(found, "right_under_eye")).astype(np.int32)], 1)
    darker[mask > 0] = (darker[mask > 0] * 0.8).astype(np.uint8)
    assert circles(darker) > circles(rgb) + 3
