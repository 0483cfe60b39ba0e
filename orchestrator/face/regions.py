"""Face regions as landmark polygons in the aligned frame, and the region-label mask the model reads.

Each region is a polygon through face-mesh landmarks (MediaPipe's 468-point topology), so it follows
the face's own shape and keeps its aspect ratio. Eyes, brows, lips and nostrils are cut out of every
region; hair and anything else that is not this face's skin is cut out by colour, against the face's
own skin colour read from the mesh regions (so light and dark skin are judged alike). A region the
head turns away from the camera, or one mostly outside the photo, is not visible: its pixels are left
out and post-scoring reports it as unknown, never as healthy skin. "left" and "right" are the
subject's own; the landmark lists below name the subject's right side first.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.alignment import FIXED_POINT_BITS, Alignment, fixed_point
from orchestrator.face.detection import Detection
from serving import contract

# The face oval, clockwise in the image from the top of the forehead.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
# Eye contours (lower lid then upper lid), brows, the outer lip line.
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
# Where nostrils show in a frontal photo: between the alae and the columella, above the subnasale.
NOSTRILS = ((64, 98, 97, 2, 94, 19), (294, 327, 326, 2, 94, 19))
# Upper brow lines (outer to inner) and the glabella between them: the forehead's lower edge.
RIGHT_BROW_TOP = (70, 63, 105, 66, 107)
LEFT_BROW_TOP = (336, 296, 334, 293, 300)
GLABELLA = 9
# The oval's upper arc, subject's right temple to left temple: the forehead's upper edge before it is
# raised towards the hairline.
FOREHEAD_ARC = (21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251)

REGION_POLYGONS: dict[str, tuple[int, ...]] = {
    # From the lower lid (the eye's cut-out margin is the gap) down to the cheek's upper edge.
    "right_under_eye": (133, 155, 154, 153, 145, 144, 163, 7, 33, 117, 118, 119, 120, 121),
    "left_under_eye": (362, 382, 381, 380, 374, 373, 390, 249, 263, 346, 347, 348, 349, 350),
    # From under the eye down to the mouth corner's level, between the nose side and the face outline.
    "right_cheek": (121, 120, 119, 118, 117, 116, 123, 147, 213, 192, 214, 212, 216, 206, 203, 142, 100),
    "left_cheek": (350, 349, 348, 347, 346, 345, 352, 376, 433, 416, 434, 432, 436, 426, 423, 371, 329),
    # Bridge between the eyes down both sidewalls to the alae and round the tip.
    "nose": (168, 417, 465, 412, 399, 437, 420, 429, 358, 294, 327, 326, 2, 97, 98, 64, 129, 209, 198, 217,
             174, 188, 245, 193),
    # Below the lower lip to the chin's outline, between the verticals of the mouth corners.
    "chin": (202, 18, 422, 430, 394, 379, 378, 400, 377, 152, 148, 176, 149, 150, 169, 210),
}  # fmt: skip

# Margins, as shares of the frame: the forehead starts this far above the brows, and is raised above
# the mesh's top arc by FOREHEAD_RAISE to reach the hairline (hair there is cut out by colour).
BROW_MARGIN = 0.015
FOREHEAD_RAISE = 0.06
# Features are cut out with this margin around their outlines, as a share of the frame.
FEATURE_MARGIN = 0.012
# A side region is not visible when its area in the frame is below this share of its mirror
# partner's: the head is turned and it is seen edge-on (or hidden behind the nose). Among the photos in
# data/faces, a head turned by 24 degrees leaves its far cheek at 0.29 of the near one, by 34 degrees
# at 0.20; ACNE04's three-quarter views (30-50 degrees) mostly fall below 0.25.
MIN_SIDE_AREA_RATIO = 0.25
# A region is not visible when less than this share of its polygon lies inside the photo.
MIN_INSIDE_SHARE = 0.6
# Skin by colour, against the median CIELAB of the face's own mesh regions. Hair and deep shadow are
# far darker; blonde and grey hair, backgrounds and clothes are much less red or of another yellowness.
# Redder is always allowed (papules, flushing), and so is paler where it is also brighter, inside the
# face outline: a specular highlight, which the model measures as shine. On the portraits, blonde
# fringes sit 14-16 a* units below the cheeks; foreheads 3-6 below them.
SKIN_MAX_DARKER_L = 22.0
SKIN_MAX_LESS_RED_A = 9.0
SKIN_MAX_B_DIFFERENCE = 12.0
HIGHLIGHT_MIN_BRIGHTER_L = 8.0
# Other visible skin is looked for within this margin around the face outline (a share of the frame),
# which reaches the ears and the jaw's underside, and below the jaw down the neck.
OTHER_SKIN_MARGIN = 0.08
# The jaw's corners (subject's right, left): the neck is looked for between them.
JAW_RIGHT, JAW_LEFT = 172, 397
SIDE_PAIRS = (("left_cheek", "right_cheek"), ("left_under_eye", "right_under_eye"))
# Past this yaw the far side's cheek and under-eye face more than ~90 degrees away from the camera
# (a cheek faces 40-50 degrees out from the face's front), whatever area the mesh still gives them.
FAR_SIDE_HIDDEN_YAW_DEG = 45.0


@dataclass(frozen=True)
class RegionMask:
    """The model's mask for one face and what it says about each region."""

    labels: NDArray[np.uint8]  # [size, size]: 0 not skin, 1..8 contract.LABEL_NAMES
    polygons: dict[str, NDArray[np.float64]]  # region -> outline in the aligned frame [N, 2]
    visible: dict[str, bool]  # region -> whether it can be read
    pixels: dict[str, int]  # label name -> skin pixels carrying it
    # region -> why it is not visible: "outside_photo", "turned_away" or "not_placed" (no landmarks)
    reasons: dict[str, str]


