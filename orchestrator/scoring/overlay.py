"""The overlay picture: the scored answer drawn back onto the photo, so the numbers can be seen.

Drawn from the answer alone (regions' landmark polygons, per-region scores, lesion positions, all in
photo pixels) plus the decoded photo: each visible region outlined in the colour of its worst concern's
severity, acne lesions ringed, a legend below the photo. At most MAX_SIDE_PX on the long side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from orchestrator.scoring.scorer import severity
from serving.concerns import SEVERITY_BANDS, registry

MAX_SIDE_PX = 1024
# Acne's per-region values are lesion counts, not scores: lesions are ringed instead of tinting.
# Colours (RGB) of the severity bands, green to red, and of a visible region no concern could score.
SEVERITY_RGB: dict[str, tuple[int, int, int]] = {
    "none": (46, 204, 113),
    "mild": (241, 196, 15),
    "moderate": (230, 126, 34),
    "severe": (231, 76, 60),
}
UNSCORED_RGB = (189, 195, 199)
# Cyan is far from skin and from every severity colour; the dark rim keeps it visible on pale skin.
LESION_RGB = (0, 229, 255)
RIM_RGB = (20, 20, 20)
FILL_ALPHA = 0.18
OUTLINE_PX = 2
LEGEND_BG_RGB = (24, 24, 27)
LEGEND_TEXT_RGB = (240, 240, 240)
LEGEND_ROW_PX = 26
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45


@dataclass(frozen=True)
class RegionMark:
    """One visible region as drawn: its outline in overlay pixels, colour and label."""

    name: str
    outline: NDArray[np.int32]
    rgb: tuple[int, int, int]
    label: str


def draw_overlay(photo: NDArray[np.uint8], answer: Mapping[str, Any]) -> bytes:
    """The overlay of `answer` on `photo` (RGB, upright, possibly decoded at reduced size: the answer's
    `image` block gives the full size its coordinates refer to), as PNG bytes."""
    height, width = photo.shape[:2]
    image = answer.get("image") or {}
    full_width = int(image.get("width_px") or width)
    full_height = int(image.get("height_px") or height)
    decoded_scale = min(width / full_width, height / full_height)
    items = _legend_items()
    scale = min(decoded_scale, MAX_SIDE_PX / full_width, MAX_SIDE_PX / full_height)
    # The legend sits below the photo: shrink until both fit (a narrower photo wraps the legend onto
    # more rows, so a few rounds settle it).
    for _ in range(4):
        out_width = max(1, round(full_width * scale))
        out_height = max(1, round(full_height * scale))
        legend_px = _legend_rows(items, out_width) * LEGEND_ROW_PX
        if out_height + legend_px <= MAX_SIDE_PX:
            break
        scale *= (MAX_SIDE_PX - legend_px) / (out_height + 1)
    interpolation = cv2.INTER_AREA if out_width < width else cv2.INTER_LINEAR
    canvas = np.empty((out_height + legend_px, out_width, 3), np.uint8)
    canvas[:out_height] = cv2.resize(photo, (out_width, out_height), interpolation=interpolation)
    picture = canvas[:out_height]
    marks = region_marks(answer, scale)
    _tint(picture, marks)
    for mark in marks:
        cv2.polylines(picture, [mark.outline], True, mark.rgb, OUTLINE_PX, cv2.LINE_AA)
    _ring_lesions(picture, answer, scale)
    # Labels last, so a ring never hides a region's score.
    for mark in marks:
        _label(picture, mark)
    _draw_legend(canvas[out_height:], items)
    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit 3-channel array
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def region_marks(answer: Mapping[str, Any], scale: float) -> list[RegionMark]:
    """Each visible region with a polygon, in overlay pixels (photo pixels times `scale`), coloured by
    the severity of its lowest per-region score among the scored concerns."""
    concerns: Mapping[str, Any] = answer.get("concerns") or {}
    marks = []
    for name, region in (answer.get("regions") or {}).items():
        polygon = region.get("polygon")
        if not region.get("visible") or not polygon:
            continue
        scores = [
            (value, concern)
            for concern, entry in concerns.items()
            if concern not in lesion_concerns()
            and (value := (entry.get("regions") or {}).get(name)) is not None
        ]
        if scores:
            score, concern = min(scores)
            rgb = SEVERITY_RGB[severity(score, SEVERITY_BANDS)]
            label = f"{concern.replace('_', ' ')} {score:.0f}"
        else:
            rgb, label = UNSCORED_RGB, ""
        outline = np.round(np.asarray(polygon, np.float64) * scale).astype(np.int32)
        marks.append(RegionMark(name, outline.reshape(-1, 1, 2), rgb, label))
    return marks


def lesion_radius_px(answer: Mapping[str, Any], scale: float) -> int:
    """Ring radius in overlay pixels: about 3% of the face's width, so rings read at any photo size."""
    box = (answer.get("face") or {}).get("box") or {}
    face_px = float(box.get("width") or 0) * scale
    return int(np.clip(round(face_px * 0.03), 5, 14))


