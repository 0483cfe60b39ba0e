"""Concern measures on the fixed-scale patch slots of real portraits, as the served model computes them
(the slots cut as the service cuts them, the model's own zone measures), checked by what a change to
the photo must do: lines drawn in one wrinkle zone raise that zone only, a blur lowers line strength,
highlights raise shine, brown spots raise dark spots, a darkened under-eye band raises dark circles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from numpy.typing import NDArray

from export.concerns import measures
from orchestrator.face.patches import WRINKLE_ZONES, FaceFrame, PatchCutter, cut_slots, zone_outline
from orchestrator.face.scale import ScaleReader
from orchestrator.face.stage import FaceGeometry, Geometry
from orchestrator.scoring.zones import Design, Zones, concern_values, served_zones, zone_key
from serving import contract

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


def _zones(found: Geometry, rgb: NDArray[np.uint8]) -> Zones:
    """Every zone's served measures ("zone@scale" -> measure -> value) of a photo."""
    slots = cut_slots(PatchCutter(), rgb, found.points, found.scale)
    out = measures.zone_measures(tf.constant(slots.rgb[None]), tf.constant(slots.skin[None]), "across1.2")
    zones, _ = served_zones({name: value.numpy()[0] for name, value in out.items()}, slots.unavailable)
    return zones


def _measure(zones: Zones, group: str, zone: str, name: str) -> float:
    return float(zones[zone_key(zone, contract.patch_group(group).px_per_mm)][name])


def _zone_in_photo(found: Geometry, zone: str) -> NDArray[np.float64]:
    """A zone's outline in photo pixels."""
    assert found.points is not None and found.scale is not None
    frame = FaceFrame.of(found.points, found.scale)
    outline = zone_outline(frame, zone)
    inverse = cv2.invertAffineTransform(frame.matrix)
    return np.asarray(outline @ inverse[:, :2].T + inverse[:, 2])


def _wrinkles(found: Geometry, rgb: NDArray[np.uint8]) -> dict[str, float]:
    """Line strength of every wrinkle zone the photo shows."""
    zones = _zones(found, rgb)
    scale = contract.patch_group("wrinkles").px_per_mm
    return {
        zone: _measure(zones, "wrinkles", zone, "lines")
        for zone in WRINKLE_ZONES
        if zone_key(zone, scale) in zones
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
    assert set(after) == set(before)
    for zone in before:
        if zone != "right_crows_feet":
            assert after[zone] == pytest.approx(before[zone], rel=0.02), zone


def test_blur_lowers_line_strength(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / LARGE)
    found = _found(geometry, rgb)
    px = found.scale.px_per_mm  # type: ignore[union-attr]
    blurred = np.asarray(cv2.GaussianBlur(rgb, (0, 0), 1.5 * px), dtype=np.uint8)
    sharp, soft = _wrinkles(found, rgb), _wrinkles(found, blurred)
    read = [zone for zone in ("forehead", "glabella", "right_crows_feet", "left_crows_feet") if zone in sharp]
    assert len(read) >= 2
    for zone in read:
        assert soft[zone] < sharp[zone], zone
    # The forehead's lines go; the brow's and the eye socket's broad relief survives a blur.
    assert soft["forehead"] < 0.7 * sharp["forehead"]


def _paint(
    rgb: NDArray[np.uint8], found: Geometry, zone: str, colour: tuple[int, int, int], count: int
) -> NDArray[np.uint8]:
    """Small discs (about 4 mm across) of `colour` spread over a zone's middle."""
    painted = rgb.copy()
    outline = _zone_in_photo(found, zone)
    centre = outline.mean(axis=0)
    span = outline.max(axis=0) - outline.min(axis=0)
    px = found.scale.px_per_mm  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    for _ in range(count):
        x, y = centre + (rng.random(2) - 0.5) * span * 0.4
        cv2.circle(painted, (round(x), round(y)), max(1, round(2.0 * px)), colour, -1, cv2.LINE_AA)
    return painted


def test_highlights_raise_shine(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    found = _found(geometry, rgb)
    before = _measure(_zones(found, rgb), "colour", "nose", "shine")
    shiny = _paint(rgb, found, "nose", (250, 245, 240), 6)
    assert _measure(_zones(found, shiny), "colour", "nose", "shine") > before + 5


def test_brown_spots_raise_dark_spots(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / "congress_L000174.jpg")
    found = _found(geometry, rgb)
    before = _measure(_zones(found, rgb), "dark_spots", "right_cheek", "spots")
    centre = _zone_in_photo(found, "right_cheek").mean(axis=0)
    skin = rgb[round(centre[1]), round(centre[0])].astype(np.float64)
    brown = tuple(int(c) for c in skin * np.array([0.7, 0.62, 0.55]))
    spotted = _paint(rgb, found, "right_cheek", brown, 5)  # type: ignore[arg-type]
    assert _measure(_zones(found, spotted), "dark_spots", "right_cheek", "spots") > before + 3


def test_darker_under_eye_band_raises_dark_circles(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / PORTRAIT)
    found = _found(geometry, rgb)
    design = Design("across1.2", ("forehead",), {"forehead": 0.0}, {"forehead": 1.0})

    def circles(photo: NDArray[np.uint8]) -> float:
        return concern_values(_zones(found, photo), {}, design)[0]["dark_circles"]

    darker = rgb.copy()
    mask = np.zeros(rgb.shape[:2], dtype=np.uint8)
    for side in ("right", "left"):
        cv2.fillPoly(mask, [np.round(_zone_in_photo(found, f"{side}_infraorbital")).astype(np.int32)], 1)
    darker[mask > 0] = (darker[mask > 0] * 0.8).astype(np.uint8)
    assert circles(darker) > circles(rgb) + 3


def test_each_slot_read_on_its_skin_box_gives_what_the_whole_square_gives(
    faces_dir: Path, geometry: FaceGeometry
) -> None:
    """The served measures crop each slot to its skin grown by the group's reach: no value read at a
    skin pixel may change against measuring the whole mirrored square."""
    batch = []
    for name in (PORTRAIT, "sn_city_portrait.jpg", LARGE):
        rgb = _rgb(faces_dir / name)
        found = _found(geometry, rgb)
        # The large portrait read as if at 1.6x its scale (above 8 px/mm): its pores slots are cut too.
        scale = found.scale
        if name == LARGE and scale is not None:
            scale = replace(scale, px_per_mm=scale.px_per_mm * 1.6)
        slots = cut_slots(PatchCutter(), rgb, found.points, scale)
        batch.append((slots.rgb, slots.skin))
    patches = tf.constant(np.stack([b[0] for b in batch]))
    skin = tf.constant(np.stack([b[1] for b in batch]))
    served = {k: v.numpy() for k, v in measures.zone_measures(patches, skin, "across1.2").items()}
    for group in contract.PATCH_GROUPS:
        indices = [i for i, (g, _) in enumerate(contract.PATCH_SLOTS) if g == group.name]
        size = contract.PATCH_SIZE_PX
        whole = measures.group_measures(
            group.name,
            tf.reshape(tf.cast(tf.gather(patches, indices, axis=1), tf.float32), [-1, size, size, 3]),
            tf.reshape(tf.cast(tf.gather(skin, indices, axis=1), tf.float32), [-1, size, size]),
            group.px_per_mm,
            "across1.2",
        )
        for name, values in whole.items():
            expected = values.numpy().reshape(len(batch), len(indices))
            np.testing.assert_allclose(served[name][:, indices], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    assert served["pores"].any()  # the pores group was exercised
