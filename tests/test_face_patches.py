"""Fixed-scale skin patches cut from real portraits: the scale holds whatever the photo's size, a photo
below a concern's scale is refused, eyes, lashes and brows stay out of the zones' skin, and the slots are
exactly what the plain computation (every outline drawn and grown on the whole patch, each patch
blurred from its own crop) gives."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from orchestrator.face import patches
from orchestrator.face.alignment import FIXED_POINT_BITS, fixed_point
from orchestrator.face.patches import (
    NEEDED_SCALES,
    WRINKLE_ZONES,
    ZONES,
    FaceFrame,
    PatchCutter,
    PatchUnavailable,
    cut_slots,
    zone_outline,
)
from orchestrator.face.regions import (
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LIPS,
    NOSTRILS,
    RIGHT_BROW,
    RIGHT_EYE,
    grow,
    to_lab,
)
from orchestrator.face.scale import PhysicalScale, ScaleReader
from orchestrator.face.stage import FaceGeometry, Geometry
from serving import contract

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


def _plain_cut(
    rgb: NDArray[np.uint8], points: NDArray[np.float32], scale: PhysicalScale, zone: str, px_per_mm: float
) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.bool_]] | str:
    """A zone's patch (rgb, skin, zone outline) or why it is refused, computed the plain way: the
    photo's crop for this zone blurred on its own, every outline drawn and grown over the whole patch,
    the skin colour's median by np.median."""
    if scale.px_per_mm < px_per_mm:
        return "photo_too_small"
    frame = FaceFrame.of(points, scale)
    outline = zone_outline(frame, zone)
    band = patches.NASOLABIAL_WIDTH_MM / 2.0 if zone.endswith("nasolabial") else 0.0
    low = outline.min(axis=0) - patches.PATCH_MARGIN_MM - band
    size = math.ceil(float(max(outline.max(axis=0) + patches.PATCH_MARGIN_MM + band - low)) * px_per_mm)
    to_patch = frame.matrix * px_per_mm
    to_patch[:, 2] -= low * px_per_mm
    # The crop the patch reads, blurred, then warped (OpenCV's centre-at-integer convention).
    height, width = rgb.shape[:2]
    sigma = 0.5 * math.sqrt(max((scale.px_per_mm / px_per_mm) ** 2 - 1.0, 0.0))
    margin = math.ceil(3.0 * sigma) + 2
    inverse = cv2.invertAffineTransform(to_patch)
    corners = (
        np.array([[0.0, 0.0], [size, 0.0], [size, size], [0.0, size]]) @ inverse[:, :2].T + inverse[:, 2]
    )
    x0, y0 = (int(np.clip(np.floor(corners[:, i].min()) - margin, 0, (width, height)[i])) for i in (0, 1))
    x1, y1 = (int(np.clip(np.ceil(corners[:, i].max()) + margin, 0, (width, height)[i])) for i in (0, 1))
    patch = np.zeros((size, size, 3), dtype=np.uint8)
    if x1 > x0 and y1 > y0:
        part = rgb[y0:y1, x0:x1]
        if sigma > 0.05:
            part = cv2.GaussianBlur(part, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        matrix = to_patch.copy()
        matrix[:, 2] += to_patch[:, :2] @ np.array([x0, y0], dtype=np.float64)
        matrix[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
        patch = cv2.warpAffine(
            part, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    photo = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]]) @ to_patch[:, :2].T
    inside = np.zeros((size, size), dtype=np.uint8)
    cv2.fillConvexPoly(
        inside, fixed_point(photo + to_patch[:, 2]), 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS
    )

    def drawn(polygon_mm: NDArray[np.float64], closed: bool = True) -> NDArray[np.uint8]:
        canvas = np.zeros((size, size), dtype=np.uint8)
        pixels = (polygon_mm - low) * px_per_mm
        if closed:
            cv2.fillPoly(canvas, [fixed_point(pixels)], 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS)
        else:
            thickness = max(1, round(patches.NASOLABIAL_WIDTH_MM * px_per_mm))
            cv2.polylines(canvas, [np.round(pixels - 0.5).astype(np.int32)], False, 1, thickness)
        return canvas

    def radius(mm: float) -> int:
        return max(1, round(mm * px_per_mm))

    oval = drawn(frame.at(FACE_OVAL))
    zone_mask = (drawn(outline, closed=not zone.endswith("nasolabial")) > 0) & ~grow(
        (oval == 0).astype(np.uint8), radius(patches.OVAL_INSET_MM)
    )
    area = int(zone_mask.sum())
    if area == 0 or (zone_mask & (inside > 0)).sum() < patches.MIN_INSIDE_SHARE * area:
        return "outside_photo"
    features = np.zeros((size, size), dtype=bool)
    for indices, mm in (
        (RIGHT_EYE, patches.EYE_MARGIN_MM),
        (LEFT_EYE, patches.EYE_MARGIN_MM),
        (LIPS, patches.LIP_MARGIN_MM),
        *((nostril, patches.LIP_MARGIN_MM) for nostril in NOSTRILS),
    ):
        features |= grow(drawn(frame.at(indices)), radius(mm))
    for brow in (RIGHT_BROW, LEFT_BROW):
        hull = cv2.convexHull(frame.at(brow).astype(np.float32))[:, 0].astype(np.float64)
        features |= grow(drawn(hull), radius(patches.BROW_MARGIN_MM))
    candidate = zone_mask & (inside > 0) & ~features
    skin = candidate.copy()
    if candidate.sum() >= 10:
        lab = to_lab(patch)
        median = np.median(lab[candidate], axis=0)
        dark = grow(
            (lab[..., 0] < median[0] - patches.MAX_DARKER_L).astype(np.uint8), radius(patches.DARK_GROW_MM)
        )
        hue = (lab[..., 1] < median[1] - patches.MAX_LESS_RED_A) | (
            np.abs(lab[..., 2] - median[2]) > patches.MAX_B_DIFFERENCE
        )
        highlight = lab[..., 0] >= median[0] + patches.HIGHLIGHT_MIN_BRIGHTER_L
        skin &= ~dark & (~hue | highlight)
    if skin.sum() < patches.MIN_SKIN_SHARE * area:
        return "outside_photo"
    return patch, skin, zone_mask


