"""The overlay picture, drawn from an answer on a real photo: a PNG at most 1024 px long, outlines where
the answer's visible regions are (in the colour of each region's worst score), rings around lesions, a
legend; nothing where a region is not visible.

Each check compares the overlay with the same photo drawn from an answer that marks nothing, so only
what the marks changed is looked at.
"""

from __future__ import annotations

import copy
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from orchestrator.decode.images import decode_image
from orchestrator.scoring.overlay import (
    LESION_RGB,
    MAX_SIDE_PX,
    SEVERITY_RGB,
    UNSCORED_RGB,
    draw_overlay,
    lesion_radius_px,
)
from tests.conftest import data_dir

# A portrait larger than the overlay (1200 x 1800), and one smaller (450 x 550).
LARGE = "sn_woman_portrait.jpg"
SMALL = "congress_B001270.jpg"


def _decode(name: str, long_side_px: int = 2000) -> tuple[NDArray[np.uint8], int, int]:
    image = decode_image(
        (data_dir("faces") / name).read_bytes(), max_pixels=64_000_000, long_side_px=long_side_px
    )
    return image.rgb, image.width_px, image.height_px


def _box(width: int, height: int, x0: float, y0: float, x1: float, y1: float) -> list[list[int]]:
    """A polygon (six points, not a rectangle) inside the fractions x0..x1, y0..y1 of the photo."""
    xs = (x0 * width, (x0 + x1) / 2 * width, x1 * width)
    ya, yb = y0 * height, y1 * height
    return [
        [round(xs[0]), round(ya)],
        [round(xs[1]), round(ya - 0.02 * height)],
        [round(xs[2]), round(ya)],
        [round(xs[2]), round(yb)],
        [round(xs[1]), round(yb + 0.02 * height)],
        [round(xs[0]), round(yb)],
    ]


def _answer(width: int, height: int) -> dict[str, Any]:
    """An answer in the API's shape: three visible regions (worst scores moderate, severe, none read),
    one region read as too little skin (a polygon, but not visible), two lesions outside the regions."""
    return {
        "image": {"width_px": width, "height_px": height},
        "face": {"box": {"x": round(0.2 * width), "y": round(0.1 * height), "width": round(0.6 * width)}},
        "regions": {
            "forehead": {
                "visible": True,
                "reason": None,
                "polygon": _box(width, height, 0.2, 0.1, 0.8, 0.25),
            },
            "left_cheek": {
                "visible": True,
                "reason": None,
                "polygon": _box(width, height, 0.15, 0.45, 0.4, 0.65),
            },
            "nose": {"visible": True, "reason": None, "polygon": _box(width, height, 0.45, 0.4, 0.55, 0.55)},
            "chin": {
                "visible": False,
                "reason": "too_little_skin",
                "polygon": _box(width, height, 0.35, 0.8, 0.65, 0.92),
            },
            "right_cheek": {"visible": False, "reason": "turned_away", "polygon": None},
        },
        "concerns": {
            # Acne's region values are counts: many lesions on the forehead must not colour it.
            "acne": {
                "score": 60.0,
                "severity": "moderate",
                "regions": {"forehead": 40, "nose": 0},
                "count": 2,
                "lesions": [
                    {"region": "other_skin", "x": round(0.1 * width), "y": round(0.75 * height)},
                    {"region": "other_skin", "x": round(0.85 * width), "y": round(0.35 * height)},
                ],
            },
            "redness": {"score": 80.0, "severity": "none", "regions": {"forehead": 90.0, "left_cheek": 80.0}},
            "wrinkles": {
                "score": 40.0,
                "severity": "moderate",
                "regions": {"forehead": 20.0, "left_cheek": 5.0},
            },
            "pores": {"score": 70.0, "severity": "mild", "regions": {"forehead": None, "nose": None}},
        },
    }


def _blank(answer: dict[str, Any]) -> dict[str, Any]:
    """The same answer with nothing to draw."""
    blank = copy.deepcopy(answer)
    blank["regions"] = {}
    blank["concerns"]["acne"]["lesions"] = []
    return blank


def _png_rgb(png: bytes) -> NDArray[np.uint8]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _edge_points(polygon: list[list[int]], scale: float) -> list[tuple[int, int]]:
    """Points a quarter, half and three quarters along each edge, in overlay pixels."""
    points = np.asarray(polygon, np.float64) * scale
    samples = []
    for a, b in zip(points, np.roll(points, -1, axis=0), strict=True):
        for t in (0.25, 0.5, 0.75):
            x, y = a + t * (b - a)
            samples.append((round(x), round(y)))
    return samples


