"""Real portraits and what the metamorphic tests plant in them: the face stage of a congress portrait,
where a region lies in the photo, and papules, spots, shine, lines and shadows drawn there. The photos
are read from ../shared/data; nothing here needs TensorFlow."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.decode.images import decode_image
from orchestrator.face.detection import Box
from orchestrator.face.stage import FaceGeometry, Geometry
from tests.conftest import DATA

FACES = DATA / "faces"
Image8 = NDArray[np.uint8]


@functools.cache
def geometry_stage() -> FaceGeometry:
    return FaceGeometry()


def photo(path: Path) -> Image8:
    return decode_image(path.read_bytes(), max_pixels=64_000_000, long_side_px=2000).rgb


@functools.cache
def portrait(bioguide: str) -> tuple[Image8, Geometry]:
    """A congress portrait (RGB) and its face stage."""
    rgb = photo(FACES / f"congress_{bioguide}.jpg")
    return rgb, geometry_stage().analyse(rgb)


def region_box(geometry: Geometry, region: str) -> Box:
    """The middle of a region's outline, in photo pixels: where plants land inside the region."""
    outline = geometry.alignment.to_photo(geometry.mask.polygons[region])
    low, high = outline.min(axis=0), outline.max(axis=0)
    inset = (high - low) * 0.2
    low, high = low + inset, high - inset
    return Box(float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1]))


def blend(rgb: Image8, alpha: NDArray[np.float32], target: NDArray[np.float32]) -> Image8:
    mixed = rgb.astype(np.float32) * (1.0 - alpha[..., None]) + target * alpha[..., None]
    return np.clip(mixed, 0, 255).round().astype(np.uint8)


def soft_discs(
    shape: tuple[int, ...], centres: list[tuple[float, float]], radius: float, strength: float
) -> NDArray[np.float32]:
    """Opacity of soft-edged discs (Gaussian profile, sigma = radius / 1.6) at (x, y) centres."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    alpha = np.zeros(shape[:2], np.float32)
    for cx, cy in centres:
        distance_sq = (xx - cx) ** 2 + (yy - cy) ** 2
        alpha = np.maximum(alpha, strength * np.exp(-0.5 * distance_sq / (radius / 1.6) ** 2))
    return alpha


def places(box: Box, relative: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    return [(box.x + fx * box.width, box.y + fy * box.height) for fx, fy in relative]


PAPULE_PLACES = ((0.2, 0.25), (0.75, 0.2), (0.45, 0.55), (0.8, 0.8), (0.2, 0.8))
SPOT_PLACES = ((0.25, 0.25), (0.75, 0.35), (0.25, 0.75), (0.7, 0.8))


def plant_papules(rgb: Image8, geometry: Geometry, region: str) -> Image8:
    """Five inflamed papules ~3 mm across: the same skin with green and blue cut by a third, which
    raises a* by 15-25 at the centre."""
    box = region_box(geometry, region)
    radius = 0.012 * geometry.face_width_px
    alpha = soft_discs(rgb.shape, places(box, PAPULE_PLACES), radius, 0.9)
    return blend(rgb, alpha, rgb.astype(np.float32) * np.array([1.0, 0.62, 0.66], np.float32))


def plant_spots(rgb: Image8, geometry: Geometry, region: str) -> Image8:
    """Four brown spots (lentigo-like, ~4 mm): the same skin darker and browner."""
    box = region_box(geometry, region)
    radius = 0.016 * geometry.face_width_px
    alpha = soft_discs(rgb.shape, places(box, SPOT_PLACES), radius, 0.9)
    return blend(rgb, alpha, rgb.astype(np.float32) * np.array([0.62, 0.55, 0.5], np.float32))


def plant_shine(rgb: Image8, geometry: Geometry, region: str) -> Image8:
    """One soft near-white, low-saturation highlight in the middle of the region."""
    box = region_box(geometry, region)
    centre = [(box.x + box.width / 2, box.y + box.height / 2)]
    alpha = soft_discs(rgb.shape, centre, 0.25 * min(box.width, box.height), 0.9)
    return blend(rgb, alpha, np.array([250.0, 248.0, 244.0], np.float32))


def plant_lines(rgb: Image8, geometry: Geometry, region: str) -> Image8:
    """Three thin, slightly curved dark lines across the region (antialiased, softened)."""
    box = region_box(geometry, region)
    ink = np.zeros(rgb.shape[:2], np.float32)
    xs = np.linspace(box.x, box.x + box.width, 30)
    thickness = max(1, round(0.006 * geometry.face_width_px))
    for row, bend in ((0.2, 0.06), (0.5, -0.05), (0.8, 0.04)):
        ys = box.y + row * box.height + bend * box.height * ((xs - xs.mean()) / (np.ptp(xs) / 2)) ** 2
        points = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.polylines(ink, [points], isClosed=False, color=1.0, thickness=thickness, lineType=cv2.LINE_AA)
    soft = np.asarray(cv2.GaussianBlur(ink, (0, 0), 0.7), np.float32)
    return blend(rgb, 0.6 * soft / soft.max(), rgb.astype(np.float32) * 0.55)


def darken_under_eyes(rgb: Image8, geometry: Geometry) -> Image8:
    """A soft dark ellipse over each under-eye region, darkening its centre by 35%."""
    yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]].astype(np.float32)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    for region in ("left_under_eye", "right_under_eye"):
        outline = geometry.alignment.to_photo(geometry.mask.polygons[region])
        (cx, cy), (width, height) = outline.mean(axis=0), np.ptp(outline, axis=0)
        spread = ((xx - cx) / (0.5 * width)) ** 2 + ((yy - cy) / (0.6 * height)) ** 2
        alpha = np.maximum(alpha, np.exp(-0.5 * spread))
    return np.clip(rgb * (1.0 - 0.35 * alpha[..., None]), 0, 255).round().astype(np.uint8)


def apply_gamma(rgb: Image8, gamma: float) -> Image8:
    return np.clip(255.0 * (rgb / 255.0) ** gamma, 0, 255).round().astype(np.uint8)


# A dozen places in a 4 x 3 grid over the middle of a region.
DOZEN_PLACES = tuple((x, y) for y in (0.15, 0.4, 0.65, 0.9) for x in (0.15, 0.5, 0.85))


def plant_inflamed_papules(rgb: Image8, geometry: Geometry, region: str) -> Image8:
    """Twelve inflamed papules ~3.5 mm across in one region: at each centre CIELAB a* +25 (redder),
    L* -8 (a raised, shadowed bump) and b* +4, fading out softly. Set in CIELAB so the papule is as
    red on dark skin as on light, where an RGB tint would change dark skin far less."""
    box = region_box(geometry, region)
    alpha = soft_discs(rgb.shape, places(box, DOZEN_PLACES), 0.014 * geometry.face_width_px, 1.0)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    lab[..., 1] += 25.0 * alpha
    lab[..., 0] -= 8.0 * alpha
    lab[..., 2] += 4.0 * alpha
    back = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.asarray(np.clip(back * 255.0, 0, 255).round(), dtype=np.uint8)
