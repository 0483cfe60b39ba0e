"""Skin patches at a fixed physical scale, cut from the decoded photo's own pixels.

Every zone is placed in a levelled face frame measured in millimetres (origin between the eye
centres, x towards the subject's left, y down, one unit = 1 mm by the face's PhysicalScale) and is
resampled from the photo into an upright square patch at the pixels per millimetre a concern needs.
A photo whose own scale is below that need is never enlarged into fake detail: the patch is refused
with the reason "photo_too_small". Eyes with their lashes, brows, lips and nostrils are cut out with a
margin; hair, glasses frames and deep shadow by colour against the zone's own median skin.

Wrinkle zones (forehead lines, glabellar frown lines, crow's feet at the outer eye corners, lines under
the lower lid, nasolabial folds) follow the clinical photonumeric scales' sites (Bazin and Doublet,
"Skin Aging Atlas" vol. 1, 2007): the upper-lid crease between eye and brow lies in no zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.face.alignment import FIXED_POINT_BITS, Alignment, fixed_point
from orchestrator.face.regions import (
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LIPS,
    NOSTRILS,
    REGION_POLYGONS,
    RIGHT_BROW,
    RIGHT_EYE,
    grow,
    to_lab,
)
from orchestrator.face.scale import LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS, PhysicalScale
from serving import contract

# Why a patch could not be cut.
REASONS: tuple[str, ...] = ("photo_too_small", "no_scale", "outside_photo")
WRINKLE_ZONES: tuple[str, ...] = contract.patch_group("wrinkles").zones
AREA_ZONES: tuple[str, ...] = ("right_cheek", "left_cheek", "nose", "chin")
ZONES: tuple[str, ...] = WRINKLE_ZONES + AREA_ZONES


@dataclass(frozen=True)
class NeededScale:
    """The pixels per millimetre a concern is read at, the zones it reads, and why that scale."""

    px_per_mm: float
    zones: tuple[str, ...]
    why: str


# Each concern's scale. A photo whose face is below it leaves the concern unscored (photo_too_small).
NEEDED_SCALES: dict[str, NeededScale] = {
    "wrinkles": NeededScale(
        contract.patch_group("wrinkles").px_per_mm,
        WRINKLE_ZONES,
        "0.83 mm per pixel: the coarse lines a portrait shows (forehead, frown, crow's feet, nasolabial) "
        "are about 1 mm wide and wider, so they span a pixel or more; fine lines (under 0.5 mm) are not "
        "read at any scale a portrait reaches. 1.2 is below the 2nd percentile of the training "
        "portraits' own scale (1.34; 1.21-1.88 px/mm), so a full-size portrait and a 90% re-send are "
        "both read at it.",
    ),
    "redness": NeededScale(
        contract.patch_group("colour").px_per_mm,
        ("right_cheek", "left_cheek", "nose"),
        "1.25 mm per pixel: diffuse erythema covers areas of centimetres; telangiectasia (0.1-1 mm "
        "vessels) are not resolved and not claimed.",
    ),
    "dark_spots": NeededScale(
        contract.patch_group("dark_spots").px_per_mm,
        ("right_cheek", "left_cheek", "forehead"),
        "1 mm per pixel: lentigines and freckles are 2 mm across and larger, so one spans 2 pixels or more.",
    ),
    "dark_circles": NeededScale(
        contract.patch_group("colour").px_per_mm,
        ("right_infraorbital", "left_infraorbital", "right_cheek", "left_cheek"),
        "1.25 mm per pixel: infraorbital darkening is a band of about 10 mm under the lid, compared "
        "with the cheek below it.",
    ),
    "oiliness": NeededScale(
        contract.patch_group("colour").px_per_mm,
        ("forehead", "nose", "right_cheek", "left_cheek"),
        "1.25 mm per pixel: shine is read as the share of specular highlight, patches of millimetres "
        "and more.",
    ),
    "pores": NeededScale(
        contract.patch_group("pores").px_per_mm,
        ("right_cheek", "left_cheek", "nose"),
        "0.125 mm per pixel: a facial pore is 0.1-0.5 mm across, so a mid-sized pore (0.25 mm) spans "
        "2 pixels only at 8 pixels per millimetre.",
    ),
}

# Landmarks (subject's right side, then its mirror on the left).
_BROW_TOPS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
_FOREHEAD_ARC = (54, 103, 67, 109, 10, 338, 297, 332, 284)
_GLABELLA_BOTTOM = (285, 8, 55)  # inner brow ends' lower edges and the bridge between them
_LOWER_LIDS = ((33, 7, 163, 144, 145, 153, 154, 155, 133), (263, 249, 390, 373, 374, 380, 381, 382, 362))
# The nasolabial fold's course, from beside the ala to lateral of the mouth corner.
_NASOLABIAL = ((203, 206, 216, 212), (423, 426, 436, 432))
_OUTER_CORNERS = (RIGHT_EYE_CORNERS[0], LEFT_EYE_CORNERS[1])

# Zone geometry, millimetres. Forehead and glabella start this far above the brows' upper edge (brow
# hairs stray above the mesh's brow line), the forehead ends this far below the mesh's top arc.
ABOVE_BROWS_MM = 4.0
BELOW_ARC_MM = 3.0
# Crow's feet: a box lateral to the outer eye corner, from just outside it (the eye cut-out's own
# margin covers the canthus) to 20 mm out, 8 mm above and 10 mm below the corner (the lines fan
# downwards more than up).
CROWS_FEET_MM = (4.0, 20.0, -8.0, 10.0)
# Under the eye: from below the lashes (2.5 mm under the lid margin) 10 mm down.
UNDER_LID_MM, UNDER_EYE_DEPTH_MM = 2.5, 10.0
# Infraorbital band, where dark circles are read: from 5 mm below the lid margin (below the lashes and
# the lower lid's tarsal plate, whose fold rolls up in a smile) to 15 mm (about the lid-cheek junction).
INFRAORBITAL_MM = (5.0, 15.0)
NASOLABIAL_WIDTH_MM = 8.0
# Cut-outs: margins around eyes (lashes), brows (stray hairs) and lips; the face outline is shrunk by
# OVAL_INSET_MM so ears and the hairline at the temples stay out.
EYE_MARGIN_MM, BROW_MARGIN_MM, LIP_MARGIN_MM, OVAL_INSET_MM = 2.5, 2.0, 1.5, 2.0
# Not skin by colour, against the zone's median CIELAB: far darker (hair, glasses frames, shadow) or of
# another hue (hair, frames, backgrounds); a dark cut grows by DARK_GROW_MM to take the frame's edge.
MAX_DARKER_L, MAX_LESS_RED_A, MAX_B_DIFFERENCE, DARK_GROW_MM = 15.0, 9.0, 12.0, 1.0
# Brighter than the zone's median by this much (L*), a pale pixel is a highlight on skin, not hair.
HIGHLIGHT_MIN_BRIGHTER_L = 8.0
# A patch extends this far beyond its zone so filters read no border inside the zone.
PATCH_MARGIN_MM = 4.0
# A zone needs this share of its area inside the photo, and this share of it as skin, to be measured.
MIN_INSIDE_SHARE = 0.8
MIN_SKIN_SHARE = 0.3


@dataclass(frozen=True)
class Patch:
    """One zone resampled at a fixed scale: upright RGB, and which of its pixels are the zone's skin."""

    zone: str
    px_per_mm: float
    rgb: NDArray[np.uint8]
    skin: NDArray[np.bool_]
    zone_mask: NDArray[np.bool_]  # the zone's outline, before skin and feature cuts