def _tint(picture: NDArray[np.uint8], marks: list[RegionMark]) -> None:
    if not marks:
        return
    layer = picture.copy()
    for mark in marks:
        cv2.fillPoly(layer, [mark.outline], mark.rgb, cv2.LINE_AA)
    cv2.addWeighted(layer, FILL_ALPHA, picture, 1.0 - FILL_ALPHA, 0.0, dst=picture)


def _label(picture: NDArray[np.uint8], mark: RegionMark) -> None:
    """The worst concern and its score at the region's centre, where the region is wide enough."""
    if not mark.label:
        return
    (text_w, text_h), _ = cv2.getTextSize(mark.label, FONT, FONT_SCALE * 0.85, 1)
    x, y, w, h = cv2.boundingRect(mark.outline)
    if w < text_w:
        return
    moments = cv2.moments(mark.outline)
    if moments["m00"]:
        cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    else:
        cx, cy = x + w / 2, y + h / 2
    origin = (round(cx - text_w / 2), round(cy + text_h / 2))
    cv2.putText(picture, mark.label, origin, FONT, FONT_SCALE * 0.85, RIM_RGB, 3, cv2.LINE_AA)
    cv2.putText(picture, mark.label, origin, FONT, FONT_SCALE * 0.85, mark.rgb, 1, cv2.LINE_AA)


def lesion_concerns() -> tuple[str, ...]:
    """The concerns counted as lesions (ringed, not tinted), from the registry."""
    return tuple(record.name for record in registry() if record.raw == "lesions")


def _ring_lesions(picture: NDArray[np.uint8], answer: Mapping[str, Any], scale: float) -> None:
    concerns = answer.get("concerns") or {}
    radius = lesion_radius_px(answer, scale)
    lesions = [
        lesion for name in lesion_concerns() for lesion in (concerns.get(name) or {}).get("lesions") or []
    ]
    for lesion in lesions:
        if lesion.get("x") is None or lesion.get("y") is None:
            continue
        centre = (round(lesion["x"] * scale), round(lesion["y"] * scale))
        cv2.circle(picture, centre, radius, RIM_RGB, 4, cv2.LINE_AA)
        cv2.circle(picture, centre, radius, LESION_RGB, 2, cv2.LINE_AA)


# The legend: a title, a swatch per severity band and the lesion ring, flowing onto more rows on a
# narrow picture.
_LegendItem = tuple[str, str]  # (kind: "text" | severity name | "lesion" | "unscored", text)


def _legend_items() -> list[_LegendItem]:
    bands = [label for _, label in SEVERITY_BANDS]
    return [
        ("text", "worst concern:"),
        *((band, band) for band in bands),
        ("unscored", "not scored"),
        ("lesion", "acne lesion"),
    ]


def _item_width(item: _LegendItem) -> int:
    (text_w, _), _ = cv2.getTextSize(item[1], FONT, FONT_SCALE, 1)
    return text_w + (0 if item[0] == "text" else 20) + 14


def _layout(items: list[_LegendItem], width: int) -> list[tuple[_LegendItem, int, int]]:
    """(item, x, row) for each item, wrapping at `width`."""
    placed = []
    x, row = 8, 0
    for item in items:
        item_w = _item_width(item)
        if x > 8 and x + item_w > width:
            x, row = 8, row + 1
        placed.append((item, x, row))
        x += item_w
    return placed


def _legend_rows(items: list[_LegendItem], width: int) -> int:
    return 1 + max(row for _, _, row in _layout(items, width))


def _draw_legend(band: NDArray[np.uint8], items: list[_LegendItem]) -> None:
    band[:] = LEGEND_BG_RGB
    for (kind, text), x, row in _layout(items, band.shape[1]):
        middle = row * LEGEND_ROW_PX + LEGEND_ROW_PX // 2
        if kind == "lesion":
            cv2.circle(band, (x + 7, middle), 6, LESION_RGB, 2, cv2.LINE_AA)
        elif kind != "text":
            rgb = UNSCORED_RGB if kind == "unscored" else SEVERITY_RGB[kind]
            cv2.rectangle(band, (x, middle - 6), (x + 13, middle + 6), rgb, cv2.FILLED)
        text_x = x if kind == "text" else x + 20
        cv2.putText(band, text, (text_x, middle + 5), FONT, FONT_SCALE, LEGEND_TEXT_RGB, 1, cv2.LINE_AA)