def _nearest_colour(picture: NDArray[np.uint8], point: tuple[int, int], rgb: tuple[int, int, int]) -> float:
    """Distance from `rgb` of the closest pixel within one pixel of `point` (lines are anti-aliased)."""
    x, y = point
    patch = picture[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].reshape(-1, 3).astype(np.float64)
    return float(np.min(np.linalg.norm(patch - np.asarray(rgb, np.float64), axis=1)))


@pytest.mark.parametrize(("name", "long_side_px"), [(LARGE, 2000), (LARGE, 600), (SMALL, 2000)])
def test_overlay_marks_visible_regions_by_worst_score_and_rings_lesions(name: str, long_side_px: int) -> None:
    photo, width, height = _decode(name, long_side_px)
    answer = _answer(width, height)
    overlay = _png_rgb(draw_overlay(photo, answer))
    plain = _png_rgb(draw_overlay(photo, _blank(answer)))
    assert overlay.shape == plain.shape
    assert max(overlay.shape[:2]) <= MAX_SIDE_PX
    # The picture keeps the photo's proportions; coordinates in full-size pixels map by one scale, also
    # when the photo was decoded at reduced size.
    scale = overlay.shape[1] / width
    picture_height = round(height * scale)
    assert abs(picture_height / overlay.shape[1] - height / width) < 0.01
    if width <= MAX_SIDE_PX and long_side_px >= max(width, height):
        assert overlay.shape[1] == width  # a small photo is not enlarged or shrunk
    drawn = np.any(overlay[:picture_height] != plain[:picture_height], axis=2)

    expected = {
        "forehead": SEVERITY_RGB["moderate"],
        "left_cheek": SEVERITY_RGB["severe"],
        "nose": UNSCORED_RGB,
    }
    for region, rgb in expected.items():
        points = _edge_points(answer["regions"][region]["polygon"], scale)
        close = [_nearest_colour(overlay, point, rgb) < 40 for point in points]
        assert sum(close) >= 0.9 * len(close), (region, sum(close), len(close))
    # The region the model could not read has a polygon but is not drawn.
    for x, y in _edge_points(answer["regions"]["chin"]["polygon"], scale):
        assert not drawn[y, x], ("chin", x, y)

    radius = lesion_radius_px(answer, scale)
    for lesion in answer["concerns"]["acne"]["lesions"]:
        cx, cy = lesion["x"] * scale, lesion["y"] * scale
        ring = [
            (round(cx + radius * np.cos(a)), round(cy + radius * np.sin(a)))
            for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ]
        assert all(_nearest_colour(overlay, point, LESION_RGB) < 40 for point in ring), lesion
        # Ringed, not covered: the lesion itself stays visible.
        assert not drawn[round(cy), round(cx)]
    # Outside every mark the photo is untouched.
    assert not drawn[2, 2] and not drawn[picture_height - 3, overlay.shape[1] // 2]


def test_legend_below_the_photo_shows_every_colour() -> None:
    photo, width, height = _decode(SMALL)
    overlay = _png_rgb(draw_overlay(photo, _answer(width, height)))
    picture_height = round(height * overlay.shape[1] / width)
    legend = overlay[picture_height:]
    assert legend.shape[0] >= 20, "no legend band below the photo"
    colours = {tuple(int(c) for c in pixel) for pixel in legend.reshape(-1, 3)}
    for rgb in (*SEVERITY_RGB.values(), UNSCORED_RGB):
        assert rgb in colours, rgb
    assert np.any(np.all(np.abs(legend.astype(np.int16) - LESION_RGB) < 40, axis=2)), "no lesion ring"


def test_a_narrow_tall_photo_keeps_its_legend_within_the_limit() -> None:
    photo = _decode(LARGE)[0]
    strip = np.ascontiguousarray(photo[:, : photo.shape[1] // 6])
    answer = {
        "image": {"width_px": strip.shape[1], "height_px": strip.shape[0]},
        "regions": {},
        "concerns": {},
    }
    overlay = _png_rgb(draw_overlay(strip, answer))
    assert max(overlay.shape[:2]) <= MAX_SIDE_PX
    assert overlay.shape[0] > round(strip.shape[0] * overlay.shape[1] / strip.shape[1]), "legend missing"
