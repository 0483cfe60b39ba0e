"""Raw concern values from the model's signals, by the rules of the concern registry (serving/concerns.py).

Pure NumPy, shared by post-scoring (orchestrator/scoring/scorer.py) and by calibration fitting in
export/, so the raw values a version was calibrated on are computed exactly as they are served. For
every concern a higher raw value means more of the concern (worse skin). A region counts only when the
face stage could see it and the model read enough skin in it; a concern with no such region is unknown,
never healthy; a concern whose signals the version does not measure is not scored by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from serving import contract
from serving.concerns import CHEEKS, T_ZONE, Concern, registry

Signals = Mapping[str, NDArray[np.float32]]

_LABEL = {name: index for index, name in enumerate(contract.LABEL_NAMES)}
OTHER_SKIN = contract.OTHER_SKIN
# Skin type is read from shine in these zones (calibration's zone columns).
ZONES: tuple[str, ...] = ("t_zone", "cheeks")
ZONE_REGIONS: dict[str, tuple[str, ...]] = {"t_zone": T_ZONE, "cheeks": CHEEKS}

# A region counts only where the mask gives it enough pixels and the model reads most of them as skin:
# 150 px of the 384 px frame is about 0.5 cm2 of skin at the aligned scale.
MIN_REGION_PIXELS = 150
MIN_SKIN_FRACTION = 0.25


@dataclass(frozen=True)
class RawConcerns:
    """Raw values per concern: per region (NaN where the region is unusable) and for the face; only the
    concerns the version measures (`measured`) have values."""

    regions: dict[str, dict[str, float]]
    face: dict[str, float]
    acne_points: list[tuple[str, float, float, float]]  # (label, y_rel, x_rel, score)
    usable: dict[str, bool]  # every label of contract.LABEL_NAMES
    measured: frozenset[str]

    def face_row(self, columns: tuple[str, ...]) -> NDArray[np.float64]:
        """Face-level raw values of `columns` (NaN where unknown or not measured)."""
        return np.array([self.face.get(c, np.nan) for c in columns], dtype=np.float64)

    def region_row(self, columns: tuple[tuple[str, str], ...]) -> NDArray[np.float64]:
        """Per-region raw values of (concern, region) `columns` (NaN where unusable or not measured)."""
        return np.array([self.regions.get(c, {}).get(r, np.nan) for c, r in columns], dtype=np.float64)


def measures(record: Concern, signals: Signals, acne: bool) -> bool:
    """Whether a version with these signals (and an acne head or not) measures the concern."""
    if record.raw == "lesions":
        return acne
    return all(name in signals for name in record.signals)


def usable_labels(signals: Signals, pixels: dict[str, int], visible: dict[str, bool]) -> dict[str, bool]:
    """Which labels can be read: visible to the face stage, big enough, and mostly skin to the model."""
    skin = signals["skin_fraction"]
    return {
        name: bool(
            visible.get(name, True)
            and pixels.get(name, 0) >= MIN_REGION_PIXELS
            and skin[_LABEL[name]] >= MIN_SKIN_FRACTION
        )
        for name in contract.LABEL_NAMES
    }


def lesion_labels(peaks: NDArray[np.float32] | None, labels: NDArray[np.uint8]) -> list[str | None]:
    """The mask label under each lesion candidate: the commonest skin label in its 4x4 heatmap cell,
    or, for a cell the mask left bare, in the cells around it (the model keeps candidates on cells with
    skin and on their neighbours: see export.model.skin_cells); None for empty rows."""
    if peaks is None:
        return []
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
    signals: Signals,
    acne_peaks: NDArray[np.float32] | None,
    peak_labels: list[str | None],
    usable: dict[str, bool],
    acne_threshold: float,
) -> RawConcerns:
    """Turn one face's model outputs into raw concern values (higher = more of the concern)."""
    per_region: dict[str, dict[str, float]] = {}
    points: list[tuple[str, float, float, float]] = []
    records = [r for r in registry() if measures(r, signals, acne_peaks is not None)]
    for record in records:
        if record.raw == "lesions":
            assert acne_peaks is not None
            per_region[record.name], points = _lesions(
                record, acne_peaks, peak_labels, usable, acne_threshold
            )
        else:
            per_region[record.name] = RULES[record.raw](record, signals, usable)
    face: dict[str, float] = {}
    for record in records:
        values = [v for v in per_region[record.name].values() if not np.isnan(v)]
        if record.raw == "lesions":
            face[record.name] = float(sum(values)) if values else np.nan
        else:
            face[record.name] = _mean(values)
    if not any(usable[r] for r in contract.REGION_NAMES) and usable[OTHER_SKIN]:
        face.update(closeup_values(signals, records))
    measured = frozenset(r.name for r in records)
    return RawConcerns(regions=per_region, face=face, acne_points=points, usable=usable, measured=measured)


