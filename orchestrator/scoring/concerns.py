"""The seven skin concerns: which regions and which model signals each is read from.

Pure NumPy, shared by post-scoring (orchestrator/scoring/scorer.py) and by calibration fitting in export/,
so the raw values a version was calibrated on are computed exactly as they are served. For every
concern a higher raw value means more of the concern (worse skin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from serving import contract

CONCERNS: tuple[str, ...] = (
    "acne",
    "redness",
    "dark_spots",
    "wrinkles",
    "pores",
    "oiliness",
    "dark_circles",
)

_SIGNAL = {name: index for index, name in enumerate(contract.SIGNAL_NAMES)}
_REGION = {name: index for index, name in enumerate(contract.REGION_NAMES)}

ALL_REGIONS = contract.REGION_NAMES
SKIN_REGIONS = ("forehead", "left_cheek", "right_cheek", "nose", "chin")
UNDER_EYES = ("left_under_eye", "right_under_eye")
CHEEKS = ("left_cheek", "right_cheek")
T_ZONE = ("forehead", "nose", "chin")

# Where each concern is read. Wrinkles: forehead lines and the lines under the eyes and on the cheeks
# (the nasolabial side); pores: the forehead, nose and cheeks, where pores are large enough to see.
CONCERN_REGIONS: dict[str, tuple[str, ...]] = {
    "acne": SKIN_REGIONS,
    "redness": SKIN_REGIONS,
    "dark_spots": SKIN_REGIONS,
    "wrinkles": ("forehead", *UNDER_EYES, *CHEEKS),
    "pores": ("forehead", "nose", *CHEEKS),
    "oiliness": SKIN_REGIONS,
    "dark_circles": UNDER_EYES,
}
CONCERN_SIGNAL: dict[str, str] = {
    "dark_spots": "pigment_spots",
    "wrinkles": "wrinkles",
    "pores": "pores",
    "oiliness": "specular",
}
# The concerns measured by fixed filters (acne is counted), and the columns calibration is fitted on.
MEASURED: tuple[str, ...] = tuple(c for c in CONCERNS if c != "acne")
REGION_COLUMNS: tuple[tuple[str, str], ...] = tuple((c, r) for c in MEASURED for r in CONCERN_REGIONS[c])
ZONES: tuple[str, ...] = ("t_zone", "cheeks")

# A region counts only where enough of it is in the photo and looks like skin.
MIN_COVERAGE = 0.6
MIN_SKIN_FRACTION = 0.25


@dataclass(frozen=True)
class RawConcerns:
    """Raw values per concern: per region (NaN where the region is unusable) and for the face."""

    regions: dict[str, dict[str, float]]
    face: dict[str, float]
    acne_points: list[tuple[str, float, float, float]]  # (region, y_rel, x_rel, score)
    usable: dict[str, bool]

    def face_row(self) -> NDArray[np.float64]:
        """Face-level raw values in MEASURED order (NaN where unknown), as calibration sees them."""
        return np.array([self.face[c] for c in MEASURED], dtype=np.float64)

    def region_row(self) -> NDArray[np.float64]:
        """Per-region raw values in REGION_COLUMNS order (NaN where a region is unusable)."""
        return np.array([self.regions[c][r] for c, r in REGION_COLUMNS], dtype=np.float64)


def usable_regions(signals: NDArray[np.float32], coverage: tuple[float, ...]) -> dict[str, bool]:
    """Which regions are inside the photo and mostly skin."""
    skin = signals[:, _SIGNAL["skin_fraction"]]
    return {
        name: bool(coverage[i] >= MIN_COVERAGE and skin[i] >= MIN_SKIN_FRACTION)
        for i, name in enumerate(contract.REGION_NAMES)
    }


def raw_concerns(
    signals: NDArray[np.float32],
    acne_peaks: NDArray[np.float32],
    coverage: tuple[float, ...],
    acne_threshold: float,
) -> RawConcerns:
    """Turn one face's model outputs into raw concern values (higher = more of the concern)."""
    usable = usable_regions(signals, coverage)
    per_region: dict[str, dict[str, float]] = {concern: {} for concern in CONCERNS}
    points: list[tuple[str, float, float, float]] = []
    for name in contract.REGION_NAMES:
        row = _REGION[name]
        ok = usable[name]
        for concern, signal in CONCERN_SIGNAL.items():
            if name in CONCERN_REGIONS[concern]:
                per_region[concern][name] = float(signals[row, _SIGNAL[signal]]) if ok else np.nan
        if name in CONCERN_REGIONS["acne"]:
            kept = acne_peaks[row][acne_peaks[row, :, 2] >= acne_threshold] if ok else acne_peaks[row][:0]
            per_region["acne"][name] = float(len(kept)) if ok else np.nan
            points.extend((name, float(y), float(x), float(s)) for y, x, s in kept)
    # Redness against the face's own colour: a region's erythema (its median a* plus its red patches)
    # minus the median a* of the face's usable skin regions. That cancels constitutive skin colour
    # and the camera's white balance, which would otherwise dominate; it also means redness spread
    # evenly over the whole face (a flush) does not count.
    face_a = [signals[_REGION[r], _SIGNAL["lab_a"]] for r in CONCERN_REGIONS["redness"] if usable[r]]
    baseline_a = float(np.median(face_a)) if face_a else np.nan
    for name in CONCERN_REGIONS["redness"]:
        erythema = float(signals[_REGION[name], _SIGNAL["erythema"]])
        per_region["redness"][name] = erythema - baseline_a if usable[name] else np.nan
    cheek_l = _mean([signals[_REGION[c], _SIGNAL["lab_l"]] for c in CHEEKS if usable[c]])
    for name in UNDER_EYES:
        ok = usable[name] and not np.isnan(cheek_l)
        value = cheek_l - float(signals[_REGION[name], _SIGNAL["lab_l"]]) if ok else np.nan
        per_region["dark_circles"][name] = value
    face = {}
    for concern in CONCERNS:
        values = [v for v in per_region[concern].values() if not np.isnan(v)]
        if concern == "acne":
            face[concern] = float(sum(values)) if values else np.nan
        else:
            face[concern] = _mean(values)
    return RawConcerns(regions=per_region, face=face, acne_points=points, usable=usable)


def zone_values(signals: NDArray[np.float32], usable: dict[str, bool], signal: str) -> dict[str, float]:
    """Mean of one signal over the T-zone and over the cheeks (for skin type)."""
    column = _SIGNAL[signal]
    return {
        "t_zone": _mean([signals[_REGION[r], column] for r in T_ZONE if usable[r]]),
        "cheeks": _mean([signals[_REGION[r], column] for r in CHEEKS if usable[r]]),
    }


def face_lab(signals: NDArray[np.float32], usable: dict[str, bool]) -> tuple[float, float, float]:
    """Median CIELAB of the face's cheeks and forehead (the sites ITA is usually measured on)."""
    rows = [_REGION[r] for r in ("forehead", *CHEEKS) if usable[r]]
    if not rows:
        rows = [_REGION[r] for r in contract.REGION_NAMES if usable[r]]
    if not rows:
        return (np.nan, np.nan, np.nan)
    lab = np.median(signals[rows][:, [_SIGNAL["lab_l"], _SIGNAL["lab_a"], _SIGNAL["lab_b"]]], axis=0)
    return (float(lab[0]), float(lab[1]), float(lab[2]))


def _mean(values: list[float] | list[np.float32]) -> float:
    clean = [float(v) for v in values if not np.isnan(v)]
    return float(np.mean(clean)) if clean else np.nan