def _points(frame_points: NDArray[np.float64], indices: tuple[int, ...]) -> NDArray[np.float64]:
    return frame_points[list(indices)]


def region_outlines(frame_points: NDArray[np.float64], size: int) -> dict[str, NDArray[np.float64]]:
    """Every region's polygon in the aligned frame, from landmarks already mapped into it [468, 2]."""
    outlines = {name: _points(frame_points, indices) for name, indices in REGION_POLYGONS.items()}
    brow_top = np.concatenate(
        [
            _points(frame_points, RIGHT_BROW_TOP),
            frame_points[[GLABELLA]],
            _points(frame_points, LEFT_BROW_TOP),
        ]
    )
    brow_top = brow_top - np.array([0.0, BROW_MARGIN * size])
    outlines["forehead"] = np.concatenate([brow_top, _raised_arc(frame_points, size)[::-1]])
    return {name: outlines[name] for name in contract.REGION_NAMES}


def _raised_arc(frame_points: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    """The oval's upper arc raised towards the hairline: moved away from the glabella (upwards, and
    outwards at the temples) by FOREHEAD_RAISE of the frame."""
    arc = _points(frame_points, FOREHEAD_ARC)
    direction = arc - frame_points[[GLABELLA]]
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-6)
    return np.asarray(arc + direction * FOREHEAD_RAISE * size, dtype=np.float64)


