"""The seven skin concerns: which regions and which model signals each is read from.

Pure NumPy, shared by post-scoring (orchestrator/scoring/scorer.py) and by calibration fitting in
export/, so the raw values a version was calibrated on are computed exactly as they are served. For
every concern a higher raw value means more of the concern (worse skin). A region counts only when the
face stage could see it and the model read enough skin in it; a concern with no such region is unknown,
never healthy.
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
_LABEL = {name: index for index, name in enumerate(contract.LABEL_NAMES)}

OTHER_SKIN = contract.OTHER_SKIN
SKIN_REGIONS = ("forehead", "left_cheek", "right_cheek", "nose", "chin")
UNDER_EYES = ("left_under_eye", "right_under_eye")
CHEEKS = ("left_cheek", "right_cheek")
T_ZONE = ("forehead", "nose", "chin")

# Where each concern is read. Wrinkles: forehead lines and the lines under the eyes and on the cheeks
# (the nasolabial side); pores: the forehead, nose and cheeks, where pores are large enough to see.
# Acne is counted over all visible skin (every label, other skin included: jaw, temples, neck, a
# close-up).
CONCERN_REGIONS: dict[str, tuple[str, ...]] = {
    "acne": contract.LABEL_NAMES,
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
# A close-up has no face regions: its measured concerns are read on its skin as one region.
CLOSEUP_CONCERNS: tuple[str, ...] = ("redness", "dark_spots", "wrinkles", "pores", "oiliness")
ZONES: tuple[str, ...] = ("t_zone", "cheeks")

# A region counts only where the mask gives it enough pixels and the model reads most of them as skin:
# 150 px of the 384 px frame is about 0.5 cm2 of skin at the aligned scale.
MIN_REGION_PIXELS = 150
MIN_SKIN_FRACTION = 0.25


@dataclass(frozen=True)
class RawConcerns:
    """Raw values per concern: per region (NaN where the region is unusable) and for the face."""

    regions: dict[str, dict[str, float]]
    face: dict[str, float]
    acne_points: list[tuple[str, float, float, float]]  # (label, y_rel, x_rel, score)
    usable: dict[str, bool]  # every label of contract.LABEL_NAMES

    def face_row(self) -> NDArray[np.float64]:
        """Face-level raw values in MEASURED order (NaN where unknown), as calibration sees them."""
        return np.array([self.face[c] for c in MEASURED], dtype=np.float64)

    def region_row(self) -> NDArray[np.float64]:
        """Per-region raw values in REGION_COLUMNS order (NaN where a region is unusable)."""
        return np.array([self.regions[c][r] for c, r in REGION_COLUMNS], dtype=np.float64)


def usable_labels(
    signals: NDArray[np.float32], pixels: dict[str, int], visible: dict[str, bool]
) -> dict[str, bool]:
    """Which labels can be read: visible to the face stage, big enough, and mostly skin to the model."""
    skin = signals[:, _SIGNAL["skin_fraction"]]
    return {
        name: bool(
            visible.get(name, True)
            and pixels.get(name, 0) >= MIN_REGION_PIXELS
            and skin[_LABEL[name]] >= MIN_SKIN_FRACTION
        )
        for name in contract.LABEL_NAMES
    }


def lesion_labels(peaks: NDArray[np.float32], labels: NDArray[np.uint8]) -> list[str | None]:
    """The mask label under each lesion candidate: the commonest skin label in its 4x4 heatmap cell,
    or, for a cell the mask left bare, in the cells around it (the model keeps candidates on cells with
    skin and on their neighbours: see export.model.skin_cells); None for empty rows."""
    size = labels.shape[0]
    names: list[str | None] = []
    for y, x, score in peaks:
        if score <= 0.0:
            names.append(None)
            continue
        row, col = min(int(y * size), size - 1), min(int(x * size), size - 1)
        top, left = row - row % 4, col - col % 4
        skin = _skin_labels(labels[top : top + 4, left : left + 4])
        if not skin.size:
            skin = _skin_labels(labels[max(0, top - 4) : top + 8, max(0, left - 4) : left + 8])
        names.append(contract.LABEL_NAMES[int(np.bincount(skin).argmax()) - 1] if skin.size else None)
    return names


def _skin_labels(cells: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.asarray(cells[cells > contract.NOT_SKIN], dtype=np.uint8)


def raw_concerns(
    signals: NDArray[np.float32],
    acne_peaks: NDArray[np.float32],
    peak_labels: list[str | None],
    usable: dict[str, bool],
    acne_threshold: float,
) -> RawConcerns:
    """Turn one face's model outputs into raw concern values (higher = more of the concern)."""
    per_region: dict[str, dict[str, float]] = {concern: {} for concern in CONCERNS}
    for concern, signal in CONCERN_SIGNAL.items():
        for name in CONCERN_REGIONS[concern]:
            ok = usable[name]
            per_region[concern][name] = float(signals[_LABEL[name], _SIGNAL[signal]]) if ok else np.nan
    points: list[tuple[str, float, float, float]] = []
    counts = dict.fromkeys(CONCERN_REGIONS["acne"], 0)
    for (y, x, score), label in zip(acne_peaks, peak_labels, strict=True):
        if label is None or score < acne_threshold or not usable[label]:
            continue
        counts[label] += 1
        points.append((label, float(y), float(x), float(score)))
    for name in CONCERN_REGIONS["acne"]:
        per_region["acne"][name] = float(counts[name]) if usable[name] else np.nan
    # Redness against the face's own colour: a region's erythema (its median a* plus its red patches)
    # minus the median a* of the face's usable skin regions. That cancels constitutive skin colour
    # and the camera's white balance, which would otherwise dominate; it also means redness spread
    # evenly over the whole face (a flush) does not count.
    face_a = [signals[_LABEL[r], _SIGNAL["lab_a"]] for r in CONCERN_REGIONS["redness"] if usable[r]]
    baseline_a = float(np.median(face_a)) if face_a else np.nan
    for name in CONCERN_REGIONS["redness"]:
        erythema = float(signals[_LABEL[name], _SIGNAL["erythema"]])
        per_region["redness"][name] = erythema - baseline_a if usable[name] else np.nan
    cheek_l = _mean([signals[_LABEL[c], _SIGNAL["lab_l"]] for c in CHEEKS if usable[c]])
    for name in UNDER_EYES:
        ok = usable[name] and not np.isnan(cheek_l)
        value = cheek_l - float(signals[_LABEL[name], _SIGNAL["lab_l"]]) if ok else np.nan
        per_region["dark_circles"][name] = value
    face: dict[str, float] = {}
    for concern in CONCERNS:
        values = [v for v in per_region[concern].values() if not np.isnan(v)]
        if concern == "acne":
            face[concern] = float(sum(values)) if values else np.nan
        else:
            face[concern] = _mean(values)
    if not any(usable[r] for r in contract.REGION_NAMES) and usable[OTHER_SKIN]:
        face.update(closeup_values(signals))
    return RawConcerns(regions=per_region, face=face, acne_points=points, usable=usable)


