"""Raw concern values from a contract-4 version's zone measures: the fixed-scale patches' readings
combined per concern by the design chosen on the training part of data/ages (reports/concerns_design.md).

Pure NumPy, shared by post-scoring and by export's design and calibration runs, so a version is
calibrated on raw values computed exactly as they are served. Every raw value grows with its concern. A
concern whose zones could not be cut is not scored, with the cutter's reason (orchestrator/face/patches.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestrator.face.patches import NEEDED_SCALES
from serving import contract

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
# Why a concern has no zone to read, most telling first (the cutter's reasons).
REASON_ORDER: tuple[str, ...] = ("photo_too_small", "no_scale", "outside_photo")
# The served version's wrinkle output; the design run reads its candidates under their own names.
SERVED_LINES = "lines"

Zones = Mapping[str, Mapping[str, float]]  # "zone@scale" -> measure -> value


def zone_key(zone: str, px_per_mm: float) -> str:
    return f"{zone}@{px_per_mm:g}"


@dataclass(frozen=True)
class Design:
    """What the training part chose: the wrinkle response read (export/concerns/measures.py), the sites
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
            "centre": dict(self.centre),
            "spread": dict(self.spread),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Design:
        return cls(
            wrinkle_response=str(data["wrinkle_response"]),
            wrinkle_groups=tuple(str(g) for g in data["wrinkle_groups"]),
            centre={str(k): float(v) for k, v in dict(data["centre"]).items()},
            spread={str(k): float(v) for k, v in dict(data["spread"]).items()},
        )