def _lesions(
    record: Concern,
    acne_peaks: NDArray[np.float32],
    peak_labels: list[str | None],
    usable: dict[str, bool],
    threshold: float,
) -> tuple[dict[str, float], list[tuple[str, float, float, float]]]:
    """Lesion candidates above the threshold counted per usable region, and the candidates counted."""
    points: list[tuple[str, float, float, float]] = []
    counts = dict.fromkeys(record.regions, 0)
    for (y, x, score), label in zip(acne_peaks, peak_labels, strict=True):
        if label is None or score < threshold or not usable[label] or label not in counts:
            continue
        counts[label] += 1
        points.append((label, float(y), float(x), float(score)))
    return {name: float(counts[name]) if usable[name] else np.nan for name in record.regions}, points


def _mean_rule(record: Concern, signals: Signals, usable: dict[str, bool]) -> dict[str, float]:
    column = signals[record.signals[0]]
    return {name: float(column[_LABEL[name]]) if usable[name] else np.nan for name in record.regions}


def _above_face(record: Concern, signals: Signals, usable: dict[str, bool]) -> dict[str, float]:
    """Redness against the face's own colour: a region's erythema (its median a* plus its red patches)
    minus the median a* of the face's usable regions. That cancels constitutive skin colour and the
    camera's white balance, which would otherwise dominate; it also means redness spread evenly over
    the whole face (a flush) does not count."""
    value, base = signals[record.signals[0]], signals[record.signals[1]]
    face = [base[_LABEL[r]] for r in record.regions if usable[r]]
    baseline = float(np.median(face)) if face else np.nan
    return {
        name: float(value[_LABEL[name]]) - baseline if usable[name] else np.nan for name in record.regions
    }


def _below_cheeks(record: Concern, signals: Signals, usable: dict[str, bool]) -> dict[str, float]:
    column = signals[record.signals[0]]
    cheeks = _mean([column[_LABEL[c]] for c in CHEEKS if usable[c]])
    values = {}
    for name in record.regions:
        ok = usable[name] and not np.isnan(cheeks)
        values[name] = cheeks - float(column[_LABEL[name]]) if ok else np.nan
    return values


# Post-scoring of each raw rule of serving.concerns.RAW_RULES but "lesions" (counted apart).
RULES = {"mean": _mean_rule, "above_face": _above_face, "below_cheeks": _below_cheeks}


def closeup_values(signals: Signals, records: list[Concern]) -> dict[str, float]:
    """Face-level raw values of a close-up, read on its skin as one region (a concern read against the
    face: its first signal over its own second one, e.g. redness as erythema over its median a*)."""
    other = _LABEL[OTHER_SKIN]
    values = {}
    for record in records:
        if not record.closeup:
            continue
        if record.raw == "mean":
            values[record.name] = float(signals[record.signals[0]][other])
        elif record.raw == "above_face":
            values[record.name] = float(signals[record.signals[0]][other] - signals[record.signals[1]][other])
    return values


def zone_values(signals: Signals, usable: dict[str, bool], signal: str) -> dict[str, float]:
    """Mean of one signal over the T-zone and over the cheeks (for skin type); NaN for a version
    without the signal."""
    if signal not in signals:
        return dict.fromkeys(ZONES, np.nan)
    column = signals[signal]
    return {zone: _mean([column[_LABEL[r]] for r in ZONE_REGIONS[zone] if usable[r]]) for zone in ZONES}


def face_lab(signals: Signals, usable: dict[str, bool]) -> tuple[float, float, float]:
    """The face's skin colour: per channel, the median over its usable regions of each region's
    well-lit skin colour (a close-up: its skin). Cheeks, forehead, nose, chin and under-eyes all count:
    each is skin the landmarks vouch for, and the median keeps one odd region from moving the tone."""
    rows = [_LABEL[r] for r in contract.REGION_NAMES if usable[r]]
    if not rows and usable[OTHER_SKIN]:
        rows = [_LABEL[OTHER_SKIN]]
    if not rows:
        return (np.nan, np.nan, np.nan)
    lab = np.stack([signals["lab_l"][rows], signals["lab_a"][rows], signals["lab_b"][rows]], axis=1)
    median = np.median(lab, axis=0)
    return (float(median[0]), float(median[1]), float(median[2]))


def _mean(values: list[float] | list[np.float32]) -> float:
    clean = [float(v) for v in values if not np.isnan(v)]
    return float(np.mean(clean)) if clean else np.nan