class PatchUnavailable(Exception):
    """A zone could not be cut at the asked scale; `reason` is one of REASONS."""

    def __init__(self, zone: str, reason: str) -> None:
        super().__init__(f"{zone}: {reason}")
        self.zone = zone
        self.reason = reason


@dataclass(frozen=True)
class FaceFrame:
    """The levelled millimetre frame of one face: photo -> mm is a similarity transform."""

    matrix: NDArray[np.float64]  # 2x3, photo pixels -> mm
    points_mm: NDArray[np.float64]  # the 468 landmarks in mm [468, 2]
    px_per_mm: float

    @classmethod
    def of(cls, points: NDArray[np.float32], scale: PhysicalScale) -> FaceFrame:
        p = points[:, :2].astype(np.float64)
        right = p[list(RIGHT_EYE_CORNERS)].mean(axis=0)
        left = p[list(LEFT_EYE_CORNERS)].mean(axis=0)
        roll = math.atan2(left[1] - right[1], left[0] - right[0])
        cos, sin = math.cos(-roll) / scale.px_per_mm, math.sin(-roll) / scale.px_per_mm
        rotation = np.array([[cos, -sin], [sin, cos]])
        origin = rotation @ ((right + left) / 2.0)
        matrix = np.concatenate([rotation, -origin[:, None]], axis=1)
        return cls(matrix=matrix, points_mm=p @ rotation.T - origin, px_per_mm=scale.px_per_mm)

    def at(self, indices: tuple[int, ...]) -> NDArray[np.float64]:
        return self.points_mm[list(indices)]


