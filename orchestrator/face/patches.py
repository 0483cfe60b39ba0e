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
    median_colour,
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


@dataclass(frozen=True)
class _Layout:
    """Where one zone's patch lies: the zone's outline and the patch's top-left corner (mm), the
    patch's side (pixels) and the map from photo pixels to patch pixels (2x3)."""

    outline: NDArray[np.float64]
    low: NDArray[np.float64]
    size: int
    to_patch: NDArray[np.float64]

    @classmethod
    def of(cls, frame: FaceFrame, zone: str, px_per_mm: float) -> _Layout:
        outline = zone_outline(frame, zone)
        band = NASOLABIAL_WIDTH_MM / 2.0 if zone.endswith("nasolabial") else 0.0
        low = outline.min(axis=0) - PATCH_MARGIN_MM - band
        high = outline.max(axis=0) + PATCH_MARGIN_MM + band
        size = math.ceil(float(max(high - low)) * px_per_mm)
        # photo -> patch: into mm, shift the box's corner to the origin, then to patch pixels.
        to_patch = frame.matrix * px_per_mm
        to_patch[:, 2] -= low * px_per_mm
        return cls(outline=outline, low=low, size=size, to_patch=to_patch)


def _features(frame: FaceFrame) -> list[tuple[NDArray[np.float64], float]]:
    """The outlines (mm) cut out of every zone, each with its margin (mm): eyes with their lashes,
    lips, nostrils, and the brows' convex hulls (stray hairs)."""
    features = [
        (frame.at(indices), margin)
        for indices, margin in (
            (RIGHT_EYE, EYE_MARGIN_MM),
            (LEFT_EYE, EYE_MARGIN_MM),
            (LIPS, LIP_MARGIN_MM),
            *((nostril, LIP_MARGIN_MM) for nostril in NOSTRILS),
        )
    ]
    for brow in (RIGHT_BROW, LEFT_BROW):
        hull = cv2.convexHull(frame.at(brow).astype(np.float32))[:, 0].astype(np.float64)
        features.append((hull, BROW_MARGIN_MM))
    return features