def closeup_values(signals: NDArray[np.float32]) -> dict[str, float]:
    """Face-level raw values of a close-up, read on its skin as one region (redness: its blotchy part,
    erythema over its own median a*)."""
    row = signals[_LABEL[OTHER_SKIN]]
    values = {c: float(row[_SIGNAL[CONCERN_SIGNAL[c]]]) for c in CLOSEUP_CONCERNS if c in CONCERN_SIGNAL}
    values["redness"] = float(row[_SIGNAL["erythema"]] - row[_SIGNAL["lab_a"]])
    return values


def zone_values(signals: NDArray[np.float32], usable: dict[str, bool], signal: str) -> dict[str, float]:
    """Mean of one signal over the T-zone and over the cheeks (for skin type)."""
    column = _SIGNAL[signal]
    return {
        "t_zone": _mean([signals[_LABEL[r], column] for r in T_ZONE if usable[r]]),
        "cheeks": _mean([signals[_LABEL[r], column] for r in CHEEKS if usable[r]]),
    }


def face_lab(signals: NDArray[np.float32], usable: dict[str, bool]) -> tuple[float, float, float]:
    """The face's skin colour: per channel, the median over its usable regions of each region's
    well-lit skin colour (a close-up: its skin). Cheeks, forehead, nose, chin and under-eyes all count:
    each is skin the landmarks vouch for, and the median keeps one odd region from moving the tone."""
    rows = [_LABEL[r] for r in contract.REGION_NAMES if usable[r]]
    if not rows and usable[OTHER_SKIN]:
        rows = [_LABEL[OTHER_SKIN]]
    if not rows:
        return (np.nan, np.nan, np.nan)
    lab = np.median(signals[rows][:, [_SIGNAL["lab_l"], _SIGNAL["lab_a"], _SIGNAL["lab_b"]]], axis=0)
    return (float(lab[0]), float(lab[1]), float(lab[2]))


def _mean(values: list[float] | list[np.float32]) -> float:
    clean = [float(v) for v in values if not np.isnan(v)]
    return float(np.mean(clean)) if clean else np.nan