def zone_outline(frame: FaceFrame, zone: str) -> NDArray[np.float64]:
    """A zone's polygon in the face frame, millimetres [N, 2]."""
    up = np.array([0.0, -ABOVE_BROWS_MM])
    if zone == "forehead":
        arc = frame.at(_FOREHEAD_ARC)
        centre = frame.points_mm.mean(axis=0)
        inward = centre - arc
        inward /= np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-6)
        return np.concatenate([frame.at(_BROW_TOPS) + up, (arc + inward * BELOW_ARC_MM)[::-1]])
    if zone == "glabella":
        return np.concatenate([frame.at((107, 336)) + up, frame.at(_GLABELLA_BOTTOM)])
    side = 0 if zone.startswith("right_") else 1
    if zone.endswith("crows_feet"):
        corner = frame.at((_OUTER_CORNERS[side],))[0]
        near, far, top, bottom = CROWS_FEET_MM
        outward = -1.0 if side == 0 else 1.0  # the subject's right is towards -x
        x0, x1 = corner[0] + outward * near, corner[0] + outward * far
        return np.array(
            [[x0, corner[1] + top], [x1, corner[1] + top], [x1, corner[1] + bottom], [x0, corner[1] + bottom]]
        )
    if zone.endswith("under_eye") or zone.endswith("infraorbital"):
        top, bottom = (
            (UNDER_LID_MM, UNDER_LID_MM + UNDER_EYE_DEPTH_MM)
            if zone.endswith("under_eye")
            else INFRAORBITAL_MM
        )
        lid = frame.at(_LOWER_LIDS[side])
        upper = lid + np.array([0.0, top])
        lower = lid + np.array([0.0, bottom])
        return np.concatenate([upper, lower[::-1]])
    if zone.endswith("nasolabial"):
        return frame.at(_NASOLABIAL[side])  # a polyline, drawn as a band
    if zone in REGION_POLYGONS:
        return frame.at(REGION_POLYGONS[zone])
    raise ValueError(f"unknown zone {zone!r}")