def _plain_square(
    rgb: NDArray[np.uint8], skin: NDArray[np.bool_], size: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """The patch's centre at the top left of the square, mirrored (symmetric) index by index."""
    height, width = skin.shape
    y0, x0 = max(0, (height - size) // 2), max(0, (width - size) // 2)
    rgb, skin = rgb[y0 : y0 + size, x0 : x0 + size], skin[y0 : y0 + size, x0 : x0 + size]
    height, width = skin.shape

    def mirrored(count: int) -> NDArray[np.intp]:
        index = np.arange(size) % (2 * count)
        return np.where(index >= count, 2 * count - 1 - index, index)

    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:height, :width] = skin
    return rgb[np.ix_(mirrored(height), mirrored(width))], mask


# A full-size portrait, a face cut by the photo's edge, two large photos (one at 7 px/mm), two faces.
PLAIN_PHOTOS = (
    PORTRAIT,
    "fr_obama_partial_face.jpg",
    "sn_city_portrait.jpg",
    LARGE,
    "fr_two_people.jpg",
)


@pytest.mark.parametrize("name", PLAIN_PHOTOS)
def test_slots_are_exactly_the_plain_cut(faces_dir: Path, geometry: FaceGeometry, name: str) -> None:
    rgb = _rgb(faces_dir / name)
    found = _analyse(geometry, rgb)
    assert found.points is not None and found.scale is not None
    size = contract.PATCH_SIZE_PX
    # The face's own scale, and one 1.5 times finer (so the pores slots, 8 px/mm, are cut as well).
    scales = (found.scale, dataclasses.replace(found.scale, px_per_mm=found.scale.px_per_mm * 1.5))
    cut = 0
    for scale in scales:
        slots = cut_slots(PatchCutter(), rgb, found.points, scale)
        expected_unavailable = {}
        for index, (group, zone) in enumerate(contract.PATCH_SLOTS):
            plain = _plain_cut(rgb, found.points, scale, zone, contract.patch_group(group).px_per_mm)
            if isinstance(plain, str):
                expected_unavailable[(group, zone)] = plain
                assert not slots.rgb[index].any() and not slots.skin[index].any(), (group, zone)
                continue
            cut += 1
            expected_rgb, expected_skin = _plain_square(plain[0], plain[1], size)
            assert np.array_equal(slots.rgb[index], expected_rgb), (name, scale.px_per_mm, group, zone)
            assert np.array_equal(slots.skin[index], expected_skin), (name, scale.px_per_mm, group, zone)
        assert slots.unavailable == expected_unavailable
    assert cut >= 20


def test_a_patch_is_exactly_the_plain_cut_at_any_scale(faces_dir: Path, geometry: FaceGeometry) -> None:
    rgb = _rgb(faces_dir / LARGE)
    found = _analyse(geometry, rgb)
    assert found.points is not None and found.scale is not None
    cutter, cut = PatchCutter(), 0
    # Down to a patch at the photo's own scale: no blur, the largest cut-out margins.
    for px_per_mm in (2.0, 4.5, found.scale.px_per_mm):
        for zone in ZONES:
            plain = _plain_cut(rgb, found.points, found.scale, zone, px_per_mm)
            if isinstance(plain, str):
                with pytest.raises(PatchUnavailable) as refused:
                    cutter.cut(rgb, found.points, found.scale, zone, px_per_mm)
                assert refused.value.reason == plain
                continue
            cut += 1
            patch = cutter.cut(rgb, found.points, found.scale, zone, px_per_mm)
            assert np.array_equal(patch.rgb, plain[0]), (zone, px_per_mm)
            assert np.array_equal(patch.skin, plain[1]), (zone, px_per_mm)
            assert np.array_equal(patch.zone_mask, plain[2]), (zone, px_per_mm)
    assert cut >= 2 * len(ZONES)