def face_outline(frame_points: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    """The face's outline in the aligned frame: the mesh's oval with its upper arc raised to the
    hairline. Every region is cut to it."""
    outline = _points(frame_points, FACE_OVAL).copy()
    raised = dict(zip(FOREHEAD_ARC, _raised_arc(frame_points, size), strict=True))
    for position, index in enumerate(FACE_OVAL):
        if index in raised:
            outline[position] = raised[index]
    return outline


def _fill(canvas: NDArray[np.uint8], polygon: NDArray[np.float64], value: int) -> None:
    cv2.fillPoly(canvas, [fixed_point(polygon)], value, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS)


def grow(area: NDArray[np.uint8] | NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """`area` (non-zero pixels) grown by `radius` pixels in every direction: the pixels within that
    Euclidean distance of it (a distance transform; several times faster than dilating with a disc)."""
    sources = np.asarray(area, dtype=np.uint8)
    grown = np.zeros(sources.shape, dtype=bool)
    x, y, width, height = cv2.boundingRect(sources)
    if width == 0:
        return grown
    # OpenCV's 5x5 chamfer distance is never below the chessboard distance, so nothing farther than
    # `radius` pixels along either axis from the area's box is reached: the transform runs on that
    # box (widened by a margin), not on the whole image.
    reach = radius + 2
    window = (slice(max(0, y - reach), y + height + reach), slice(max(0, x - reach), x + width + reach))
    distance = cv2.distanceTransform(np.asarray(sources[window] == 0, dtype=np.uint8), cv2.DIST_L2, 5)
    grown[window] = distance <= radius
    return grown


def feature_mask(frame_points: NDArray[np.float64], size: int) -> NDArray[np.bool_]:
    """Eyes, brows, lips and nostrils with a margin: never skin."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    outlines: tuple[tuple[int, ...], ...] = (RIGHT_EYE, LEFT_EYE, LIPS, *NOSTRILS)
    for outline in outlines:
        _fill(canvas, _points(frame_points, outline), 1)
    for brow in (RIGHT_BROW, LEFT_BROW):
        hull = cv2.convexHull(_points(frame_points, brow).astype(np.float32))[:, 0]
        _fill(canvas, np.asarray(hull, dtype=np.float64), 1)
    margin = max(1, round(FEATURE_MARGIN * size))
    return grow(canvas, margin)


def skin_by_colour(
    lab: NDArray[np.float32], reference: NDArray[np.bool_], highlights_allowed: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Pixels whose colour is this face's skin, judged against the median of the `reference` pixels:
    not far darker (hair, deep shadow), not much less red and of similar yellowness (blonde or grey
    hair, backgrounds, clothes), except brighter pale highlights where `highlights_allowed`."""
    if reference.sum() < 50:
        return np.ones(lab.shape[:2], dtype=bool)
    median = median_colour(lab, reference)
    d_l = lab[..., 0] - median[0]
    d_a = lab[..., 1] - median[1]
    d_b = lab[..., 2] - median[2]
    chroma_ok = (d_a >= -SKIN_MAX_LESS_RED_A) & (np.abs(d_b) <= SKIN_MAX_B_DIFFERENCE)
    highlight = highlights_allowed & (d_l >= HIGHLIGHT_MIN_BRIGHTER_L)
    return np.asarray((d_l >= -SKIN_MAX_DARKER_L) & (chroma_ok | highlight), dtype=bool)


def median_colour(image: NDArray[np.float32], where: NDArray[np.bool_]) -> NDArray[np.float32]:
    """The median of an image's pixels [H, W, C] where `where` is set (at least one), channel by
    channel: the values of np.median(image[where], axis=0), several times faster. Each channel is
    ranked as one row; numpy partitions around both middle ranks of an even count at once slowly,
    while the lower middle is the largest value below the upper middle once that is in place, and the
    two are averaged in float32 as np.median does."""
    pixels = np.take(image.reshape(-1, image.shape[-1]), np.flatnonzero(where), axis=0)
    count = pixels.shape[0]
    middle = count // 2
    channels = np.ascontiguousarray(pixels.T)
    channels.partition(middle, axis=1)
    if count % 2:
        return np.asarray(channels[:, middle], dtype=image.dtype)
    pair = np.stack([channels[:, :middle].max(axis=1), channels[:, middle]])
    return np.asarray(np.mean(pair, axis=0), dtype=image.dtype)


# sRGB byte -> 0..1, each value as numpy's float32 `byte * (1 / 255)` gives it: a table lookup makes
# the float image in one pass instead of a conversion and a multiplication.
_UNIT_SCALE = np.arange(256, dtype=np.float32) * (1.0 / 255.0)


def to_lab(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """CIELAB (L* 0..100, a*, b*) of an sRGB image, D65, via OpenCV."""
    return np.asarray(cv2.cvtColor(cv2.LUT(rgb, _UNIT_SCALE), cv2.COLOR_RGB2LAB), np.float32)


def build_mask(
    face: NDArray[np.uint8],
    inside: NDArray[np.bool_],
    points: NDArray[np.float32],
    alignment: Alignment,
    yaw_deg: float = 0.0,
) -> RegionMask:
    """The label mask of an aligned face image from its mesh landmarks (photo pixels) and head yaw
    (positive: turned towards the image's right, so the subject's left side faces away)."""
    size = alignment.size
    frame_points = alignment.to_frame(points)
    outlines = region_outlines(frame_points, size)
    features = feature_mask(frame_points, size)
    usable = inside & ~features
    # Each region drawn on its own canvas, and the box that holds it (x, y, width, height).
    polygons: dict[str, NDArray[np.bool_]] = {}
    boxes: dict[str, tuple[slice, slice]] = {}
    for name, outline in outlines.items():
        canvas = np.zeros((size, size), dtype=np.uint8)
        _fill(canvas, outline, 1)
        x, y, width, height = cv2.boundingRect(canvas)
        polygons[name] = canvas.view(bool)
        boxes[name] = (slice(y, y + height), slice(x, x + width))
    oval = np.zeros((size, size), dtype=np.uint8)
    _fill(oval, _points(frame_points, FACE_OVAL), 1)
    within_outline = np.zeros((size, size), dtype=np.uint8)
    _fill(within_outline, face_outline(frame_points, size), 1)
    near = _near_face(oval, frame_points, size)
    # A label lands only near the face or in a region, so the colour test is made on the box that
    # holds them (the frame's corners are left out); the reference pixels lie in regions.
    reached = near.view(np.uint8).copy()
    for name, box in boxes.items():
        reached[box] |= polygons[name][box]
    x, y, width, height = cv2.boundingRect(reached)
    window = (slice(y, y + height), slice(x, x + width))
    reference = np.zeros((size, size), dtype=bool)
    for name in ("left_cheek", "right_cheek", "nose", "chin"):
        reference[boxes[name]] |= polygons[name][boxes[name]]
    skin = np.zeros((size, size), dtype=bool)
    skin[window] = (
        skin_by_colour(to_lab(face[window]), (reference & usable)[window], oval[window].view(bool))
        & usable[window]
    )
    areas = {name: int(np.count_nonzero(polygons[name][box])) for name, box in boxes.items()}
    inside_areas = {
        name: int(np.count_nonzero(polygons[name][box] & inside[box])) for name, box in boxes.items()
    }
    visible, reasons = _visibility(areas, inside_areas, yaw_deg)
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[skin & near] = contract.LABEL_NAMES.index(contract.OTHER_SKIN) + 1
    within = within_outline.view(bool)
    for index, name in enumerate(contract.REGION_NAMES, start=1):
        box = boxes[name]
        region = polygons[name][box] & skin[box] & within[box]
        labels[box][region] = index if visible[name] else 0
    return _mask_from(labels, visible, outlines, reasons)


# Chai & Ngan's skin chroma box in YCrCb ("Face segmentation using skin-color map in videophone
# applications", IEEE TCSVT 9(4), 1999): Cr 133-173, Cb 77-127. Without a mesh it gives the first
# guess of the skin colour that skin_by_colour then refines.
SKIN_CR = (133, 173)
SKIN_CB = (77, 127)


def chroma_skin(rgb: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Pixels inside the Chai & Ngan skin chroma box."""
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    return np.asarray(
        (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1]), dtype=bool
    )


def _mask_from(
    labels: NDArray[np.uint8],
    visible: dict[str, bool],
    outlines: dict[str, NDArray[np.float64]],
    reasons: dict[str, str],
) -> RegionMask:
    pixels = {
        name: int(np.count_nonzero(labels == i)) for i, name in enumerate(contract.LABEL_NAMES, start=1)
    }
    return RegionMask(labels=labels, polygons=outlines, visible=visible, pixels=pixels, reasons=reasons)


def close_up_mask(face: NDArray[np.uint8], inside: NDArray[np.bool_]) -> RegionMask:
    """A skin close-up's mask: all of its skin is one region (other skin), no face regions."""
    first_guess = chroma_skin(face) & inside
    skin = (
        skin_by_colour(to_lab(face), first_guess, np.zeros_like(inside)) & inside & (first_guess.sum() >= 50)
    )
    labels = np.where(skin, contract.LABEL_NAMES.index(contract.OTHER_SKIN) + 1, 0).astype(np.uint8)
    not_placed = dict.fromkeys(contract.REGION_NAMES, "not_placed")
    return _mask_from(labels, dict.fromkeys(contract.REGION_NAMES, False), {}, not_placed)


# The visible cheek of a profile, placed from the detector's keypoints in the aligned frame: from a
# quarter of the way from the eye down to the mouth to just below the mouth, and from midway between
# the nose tip and the mouth across to most of the way to the visible ear.
PROFILE_CHEEK_TOP = 0.25
PROFILE_CHEEK_BOTTOM = 1.1
PROFILE_CHEEK_TO_EAR = 0.8


def keypoint_mask(
    face: NDArray[np.uint8], inside: NDArray[np.bool_], detection: Detection, alignment: Alignment
) -> RegionMask:
    """A profile's mask: its visible cheek where the keypoints place one, the rest of its skin other
    skin; every other region is not visible."""
    size = alignment.size
    points = alignment.to_frame(detection.keypoints)
    names = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
    kp = dict(zip(names, points, strict=True))
    # The nose points away from the visible side: nose to the image's left shows the subject's left
    # cheek, whose ear is the subject's left ear.
    ears_x = (kp["right_ear"][0] + kp["left_ear"][0]) / 2.0
    side = "left" if kp["nose_tip"][0] < ears_x else "right"
    ear = kp[f"{side}_ear"]
    eye = kp[f"{side}_eye"]
    mouth, nose = kp["mouth"], kp["nose_tip"]
    drop = mouth[1] - eye[1]
    inner_x = (nose[0] + mouth[0]) / 2.0
    outer_x = inner_x + PROFILE_CHEEK_TO_EAR * (ear[0] - inner_x)
    top, bottom = eye[1] + PROFILE_CHEEK_TOP * drop, eye[1] + PROFILE_CHEEK_BOTTOM * drop
    placed = drop > 0.05 * size and abs(outer_x - inner_x) > 0.05 * size
    cheek_name = f"{side}_cheek"
    outlines: dict[str, NDArray[np.float64]] = {}
    region = np.zeros((size, size), dtype=np.uint8)
    if placed:
        outlines[cheek_name] = np.array(
            [[inner_x, top], [outer_x, top], [outer_x, bottom], [inner_x, bottom]]
        )
        _fill(region, outlines[cheek_name], 1)
    first_guess = chroma_skin(face) & inside
    reference = (
        first_guess & region.astype(bool)
        if placed and (first_guess & region.astype(bool)).sum() >= 50
        else first_guess
    )
    skin = skin_by_colour(to_lab(face), reference, np.zeros_like(inside)) & inside & (first_guess.sum() >= 50)
    labels = np.where(skin, contract.LABEL_NAMES.index(contract.OTHER_SKIN) + 1, 0).astype(np.uint8)
    visible = dict.fromkeys(contract.REGION_NAMES, False)
    reasons = dict.fromkeys(contract.REGION_NAMES, "not_placed")
    far = "right" if side == "left" else "left"
    for name in (f"{far}_cheek", f"{far}_under_eye"):
        reasons[name] = "turned_away"
    if placed:
        cheek = skin & region.astype(bool)
        inside_share = float((region.astype(bool) & inside).sum()) / max(1.0, float(region.sum()))
        if inside_share >= MIN_INSIDE_SHARE:
            labels[cheek] = contract.REGION_NAMES.index(cheek_name) + 1
            visible[cheek_name] = True
            del reasons[cheek_name]
        else:
            reasons[cheek_name] = "outside_photo"
    return _mask_from(labels, visible, outlines, reasons)


def _near_face(oval: NDArray[np.uint8], frame_points: NDArray[np.float64], size: int) -> NDArray[np.bool_]:
    """Where other visible skin may be: the face outline widened by OTHER_SKIN_MARGIN, and the neck
    below the jaw (between the jaw's corners, down to the frame's edge)."""
    margin = max(1, round(OTHER_SKIN_MARGIN * size))
    near = grow(oval, margin).astype(np.uint8)
    jaw = frame_points[[JAW_RIGHT, JAW_LEFT]]
    neck = np.array([jaw[0], jaw[1], [jaw[1][0], size + 1.0], [jaw[0][0], size + 1.0]])
    _fill(near, neck, 1)
    return near.astype(bool)


def _visibility(
    areas: dict[str, int], inside_areas: dict[str, int], yaw_deg: float
) -> tuple[dict[str, bool], dict[str, str]]:
    """Which regions can be read, and why the others cannot, from each region's pixels in the frame
    and inside the photo."""
    reasons: dict[str, str] = {}
    if abs(yaw_deg) >= FAR_SIDE_HIDDEN_YAW_DEG:
        far = "left" if yaw_deg > 0 else "right"
        reasons.update({f"{far}_cheek": "turned_away", f"{far}_under_eye": "turned_away"})
    for left, right in SIDE_PAIRS:
        if areas[left] < MIN_SIDE_AREA_RATIO * areas[right]:
            reasons[left] = "turned_away"
        if areas[right] < MIN_SIDE_AREA_RATIO * areas[left]:
            reasons[right] = "turned_away"
    for name, area in areas.items():
        if area == 0:
            reasons.setdefault(name, "turned_away")
        elif float(inside_areas[name]) / area < MIN_INSIDE_SHARE:
            reasons[name] = "outside_photo"
    return {name: name not in reasons for name in areas}, reasons