class PatchCutter:
    """Cuts zones out of a decoded photo at a fixed pixels-per-millimetre."""

    def cut(
        self,
        rgb: NDArray[np.uint8],
        points: NDArray[np.float32] | None,
        scale: PhysicalScale | None,
        zone: str,
        px_per_mm: float,
    ) -> Patch:
        """The zone's patch at `px_per_mm`; raises PatchUnavailable."""
        if points is None or scale is None:
            raise PatchUnavailable(zone, "no_scale")
        if scale.px_per_mm < px_per_mm:
            raise PatchUnavailable(zone, "photo_too_small")
        frame = FaceFrame.of(points, scale)
        outline = zone_outline(frame, zone)
        band = NASOLABIAL_WIDTH_MM / 2.0 if zone.endswith("nasolabial") else 0.0
        low = outline.min(axis=0) - PATCH_MARGIN_MM - band
        high = outline.max(axis=0) + PATCH_MARGIN_MM + band
        size = math.ceil(float(max(high - low)) * px_per_mm)
        # photo -> patch: into mm, shift the box's corner to the origin, then to patch pixels.
        to_patch = frame.matrix * px_per_mm
        to_patch[:, 2] -= low * px_per_mm
        alignment = Alignment(matrix=to_patch, size=size)
        patch = resample(rgb, to_patch, size, px_per_mm / scale.px_per_mm)
        inside = _inside(alignment, rgb.shape[1], rgb.shape[0])

        def draw(polygon_mm: NDArray[np.float64], canvas: NDArray[np.uint8], closed: bool = True) -> None:
            pixels = (polygon_mm - low) * px_per_mm
            if closed:
                cv2.fillPoly(canvas, [fixed_point(pixels)], 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS)
            else:
                thickness = max(1, round(NASOLABIAL_WIDTH_MM * px_per_mm))
                cv2.polylines(canvas, [np.round(pixels - 0.5).astype(np.int32)], False, 1, thickness)

        zone_canvas = np.zeros((size, size), dtype=np.uint8)
        draw(outline, zone_canvas, closed=not zone.endswith("nasolabial"))
        oval = np.zeros_like(zone_canvas)
        draw(frame.at(FACE_OVAL), oval)
        inside_oval = ~grow(np.asarray(oval == 0, dtype=np.uint8), max(1, round(OVAL_INSET_MM * px_per_mm)))
        zone_mask = (zone_canvas > 0) & inside_oval
        area = int(zone_mask.sum())
        if area == 0 or (zone_mask & inside).sum() < MIN_INSIDE_SHARE * area:
            raise PatchUnavailable(zone, "outside_photo")
        features = np.zeros_like(zone_canvas)
        for indices, margin in (
            (RIGHT_EYE, EYE_MARGIN_MM),
            (LEFT_EYE, EYE_MARGIN_MM),
            (LIPS, LIP_MARGIN_MM),
            *((nostril, LIP_MARGIN_MM) for nostril in NOSTRILS),
        ):
            canvas = np.zeros_like(zone_canvas)
            draw(frame.at(indices), canvas)
            features |= grow(canvas, max(1, round(margin * px_per_mm))).astype(np.uint8)
        for brow in (RIGHT_BROW, LEFT_BROW):
            canvas = np.zeros_like(zone_canvas)
            hull = cv2.convexHull(frame.at(brow).astype(np.float32))[:, 0].astype(np.float64)
            draw(hull, canvas)
            features |= grow(canvas, max(1, round(BROW_MARGIN_MM * px_per_mm))).astype(np.uint8)
        candidate = zone_mask & inside & (features == 0)
        skin = candidate & skin_like(patch, candidate, px_per_mm)
        if skin.sum() < MIN_SKIN_SHARE * area:
            raise PatchUnavailable(zone, "outside_photo")
        return Patch(zone=zone, px_per_mm=px_per_mm, rgb=patch, skin=skin, zone_mask=zone_mask)


def _inside(alignment: Alignment, width: int, height: int) -> NDArray[np.bool_]:
    """Which of the patch's pixels lie inside a photo of `width` x `height`."""
    corners = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
    canvas = np.zeros((alignment.size, alignment.size), dtype=np.uint8)
    cv2.fillConvexPoly(
        canvas, fixed_point(alignment.to_frame(corners)), 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS
    )
    return canvas.astype(bool)