class _ScaledFace:
    """One face's zones at one scale: their layouts, and the photo pre-blurred once for all of them.

    The blur is shared: every zone reads the part of the photo it needs from one blurred crop that
    covers them all. A zone reads its own crop's pixels at least 3 sigma + 1 pixels inside that crop's
    edge (_read_box's margin; where the photo's edge is nearer, both crops end there and mirror it
    alike), so those pixels are blurred from the same neighbours either way and the patch is the
    same as one blurred from the zone's own crop; zones of a group overlap (the forehead's
    square patch alone reaches down to the mouth), so one blur costs about what the largest zone's does.
    """

    def __init__(
        self, rgb: NDArray[np.uint8], frame: FaceFrame, px_per_mm: float, zones: tuple[str, ...]
    ) -> None:
        self.rgb, self.frame, self.px_per_mm = rgb, frame, px_per_mm
        self.features = _features(frame)
        self.layouts = {zone: _Layout.of(frame, zone, px_per_mm) for zone in zones}
        self.sigma = _prefilter_sigma(px_per_mm / frame.px_per_mm)
        self.source, self.origin = rgb, (0, 0)
        self.boxes = {
            zone: _read_box(rgb.shape, layout.to_patch, layout.size, self.sigma)
            for zone, layout in self.layouts.items()
        }
        boxes = [box for box in self.boxes.values() if box[2] > box[0] and box[3] > box[1]]
        if boxes and self.sigma > 0.05:
            x0, y0 = min(box[0] for box in boxes), min(box[1] for box in boxes)
            x1, y1 = max(box[2] for box in boxes), max(box[3] for box in boxes)
            self.source = np.asarray(
                cv2.GaussianBlur(rgb[y0:y1, x0:x1], (0, 0), self.sigma, borderType=cv2.BORDER_REFLECT),
                np.uint8,
            )
            self.origin = (x0, y0)

    def resample(self, zone: str) -> NDArray[np.uint8]:
        """The zone's patch, warped from the (blurred) photo."""
        layout = self.layouts[zone]
        x0, y0, x1, y1 = self.boxes[zone]
        if x1 <= x0 or y1 <= y0:
            return np.zeros((layout.size, layout.size, 3), dtype=np.uint8)
        ox, oy = self.origin
        return _warp(self.source[y0 - oy : y1 - oy, x0 - ox : x1 - ox], x0, y0, layout.to_patch, layout.size)

    def cut(self, zone: str) -> Patch:
        """The zone's patch; raises PatchUnavailable."""
        layout, px_per_mm = self.layouts[zone], self.px_per_mm
        size, low = layout.size, layout.low
        patch = self.resample(zone)
        height, width = self.rgb.shape[:2]
        inside = _inside(Alignment(matrix=layout.to_patch, size=size), width, height)

        def draw(polygon_mm: NDArray[np.float64], canvas: NDArray[np.uint8], closed: bool = True) -> None:
            pixels = (polygon_mm - low) * px_per_mm
            if closed:
                cv2.fillPoly(canvas, [fixed_point(pixels)], 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS)
            else:
                thickness = max(1, round(NASOLABIAL_WIDTH_MM * px_per_mm))
                cv2.polylines(canvas, [np.round(pixels - 0.5).astype(np.int32)], False, 1, thickness)

        zone_canvas = np.zeros((size, size), dtype=np.uint8)
        draw(layout.outline, zone_canvas, closed=not zone.endswith("nasolabial"))
        x, y, w, h = cv2.boundingRect(zone_canvas)
        if w == 0:
            raise PatchUnavailable(zone, "outside_photo")
        # Every growth (cut-outs' margins, the oval's inset, dark pixels) only matters on the zone's
        # own pixels, and a pixel lies within r of a grown area only through pixels within r of it
        # (a chamfer distance is never below the chessboard one): so all of them are computed on a
        # window around the zone, widened by the largest radius, not on the whole patch.
        radii = {margin: max(1, round(margin * px_per_mm)) for margin in (OVAL_INSET_MM, DARK_GROW_MM)}
        radii.update({margin: max(1, round(margin * px_per_mm)) for _, margin in self.features})
        reach = max(radii.values()) + 2
        window = (slice(max(0, y - reach), y + h + reach), slice(max(0, x - reach), x + w + reach))
        oval = np.zeros_like(zone_canvas)
        draw(self.frame.at(FACE_OVAL), oval)
        inside_oval = ~grow(np.asarray(oval[window] == 0, dtype=np.uint8), radii[OVAL_INSET_MM])
        zone_mask = (zone_canvas[window] > 0) & inside_oval
        inside_window = inside[window]
        area = int(zone_mask.sum())
        if area == 0 or (zone_mask & inside_window).sum() < MIN_INSIDE_SHARE * area:
            raise PatchUnavailable(zone, "outside_photo")
        # Cut-outs of one margin grow together: a distance to the union is the least of the distances.
        canvases: dict[int, NDArray[np.uint8]] = {}
        top, bottom, left, right = window[0].start, y + h + reach, window[1].start, x + w + reach
        for polygon, margin in self.features:
            # A cut-out whose outline lies wholly outside the window draws no pixel in it.
            pixels = (polygon - low) * px_per_mm
            (x_low, y_low), (x_high, y_high) = pixels.min(axis=0), pixels.max(axis=0)
            if x_high < left - 1 or x_low > right + 1 or y_high < top - 1 or y_low > bottom + 1:
                continue
            canvas = canvases.setdefault(radii[margin], np.zeros_like(zone_canvas))
            draw(polygon, canvas)
        features = np.zeros(zone_mask.shape, dtype=bool)
        for radius, canvas in canvases.items():
            near = canvas[window]
            if near.any():
                features |= grow(near, radius)
        candidate = zone_mask & inside_window & ~features
        skin = candidate & skin_like(patch[window], candidate, px_per_mm)
        if skin.sum() < MIN_SKIN_SHARE * area:
            raise PatchUnavailable(zone, "outside_photo")
        whole_skin = np.zeros((size, size), dtype=bool)
        whole_skin[window] = skin
        whole_zone = np.zeros((size, size), dtype=bool)
        whole_zone[window] = zone_mask
        return Patch(zone=zone, px_per_mm=px_per_mm, rgb=patch, skin=whole_skin, zone_mask=whole_zone)


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
        cut = self.cut_zones(rgb, points, scale, (zone,), px_per_mm)[zone]
        if isinstance(cut, PatchUnavailable):
            raise cut
        return cut

    def cut_zones(
        self,
        rgb: NDArray[np.uint8],
        points: NDArray[np.float32] | None,
        scale: PhysicalScale | None,
        zones: tuple[str, ...],
        px_per_mm: float,
    ) -> dict[str, Patch | PatchUnavailable]:
        """Each of `zones` at `px_per_mm`, or why it could not be cut (the photo is blurred once for all)."""
        if points is None or scale is None:
            return {zone: PatchUnavailable(zone, "no_scale") for zone in zones}
        if scale.px_per_mm < px_per_mm:
            return {zone: PatchUnavailable(zone, "photo_too_small") for zone in zones}
        face = _ScaledFace(rgb, FaceFrame.of(points, scale), px_per_mm, zones)
        cuts: dict[str, Patch | PatchUnavailable] = {}
        for zone in zones:
            try:
                cuts[zone] = face.cut(zone)
            except PatchUnavailable as exc:
                cuts[zone] = exc
        return cuts