def served_zones(
    outputs: Mapping[str, NDArray[np.float32]], unavailable: Mapping[tuple[str, str], str]
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """A contract-4 answer's zone measures (output name without prefix -> [slots]) as "zone@scale" ->
    measures of the slots that were cut, and the reasons of those that were not."""
    zones: dict[str, dict[str, float]] = {}
    reasons: dict[str, str] = {}
    for index, (group, zone) in enumerate(contract.PATCH_SLOTS):
        key = zone_key(zone, contract.patch_group(group).px_per_mm)
        if (group, zone) in unavailable:
            reasons[key] = unavailable[(group, zone)]
            continue
        measured = {m.name: float(outputs[m.name][index]) for m in contract.ZONE_MEASURES if m.group == group}
        zones.setdefault(key, {}).update(measured)
    return zones, reasons


def _zone(zones: Zones, zone: str, concern: str) -> Mapping[str, float] | None:
    return zones.get(zone_key(zone, NEEDED_SCALES[concern].px_per_mm))


def wrinkle_group_values(zones: Zones, line_key: str) -> dict[str, float | None]:
    """Each wrinkle site's line strength `line_key` (mean over its read sides), None where none is read."""
    values: dict[str, float | None] = {}
    for group, members in WRINKLE_GROUPS.items():
        found = [
            m[line_key]
            for z in members
            if (m := _zone(zones, z, "wrinkles")) is not None and m["line_pixels"] >= MIN_ZONE_PIXELS
        ]
        values[group] = float(np.mean(found)) if found else None
    return values


def reason(unavailable: Mapping[str, str], concern: str) -> str:
    """Why `concern` has no value: its zones' most telling cut-out reason, else "zones_not_skin"."""
    scale = NEEDED_SCALES[concern].px_per_mm
    reasons = {unavailable.get(zone_key(z, scale)) for z in NEEDED_SCALES[concern].zones}
    for code in REASON_ORDER:
        if code in reasons:
            return code
    return "zones_not_skin"


def concern_values(
    zones: Zones, unavailable: Mapping[str, str], design: Design, line_key: str = SERVED_LINES
) -> tuple[dict[str, float], dict[str, str]]:
    """(raw value per scored concern, reason per unscored one) of one photo's zone measures."""
    values: dict[str, float] = {}
    groups = wrinkle_group_values(zones, line_key)
    found = [g for g in design.wrinkle_groups if groups[g] is not None]
    # At least half of the chosen sites must be read for the combination to mean the same thing.
    if found and 2 * len(found) >= len(design.wrinkle_groups):
        values["wrinkles"] = float(
            np.mean([(groups[g] - design.centre[g]) / design.spread[g] for g in found])  # type: ignore[operator]
        )
    colour = {z: m for z in NEEDED_SCALES["redness"].zones if (m := _zone(zones, z, "redness")) is not None}
    colour = {z: m for z, m in colour.items() if m["skin"] >= MIN_ZONE_PIXELS}
    if colour:
        weights = np.array([m["skin"] for m in colour.values()])
        values["redness"] = float(np.average([m["lab_a"] for m in colour.values()], weights=weights))
    circles = [v for side in ("right", "left") if (v := _circle(zones, side)) is not None]
    if circles:
        values["dark_circles"] = float(np.mean(circles))
    shine = [m for z in NEEDED_SCALES["oiliness"].zones if (m := _zone(zones, z, "oiliness")) is not None]
    skin = sum(m["skin"] for m in shine)
    if skin >= MIN_ZONE_PIXELS:
        values["oiliness"] = sum(m["shine"] for m in shine) / skin
    spots = [m for z in NEEDED_SCALES["dark_spots"].zones if (m := _zone(zones, z, "dark_spots")) is not None]
    sure = sum(m["spot_pixels"] for m in spots)
    if sure >= MIN_ZONE_PIXELS:
        values["dark_spots"] = sum(m["spots"] for m in spots) / sure
    pores = [m["pores"] for z in NEEDED_SCALES["pores"].zones if (m := _zone(zones, z, "pores")) is not None]
    if pores:
        values["pores"] = float(np.mean(pores))
    reasons = {c: reason(unavailable, c) for c in NEEDED_SCALES if c not in values}
    return values, reasons


def _circle(zones: Zones, side: str) -> float | None:
    """Cheek median ITA minus the infraorbital band's on one side (None unless both are read): the
    under-eye is compared with the cheek in L* and its tint together (ITA falls with darker and with
    browner skin), as photographic dark-circle gradings do."""
    eye = _zone(zones, f"{side}_infraorbital", "dark_circles")
    cheek = _zone(zones, f"{side}_cheek", "dark_circles")
    if eye is None or cheek is None or min(eye["skin"], cheek["skin"]) < MIN_ZONE_PIXELS:
        return None
    return cheek["median_ita"] - eye["median_ita"]


def region_values(zones: Zones, line_key: str = SERVED_LINES) -> dict[str, dict[str, float]]:
    """Per concern, the raw value of each answer region (contract.REGION_NAMES) read as a zone of its own
    name: the part of the concern's value that region holds (wrinkles: the forehead's lines; dark
    circles: each side's cheek-minus-under-eye, on the under-eye)."""
    out: dict[str, dict[str, float]] = {c: {} for c in NEEDED_SCALES}
    for region in contract.REGION_NAMES:
        m = _zone(zones, region, "wrinkles")
        if region == "forehead" and m is not None and m["line_pixels"] >= MIN_ZONE_PIXELS:
            out["wrinkles"][region] = m[line_key]
        if (m := _zone(zones, region, "redness")) is not None and m["skin"] >= MIN_ZONE_PIXELS:
            if region in NEEDED_SCALES["redness"].zones:
                out["redness"][region] = m["lab_a"]
            if region in NEEDED_SCALES["oiliness"].zones:
                out["oiliness"][region] = m["shine"] / m["skin"]
        if region.endswith("under_eye") and (v := _circle(zones, region.split("_")[0])) is not None:
            out["dark_circles"][region] = v
        m = _zone(zones, region, "dark_spots")
        if m is not None and m["spot_pixels"] >= MIN_ZONE_PIXELS:
            out["dark_spots"][region] = m["spots"] / m["spot_pixels"]
        if (m := _zone(zones, region, "pores")) is not None:
            out["pores"][region] = m["pores"]
    return out