def resample(
    rgb: NDArray[np.uint8], to_patch: NDArray[np.float64], size: int, reduction: float
) -> NDArray[np.uint8]:
    """The photo warped into a `size`-pixel square patch by `to_patch` (photo -> patch, 2x3), shrunk by
    `reduction` (patch pixels per photo pixel, at most 1).

    Before the warp, the part of the photo the patch reads is blurred by a Gaussian of
    0.5 x sqrt(1 / reduction^2 - 1) photo pixels: with the photo's own pixel blur (about 0.5 pixel) that
    makes 0.5 patch pixels whatever the photo's resolution, so a patch cut from a large photo and one
    cut from its re-sent smaller copy hold the same detail (a plain bilinear warp would alias
    differently in each)."""
    height, width = rgb.shape[:2]
    sigma = 0.5 * math.sqrt(max(1.0 / reduction**2 - 1.0, 0.0))
    margin = math.ceil(3.0 * sigma) + 2
    inverse = cv2.invertAffineTransform(to_patch)
    corners = (
        np.array([[0.0, 0.0], [size, 0.0], [size, size], [0.0, size]]) @ inverse[:, :2].T + inverse[:, 2]
    )
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - margin, 0, width))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - margin, 0, height))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + margin, 0, width))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + margin, 0, height))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    part = rgb[y0:y1, x0:x1]
    if sigma > 0.05:
        part = np.asarray(cv2.GaussianBlur(part, (0, 0), sigma, borderType=cv2.BORDER_REFLECT), np.uint8)
    # The crop moves the origin; then OpenCV's centre-at-integer convention (as in alignment.py).
    matrix = to_patch.copy()
    matrix[:, 2] += to_patch[:, :2] @ np.array([x0, y0], dtype=np.float64)
    matrix[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
    warped = cv2.warpAffine(
        part, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return np.asarray(warped, dtype=np.uint8)


def skin_like(rgb: NDArray[np.uint8], reference: NDArray[np.bool_], px_per_mm: float) -> NDArray[np.bool_]:
    """Pixels of the zone's own skin colour (see MAX_DARKER_L and its neighbours)."""
    if reference.sum() < 10:
        return reference.copy()
    lab = to_lab(rgb)
    median = np.median(lab[reference], axis=0)
    dark = lab[..., 0] < median[0] - MAX_DARKER_L
    dark = grow(dark.astype(np.uint8), max(1, round(DARK_GROW_MM * px_per_mm)))
    hue = (lab[..., 1] < median[1] - MAX_LESS_RED_A) | (np.abs(lab[..., 2] - median[2]) > MAX_B_DIFFERENCE)
    # A specular highlight is paler than skin but brighter: kept, since shine is measured on it.
    highlight = lab[..., 0] >= median[0] + HIGHLIGHT_MIN_BRIGHTER_L
    return np.asarray(~dark & (~hue | highlight), dtype=bool)


def fill_square(
    rgb: NDArray[np.uint8], skin: NDArray[np.bool_], size: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """A patch as one contract slot: at the top left of a `size` square whose rest mirrors it (so a
    filter reads no edge there), skin 0 outside it; a patch larger than the square keeps its centre."""
    height, width = skin.shape
    y0, x0 = max(0, (height - size) // 2), max(0, (width - size) // 2)
    rgb, skin = rgb[y0 : y0 + size, x0 : x0 + size], skin[y0 : y0 + size, x0 : x0 + size]
    height, width = skin.shape
    # Mirror without repeating the edge pixel's neighbour twice (TensorFlow's SYMMETRIC, OpenCV's
    # REFLECT), as often as the square needs.
    rows = np.arange(size)
    period_y, period_x = 2 * height, 2 * width
    ys, xs = rows % period_y, rows % period_x
    ys = np.where(ys >= height, period_y - 1 - ys, ys)
    xs = np.where(xs >= width, period_x - 1 - xs, xs)
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:height, :width] = skin
    return np.ascontiguousarray(rgb[ys][:, xs]), mask


@dataclass(frozen=True)
class Slots:
    """Every patch slot of contract 4 for one face, and why any slot is empty ((group, zone) -> reason)."""

    rgb: NDArray[np.uint8]  # [len(contract.PATCH_SLOTS), P, P, 3]
    skin: NDArray[np.uint8]  # [len(contract.PATCH_SLOTS), P, P], 0/1
    unavailable: dict[tuple[str, str], str]


def cut_slots(
    cutter: PatchCutter,
    rgb: NDArray[np.uint8],
    points: NDArray[np.float32] | None,
    scale: PhysicalScale | None,
) -> Slots:
    """Cut every slot of contract.PATCH_SLOTS from the decoded photo (empty where a zone cannot be cut)."""
    size = contract.PATCH_SIZE_PX
    count = len(contract.PATCH_SLOTS)
    out_rgb = np.zeros((count, size, size, 3), dtype=np.uint8)
    out_skin = np.zeros((count, size, size), dtype=np.uint8)
    unavailable: dict[tuple[str, str], str] = {}
    for index, (group, zone) in enumerate(contract.PATCH_SLOTS):
        try:
            patch = cutter.cut(rgb, points, scale, zone, contract.patch_group(group).px_per_mm)
        except PatchUnavailable as exc:
            unavailable[(group, zone)] = exc.reason
            continue
        out_rgb[index], out_skin[index] = fill_square(patch.rgb, patch.skin, size)
    return Slots(rgb=out_rgb, skin=out_skin, unavailable=unavailable)