def _inside(alignment: Alignment, width: int, height: int) -> NDArray[np.bool_]:
    """Which of the patch's pixels lie inside a photo of `width` x `height`."""
    corners = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
    canvas = np.zeros((alignment.size, alignment.size), dtype=np.uint8)
    cv2.fillConvexPoly(
        canvas, fixed_point(alignment.to_frame(corners)), 1, lineType=cv2.LINE_8, shift=FIXED_POINT_BITS
    )
    return canvas.astype(bool)


def _prefilter_sigma(reduction: float) -> float:
    """The Gaussian (photo pixels) a photo is blurred by before its patch is warped out of it, shrunk
    by `reduction` (patch pixels per photo pixel, at most 1): 0.5 x sqrt(1 / reduction^2 - 1). With
    the photo's own pixel blur (about 0.5 pixel) that makes 0.5 patch pixels whatever the photo's
    resolution, so a patch cut from a large photo and one cut from its re-sent smaller copy hold the
    same detail (a plain bilinear warp would alias differently in each)."""
    return 0.5 * math.sqrt(max(1.0 / reduction**2 - 1.0, 0.0))


def _read_box(
    shape: tuple[int, ...], to_patch: NDArray[np.float64], size: int, sigma: float
) -> tuple[int, int, int, int]:
    """The part of the photo (x0, y0, x1, y1) a patch reads, with room for the blur: each pixel the
    warp reads lies at least ceil(3 sigma) + 1 pixels inside it, beyond the blur kernel's reach, unless
    the photo's own edge is nearer."""
    height, width = shape[:2]
    margin = math.ceil(3.0 * sigma) + 2
    inverse = cv2.invertAffineTransform(to_patch)
    corners = (
        np.array([[0.0, 0.0], [size, 0.0], [size, size], [0.0, size]]) @ inverse[:, :2].T + inverse[:, 2]
    )
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - margin, 0, width))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - margin, 0, height))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + margin, 0, width))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + margin, 0, height))
    return x0, y0, x1, y1


def _warp(
    part: NDArray[np.uint8], x0: int, y0: int, to_patch: NDArray[np.float64], size: int
) -> NDArray[np.uint8]:
    """`part`, the photo's pixels from (x0, y0) on, warped into the patch."""
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
    median = median_colour(lab, reference)
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
    # Mirrored without repeating the edge pixel (TensorFlow's SYMMETRIC, OpenCV's REFLECT), as often as
    # the square needs: OpenCV's border reflects again past the patch's own width.
    square = cv2.copyMakeBorder(rgb, 0, size - height, 0, size - width, cv2.BORDER_REFLECT)
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:height, :width] = skin
    return np.asarray(square, dtype=np.uint8), mask


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
    cuts = {
        (group.name, zone): cut
        for group in contract.PATCH_GROUPS
        for zone, cut in cutter.cut_zones(rgb, points, scale, group.zones, group.px_per_mm).items()
    }
    for index, slot in enumerate(contract.PATCH_SLOTS):
        cut = cuts[slot]
        if isinstance(cut, PatchUnavailable):
            unavailable[slot] = cut.reason
            continue
        out_rgb[index], out_skin[index] = fill_square(cut.rgb, cut.skin, size)
    return Slots(rgb=out_rgb, skin=out_skin, unavailable=unavailable)
