"""Face regions as landmark polygons on real portraits: where each sits, what it leaves out, when it is
not visible, the same regions for a rotated copy of a photo, and the mask exactly as the plain
computation over the whole frame gives it."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.decode.images import decode_image
from orchestrator.face import regions
from orchestrator.face.alignment import FIXED_POINT_BITS, Alignment, align_face, fixed_point
from orchestrator.face.detection import FaceDetector
from orchestrator.face.landmarks import FaceMesh
from orchestrator.face.regions import (
    FACE_OVAL,
    FOREHEAD_RAISE,
    LEFT_BROW,
    LEFT_EYE,
    LIPS,
    NOSTRILS,
    RIGHT_BROW,
    RIGHT_EYE,
    build_mask,
    face_outline,
    feature_mask,
    grow,
    median_colour,
    region_outlines,
    to_lab,
)
from orchestrator.face.stage import FaceGeometry, Geometry
from serving import contract
from tests.conftest import DATA

PORTRAITS = (
    sorted(p.name for p in (DATA / "faces").glob("congress_*.jpg")) if (DATA / "faces").exists() else []
)
# Lower lid, lower lip: the edges the under-eye regions and the chin must stay below.
RIGHT_LOWER_LID = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_LOWER_LID = (263, 249, 390, 373, 374, 380, 381, 382, 362)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375)


def _rgb(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), max_pixels=64_000_000, long_side_px=2000).rgb


@functools.cache
def landmarks(path: Path) -> tuple[np.ndarray, Geometry, np.ndarray]:
    """A photo, its face stage, and its mesh landmarks in the aligned frame."""
    rgb = _rgb(path)
    found = FaceGeometry().analyse(rgb)
    mesh = FaceMesh().landmarks(rgb, FaceDetector().detect(rgb)[0])
    return rgb, found, found.alignment.to_frame(mesh.points)


def _filled(outline: np.ndarray, size: int = contract.FACE_SIZE_PX) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.round(outline - 0.5).astype(np.int32)], 1)
    return canvas.astype(bool)


def _curve_below(frame: np.ndarray, indices: tuple[int, ...], points: np.ndarray) -> np.ndarray:
    """For each (x, y) point, whether it lies below the curve through the given landmarks."""
    curve = frame[list(indices)]
    order = np.argsort(curve[:, 0])
    edge = np.interp(points[:, 0], curve[order, 0], curve[order, 1])
    return points[:, 1] > edge


@pytest.mark.parametrize("name", PORTRAITS)
def test_regions_sit_where_their_names_say(faces_dir: Path, name: str) -> None:
    _, found, frame = landmarks(faces_dir / name)
    labels = found.mask.labels
    size = contract.FACE_SIZE_PX
    # The face outline, its top raised to the hairline as the forehead is.
    outline = _filled(frame[list(FACE_OVAL)])
    kernel = np.ones((2 * round(FOREHEAD_RAISE * size) + 3,) * 2, np.uint8)
    raised = np.asarray(cv2.dilate(outline.astype(np.uint8), kernel), bool)
    for index, region in enumerate(contract.REGION_NAMES, start=1):
        ys, xs = np.nonzero(labels == index)
        if region in ("forehead",):
            assert raised[ys, xs].all(), region
        else:
            assert outline[ys, xs].mean() > 0.99, region

    def pixels(region: str) -> np.ndarray:
        ys, xs = np.nonzero(labels == contract.LABEL_NAMES.index(region) + 1)
        return np.stack([xs + 0.5, ys + 0.5], axis=1)

    # The chin below the lower lip, the forehead above both brows, the under-eyes below the lower lids.
    assert _curve_below(frame, LOWER_LIP, pixels("chin")).all()
    brow_bottom = frame[list(RIGHT_BROW + LEFT_BROW), 1].max()
    assert (pixels("forehead")[:, 1] < brow_bottom).all()
    assert _curve_below(frame, RIGHT_LOWER_LID, pixels("right_under_eye")).all()
    assert _curve_below(frame, LEFT_LOWER_LID, pixels("left_under_eye")).all()
    # The subject's left is on the image's right.
    assert pixels("left_cheek")[:, 0].mean() > pixels("right_cheek")[:, 0].mean()


@pytest.mark.parametrize("name", PORTRAITS[:8])
def test_eyes_brows_and_lips_are_never_skin(faces_dir: Path, name: str) -> None:
    _, found, frame = landmarks(faces_dir / name)
    skin = found.mask.labels > 0
    for outline in (RIGHT_EYE, LEFT_EYE, LIPS):
        assert not (skin & _filled(frame[list(outline)])).any()
    assert not (skin & feature_mask(frame, contract.FACE_SIZE_PX)).any()


def test_a_blonde_fringe_is_cut_out_of_the_forehead(faces_dir: Path) -> None:
    _, found, _ = landmarks(faces_dir / "congress_B001284.jpg")
    forehead = found.mask.labels == 1
    outline = _filled(found.mask.polygons["forehead"])
    assert forehead.sum() < 0.6 * outline.sum(), "most of her forehead is under her fringe"
    lab = cv2.cvtColor(found.face.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    cheeks = (found.mask.labels == 2) | (found.mask.labels == 3)
    # What is left of the forehead is as red as her skin, not as yellow-grey as her hair.
    assert np.median(lab[forehead][:, 1]) > np.median(lab[cheeks][:, 1]) - 8


def test_regions_follow_a_rotated_photo(faces_dir: Path) -> None:
    rgb = _rgb(faces_dir / "congress_C000984.jpg")
    upright = FaceGeometry().analyse(rgb)
    turned = np.ascontiguousarray(np.rot90(rgb))  # 90 degrees anticlockwise
    rotated = FaceGeometry().analyse(turned)
    assert rotated.pose is not None and abs(abs(rotated.pose.roll_deg) - 90) < 6
    # Same polygons in the aligned frame, within 2% of the face width.
    tolerance = 0.02 * upright.face_width_px * upright.alignment.scale
    for region in contract.REGION_NAMES:
        gap = np.abs(upright.mask.polygons[region] - rotated.mask.polygons[region]).max()
        assert gap < tolerance, (region, gap, tolerance)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_copies_give_the_upright_regions(
    faces_dir: Path, awkward_dir: Path, orientation: int
) -> None:
    upright = FaceGeometry().analyse(_rgb(faces_dir / "sn_city_portrait.jpg"))
    copy = FaceGeometry().analyse(
        _rgb(awkward_dir / "exif_orientation" / f"derived_face_exif_orient{orientation}.jpg")
    )
    width = upright.face_width_px
    for region in contract.REGION_NAMES:
        a = upright.alignment.to_photo(upright.mask.polygons[region])
        b = copy.alignment.to_photo(copy.mask.polygons[region])
        assert np.abs(a - b).max() < 0.02 * width, region


def test_alignment_levels_the_eyes_and_fixes_the_scale(faces_dir: Path) -> None:
    rgb = _rgb(faces_dir / "congress_L000287.jpg")  # the head leans by about 11 degrees
    mesh = FaceMesh().landmarks(rgb, FaceDetector().detect(rgb)[0])
    frame = align_face(mesh.points).to_frame(mesh.points)
    eyes = frame[[33, 263]]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1.0
    height = np.linalg.norm(mesh.points[152] - mesh.points[10])  # 3-D: the same for any head turn
    assert align_face(mesh.points).scale * height == pytest.approx(0.75 * contract.FACE_SIZE_PX, rel=1e-6)


def _plain_grow(area: np.ndarray, radius: int) -> np.ndarray:
    distance = cv2.distanceTransform(np.where(area > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
    return np.asarray(distance <= radius)


def _plain_fill(polygon: np.ndarray, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [fixed_point(polygon)], 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS)
    return canvas


def _plain_mask(
    face: np.ndarray, inside: np.ndarray, points: np.ndarray, alignment: Alignment, yaw: float
) -> tuple[np.ndarray, dict[str, str]]:
    """The labels and the reasons, the plain way: every step over the whole frame, np.median."""
    size, frame = alignment.size, alignment.to_frame(points)
    features = np.zeros((size, size), np.uint8)
    for outline in (RIGHT_EYE, LEFT_EYE, LIPS, *NOSTRILS):
        features |= _plain_fill(frame[list(outline)], size)
    for brow in (RIGHT_BROW, LEFT_BROW):
        features |= _plain_fill(
            cv2.convexHull(frame[list(brow)].astype(np.float32))[:, 0].astype(float), size
        )
    usable = inside & ~_plain_grow(features, max(1, round(regions.FEATURE_MARGIN * size)))
    polygons = {name: _plain_fill(o, size) > 0 for name, o in region_outlines(frame, size).items()}
    oval = _plain_fill(frame[list(FACE_OVAL)], size)
    lab = cv2.cvtColor(face.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2LAB)
    reference = polygons["left_cheek"] | polygons["right_cheek"] | polygons["nose"] | polygons["chin"]
    median = np.median(lab[reference & usable], axis=0)
    d_l, d_a, d_b = (lab[..., i] - median[i] for i in range(3))
    chroma = (d_a >= -regions.SKIN_MAX_LESS_RED_A) & (np.abs(d_b) <= regions.SKIN_MAX_B_DIFFERENCE)
    highlight = (oval > 0) & (d_l >= regions.HIGHLIGHT_MIN_BRIGHTER_L)
    skin = (d_l >= -regions.SKIN_MAX_DARKER_L) & (chroma | highlight) & usable
    near = _plain_grow(oval, max(1, round(regions.OTHER_SKIN_MARGIN * size))).astype(np.uint8)
    jaw = frame[[regions.JAW_RIGHT, regions.JAW_LEFT]]
    near |= _plain_fill(np.array([jaw[0], jaw[1], [jaw[1][0], size + 1.0], [jaw[0][0], size + 1.0]]), size)
    reasons: dict[str, str] = {}
    if abs(yaw) >= regions.FAR_SIDE_HIDDEN_YAW_DEG:
        far = "left" if yaw > 0 else "right"
        reasons.update({f"{far}_cheek": "turned_away", f"{far}_under_eye": "turned_away"})
    areas = {name: int(area.sum()) for name, area in polygons.items()}
    for one, other in regions.SIDE_PAIRS + tuple((b, a) for a, b in regions.SIDE_PAIRS):
        if areas[one] < regions.MIN_SIDE_AREA_RATIO * areas[other]:
            reasons[one] = "turned_away"
    for name, area in polygons.items():
        if areas[name] == 0:
            reasons.setdefault(name, "turned_away")
        elif (area & inside).sum() / areas[name] < regions.MIN_INSIDE_SHARE:
            reasons[name] = "outside_photo"
    labels = np.zeros((size, size), np.uint8)
    labels[skin & (near > 0)] = contract.LABEL_NAMES.index(contract.OTHER_SKIN) + 1
    within = _plain_fill(face_outline(frame, size), size) > 0
    for index, name in enumerate(contract.REGION_NAMES, start=1):
        labels[polygons[name] & skin & within] = 0 if name in reasons else index
    return labels, reasons


# Portraits, a face cut by the photo's edge, a head turned away, two faces.
PLAIN_PHOTOS = (
    "congress_C000984.jpg",
    "congress_B001284.jpg",
    "fr_obama_partial_face.jpg",
    "sn_sophia.jpg",
    "sn_woman_portrait.jpg",
    "fr_two_people.jpg",
)


@pytest.mark.parametrize("name", PLAIN_PHOTOS)
def test_the_mask_is_exactly_the_plain_computation(faces_dir: Path, name: str) -> None:
    rgb = _rgb(faces_dir / name)
    found = FaceGeometry().analyse(rgb)
    assert found.points is not None and found.pose is not None
    face, inside = found.alignment.warp(rgb)
    mask = build_mask(face, inside, found.points, found.alignment, found.pose.yaw_deg)
    labels, reasons = _plain_mask(face, inside, found.points, found.alignment, found.pose.yaw_deg)
    assert np.array_equal(mask.labels, labels)
    assert np.array_equal(found.mask.labels, labels)
    assert mask.reasons == reasons
    assert mask.visible == {name: name not in reasons for name in contract.REGION_NAMES}
    assert mask.pixels == {
        label: int((labels == i).sum()) for i, label in enumerate(contract.LABEL_NAMES, start=1)
    }


@pytest.mark.parametrize("name", PLAIN_PHOTOS[:3])
def test_grow_and_colour_are_the_plain_computations(faces_dir: Path, name: str) -> None:
    _, found, frame = landmarks(faces_dir / name)
    size = contract.FACE_SIZE_PX
    oval = _plain_fill(frame[list(FACE_OVAL)], size)
    eye = _plain_fill(frame[list(RIGHT_EYE)], size)
    # A grown area: the face, one eye, the background, all grown by small to large radii.
    for area in (oval, eye, (oval == 0).astype(np.uint8), np.zeros_like(oval)):
        for radius in (1, 5, 31, 200):
            assert np.array_equal(grow(area, radius), _plain_grow(area, radius)), radius
    lab = to_lab(found.face)
    assert np.array_equal(lab, cv2.cvtColor(found.face.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2LAB))
    for count in (1, 2, 3, 50, 51, 4000, 4001, lab.shape[0] * lab.shape[1]):
        where = np.zeros(lab.shape[:2], dtype=bool)
        where.ravel()[:: max(1, where.size // count)][:count] = True
        assert where.sum() == count
        assert np.array_equal(median_colour(lab, where), np.median(lab[where], axis=0)), count
