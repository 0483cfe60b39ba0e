"""From one photo's zone readings to one raw value per concern (or the reason it is not scored), by the
design chosen on the training part of data/ages (wrinkle zone groups and their normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.concerns.zones import Reading, zone_key
from orchestrator.face.patches import NEEDED_SCALES

CONCERNS: tuple[str, ...] = (
    "wrinkles",
    "redness",
    "dark_spots",
    "dark_circles",
    "oiliness",
    "texture",
    "pores",
)
# Wrinkle zones grouped by site: the two sides of a site are one reading (their mean).
WRINKLE_GROUPS: dict[str, tuple[str, ...]] = {
    "forehead": ("forehead",),
    "glabella": ("glabella",),
    "crows_feet": ("right_crows_feet", "left_crows_feet"),
    "under_eye": ("right_under_eye", "left_under_eye"),
    "nasolabial": ("right_nasolabial", "left_nasolabial"),
}
# A zone's measure counts when it rests on at least this many sure-skin pixels (at 1.2 px/mm, 30
# pixels are about 21 mm^2); fewer is a zone mostly hidden by hair, glasses or the photo's edge.
MIN_ZONE_PIXELS = 30.0


@dataclass(frozen=True)
class Design:
    """What the training part chose: the wrinkle response read (measures.wrinkle_responses), the sites
    combined, and each site's median and interquartile range on the training portraits (a robust
    z-score puts the sites on one scale; the combination is their plain mean)."""

    wrinkle_response: str
    wrinkle_groups: tuple[str, ...]
    centre: dict[str, float]
    spread: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {
            "wrinkle_response": self.wrinkle_response,
            "wrinkle_groups": list(self.wrinkle_groups),
            "centre": self.centre,
            "spread": self.spread,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Design:
        return cls(
            wrinkle_response=str(data["wrinkle_response"]),
            wrinkle_groups=tuple(data["wrinkle_groups"]),  # type: ignore[arg-type]
            centre=dict(data["centre"]),  # type: ignore[call-overload]
            spread=dict(data["spread"]),  # type: ignore[call-overload]
        )


def _zone(reading: Reading, zone: str, concern: str) -> dict[str, float] | None:
    return reading.zones.get(zone_key(zone, NEEDED_SCALES[concern].px_per_mm))


def wrinkle_group_values(reading: Reading, response: str) -> dict[str, float | None]:
    """Each wrinkle site's `response` (mean over its available sides), None where none is read."""
    values: dict[str, float | None] = {}
    for group, zones in WRINKLE_GROUPS.items():
        found = [
            m[response]
            for z in zones
            if (m := _zone(reading, z, "wrinkles")) is not None and m["pixels"] >= MIN_ZONE_PIXELS
        ]
        values[group] = float(np.mean(found)) if found else None
    return values


def _reason(reading: Reading, concern: str) -> str:
    if not reading.face_found:
        return "no_face"
    scale = NEEDED_SCALES[concern].px_per_mm
    reasons = {reading.unavailable.get(zone_key(z, scale)) for z in NEEDED_SCALES[concern].zones}
    for reason in ("photo_too_small", "no_scale", "outside_photo"):
        if reason in reasons:
            return reason
    return "zones_not_skin"


def concern_values(reading: Reading, design: Design) -> tuple[dict[str, float], dict[str, str]]:
    """(raw value per scored concern, reason per unscored concern) of one photo reading."""
    values: dict[str, float | None] = {}
    groups = wrinkle_group_values(reading, design.wrinkle_response)
    found = [g for g in design.wrinkle_groups if groups[g] is not None]
    # At least half of the chosen sites must be read for the combination to mean the same thing.
    if found and 2 * len(found) >= len(design.wrinkle_groups):
        values["wrinkles"] = float(
            np.mean([(groups[g] - design.centre[g]) / design.spread[g] for g in found])  # type: ignore[operator]
        )
    colour = {z: m for z in NEEDED_SCALES["redness"].zones if (m := _zone(reading, z, "redness")) is not None}
    colour = {z: m for z, m in colour.items() if m["skin"] >= MIN_ZONE_PIXELS}
    if colour:
        weights = np.array([m["skin"] for m in colour.values()])
        values["redness"] = float(np.average([m["a"] for m in colour.values()], weights=weights))
    circles = []
    for side in ("right", "left"):
        eye = _zone(reading, f"{side}_under_eye", "dark_circles")
        cheek = _zone(reading, f"{side}_cheek", "dark_circles")
        if eye is not None and cheek is not None and min(eye["skin"], cheek["skin"]) >= MIN_ZONE_PIXELS:
            circles.append(cheek["median_l"] - eye["median_l"])
    if circles:
        values["dark_circles"] = float(np.mean(circles))
    shine = [m for z in NEEDED_SCALES["oiliness"].zones if (m := _zone(reading, z, "oiliness")) is not None]
    skin = sum(m["skin"] for m in shine)
    if skin >= MIN_ZONE_PIXELS:
        values["oiliness"] = sum(m["shine"] for m in shine) / skin
    spots = [
        m for z in NEEDED_SCALES["dark_spots"].zones if (m := _zone(reading, z, "dark_spots")) is not None
    ]
    sure = sum(m["spot_pixels"] for m in spots)
    if sure >= MIN_ZONE_PIXELS:
        values["dark_spots"] = sum(m["spots"] for m in spots) / sure
    rough = [m["roughness"] for z in NEEDED_SCALES["texture"].zones if (m := _zone(reading, z, "texture"))]
    if rough:
        values["texture"] = float(np.mean(rough))
    pores = [m["pores"] for z in NEEDED_SCALES["pores"].zones if (m := _zone(reading, z, "pores"))]
    if pores:
        values["pores"] = float(np.mean(pores))
    scored = {c: v for c, v in values.items() if v is not None}
    reasons = {c: _reason(reading, c) for c in CONCERNS if c not in scored}
    return scored, reasons
