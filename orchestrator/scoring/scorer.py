"""Post-scoring: raw model outputs to 0-100 scores, severities, skin tone and skin type.

Each model version carries its own calibration (assets.extra/calibration.skops, fitted in export/), and
a response is always scored with the calibration of the version that produced it. Scores are higher for
healthier skin: for measured concerns, 100 minus the percentile of the raw value among the version's
reference faces; for acne, from the ACNE04 severity grade the lesion count predicts.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skops.io
from numpy.typing import NDArray

from orchestrator.errors import ModelBadResponse
from orchestrator.predict.prediction import Prediction
from orchestrator.scoring.concerns import (
    CONCERN_REGIONS,
    CONCERNS,
    MEASURED,
    REGION_COLUMNS,
    ZONES,
    face_lab,
    raw_concerns,
    zone_values,
)
from serving import contract

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT = 3
# Concerns that need colour; a greyscale photo cannot show them.
COLOUR_CONCERNS = ("redness",)
# Score bands for severity: a score at or above the bound earns the label.
SEVERITY_BANDS: tuple[tuple[float, str], ...] = ((75, "none"), (50, "mild"), (25, "moderate"), (0, "severe"))
# ACNE04's grades (Wu et al., ICCV 2019, after Hayashi's lesion-count bands).
ACNE_GRADES: tuple[str, ...] = ("mild", "moderate", "severe", "very_severe")
# ITA categories (del Bino & Bernerd, Br J Dermatol 169 Suppl 3, 2013): lower bound in degrees.
ITA_CATEGORIES: tuple[tuple[float, str], ...] = (
    (55, "very_light"),
    (41, "light"),
    (28, "intermediate"),
    (10, "tan"),
    (-30, "brown"),
    (-math.inf, "dark"),
)
SKIN_TYPES: tuple[str, ...] = ("oily", "dry", "normal", "combination")


@dataclass(frozen=True)
class Calibration:
    """What post-scoring needs from one model version (the contents of calibration.skops).

    Each QuantileTransformer is fitted on all its columns at once (column names stored beside it), so
    a request costs one transform per table, not one per concern and region.
    """

    version: int
    acne_threshold: float
    acne_grade_model: Any  # sklearn classifier: [[log1p(lesion count over all skin)]] -> ACNE04 grade 0..3
    face: Any  # QuantileTransformer over face-level raw values, columns MEASURED
    regions: Any  # QuantileTransformer over per-region raw values, columns REGION_COLUMNS
    zones: Any  # QuantileTransformer over shine of the T-zone and the cheeks, columns ZONES
    reference: dict[str, Any]  # what the percentiles are relative to

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Check the stored format and columns against this code; raises ValueError on a mismatch."""
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"calibration format {data.get('format')!r}, expected {CALIBRATION_FORMAT}")
        columns = data["columns"]
        expected = {
            "face": list(MEASURED),
            "regions": [list(c) for c in REGION_COLUMNS],
            "zones": list(ZONES),
        }
        for table, names in expected.items():
            if [list(c) if isinstance(c, list | tuple) else c for c in columns[table]] != names:
                raise ValueError(f"calibration columns of {table!r} do not match this code")
        return cls(
            version=int(data["version"]),
            acne_threshold=float(data["acne_threshold"]),
            acne_grade_model=data["acne_grade_model"],
            face=data["face"],
            regions=data["regions"],
            zones=data["zones"],
            reference=dict(data["reference"]),
        )


def load_calibration(path: Path) -> Calibration:
    """Read a version's calibration.skops (only skops' default trusted types); raises ValueError."""
    try:
        data = skops.io.load(path, trusted=[])
    except Exception as exc:  # skops raises many kinds on a bad file
        raise ValueError(f"cannot read calibration {path}: {exc}") from exc
    return Calibration.from_dict(data)


def severity(score: float) -> str:
    for bound, label in SEVERITY_BANDS:
        if score >= bound:
            return label
    return SEVERITY_BANDS[-1][1]


def ita_category(ita_deg: float) -> str:
    for bound, label in ITA_CATEGORIES:
        if ita_deg > bound:
            return label
    return ITA_CATEGORIES[-1][1]


def ita_from_lab(lab_l: float, lab_b: float) -> float:
    """ITA = atan((L* - 50) / b*) in degrees (Chardon et al., Int J Cosmet Sci 13, 1991)."""
    return math.degrees(math.atan2(lab_l - 50.0, lab_b))


class CalibrationProblem(Exception):
    """Why a version's calibration cannot be used, in words safe to show a client."""


class QuantileTable:
    """A fitted uniform QuantileTransformer read for one row at a time.

    scikit-learn's transform validates its input on every call, which costs more than the lookup for a
    single face; this does the same arithmetic as QuantileTransformer._transform_col for
    output_distribution="uniform" (mean of the ascending and descending interpolation, so repeated
    quantiles map to the middle of their run; exact bounds map to 0 and 1; NaN stays NaN) straight from
    the fitted quantiles_ and references_. tests/test_scoring.py checks it against transform().
    """

    def __init__(self, transformer: Any) -> None:
        if transformer.output_distribution != "uniform":
            raise ValueError("post-scoring expects uniform quantile transformers")
        quantiles = np.asarray(transformer.quantiles_, dtype=np.float64)
        references = np.asarray(transformer.references_, dtype=np.float64)
        self.columns = [
            (q, -q[::-1], references, -references[::-1]) for q in np.ascontiguousarray(quantiles.T)
        ]

    def percentiles(self, row: NDArray[np.float64]) -> NDArray[np.float64]:
        """Percentiles (0..1, NaN stays NaN) of one row of raw values among the reference faces."""
        if row.shape != (len(self.columns),):
            raise ValueError(f"expected {len(self.columns)} values, got shape {row.shape}")
        out = np.full(len(self.columns), np.nan)
        for j, (q, q_desc, ref, ref_desc) in enumerate(self.columns):
            x = float(row[j])
            if math.isnan(x):
                continue
            if x == q[0]:
                out[j] = 0.0
            elif x == q[-1]:
                out[j] = 1.0
            else:
                out[j] = 0.5 * (float(np.interp(x, q, ref)) - float(np.interp(-x, q_desc, ref_desc)))
        return np.clip(out, 0.0, 1.0)


def _score(percentile: float) -> float | None:
    return None if np.isnan(percentile) else round(100.0 * (1.0 - float(percentile)), 1)


def _round(value: float, digits: int = 1) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), digits)


class PostScorer:
    """Scores one version's outputs with that version's calibration."""

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        self._face = QuantileTable(calibration.face)
        self._regions = QuantileTable(calibration.regions)
        self._zones = QuantileTable(calibration.zones)

    def score(
        self,
        prediction: Prediction,
        peak_labels: list[str | None],
        usable: dict[str, bool],
        colour: bool = True,
    ) -> dict[str, Any]:
        """The concerns, skin tone, skin type and overall parts of a report. `peak_labels` names the
        mask label under each lesion candidate, `usable` which labels can be read; with `colour`
        False (a greyscale photo) the colour concerns and the skin tone are unknown, and the overall
        score leaves them out."""
        cal = self.calibration
        raw = raw_concerns(prediction.signals, prediction.acne_peaks, peak_labels, usable, cal.acne_threshold)
        face = dict(zip(MEASURED, self._face.percentiles(raw.face_row()), strict=True))
        regions = dict(zip(REGION_COLUMNS, self._regions.percentiles(raw.region_row()), strict=True))
        concerns: dict[str, Any] = {"acne": self._acne(raw.face["acne"], raw.regions["acne"])}
        for concern in MEASURED:
            known = colour or concern not in COLOUR_CONCERNS
            score = _score(face[concern]) if known else None
            concerns[concern] = {
                "score": score,
                "severity": None if score is None else severity(score),
                "regions": {
                    region: _score(regions[(concern, region)]) if known else None
                    for region in CONCERN_REGIONS[concern]
                },
                "raw": _round(raw.face[concern], 4) if known else None,
            }
        concerns["acne"]["lesions"] = [
            {"region": region, "y_rel": round(y, 4), "x_rel": round(x, 4), "confidence": round(s, 3)}
            for region, y, x, s in raw.acne_points
        ]
        scored = [c["score"] for c in concerns.values() if c["score"] is not None]
        overall = float(np.mean(scored)) if scored else None
        no_tone = {"ita_deg": None, "category": None, "lab": None}
        return {
            "concerns": {name: concerns[name] for name in CONCERNS},
            "overall": {"score": _round(overall) if overall is not None else None},
            "skin_tone": self._skin_tone(prediction, raw.usable) if colour else no_tone,
            "skin_type": self._skin_type(prediction, raw.usable),
        }

    def _acne(self, count: float, regions: dict[str, float]) -> dict[str, Any]:
        region_counts = {r: (None if np.isnan(v) else int(v)) for r, v in regions.items()}
        if np.isnan(count):
            return {"score": None, "severity": None, "regions": region_counts, "count": None}
        probabilities = self.calibration.acne_grade_model.predict_proba(np.array([[math.log1p(count)]]))[0]
        classes = [int(c) for c in self.calibration.acne_grade_model.classes_]
        expected_grade = float(sum(p * c for p, c in zip(probabilities, classes, strict=True)))
        score = 100.0 * (1.0 - expected_grade / (len(ACNE_GRADES) - 1))
        grade = classes[int(np.argmax(probabilities))]
        return {
            "score": _round(score),
            "severity": ACNE_GRADES[grade],
            "regions": region_counts,
            "count": int(count),
            "grade_probabilities": {
                ACNE_GRADES[c]: round(float(p), 3) for c, p in zip(classes, probabilities, strict=True)
            },
        }

    def _skin_tone(self, prediction: Prediction, usable: dict[str, bool]) -> dict[str, Any]:
        lab_l, lab_a, lab_b = face_lab(prediction.signals, usable)
        if np.isnan(lab_l):
            return {"ita_deg": None, "category": None, "lab": None}
        ita = ita_from_lab(lab_l, lab_b)
        return {
            "ita_deg": round(ita, 1),
            "category": ita_category(ita),
            "lab": {"l": round(lab_l, 1), "a": round(lab_a, 1), "b": round(lab_b, 1)},
        }

    def _skin_type(self, prediction: Prediction, usable: dict[str, bool]) -> dict[str, Any]:
        """Oily / dry / normal / combination from T-zone and cheek shine.

        Combination skin is an oily T-zone with normal-to-dry cheeks (Youn et al., "Regional and
        seasonal variations in facial sebum secretions: a proposal for the definition of combination
        skin type", Skin Res Technol 11, 2005). Shine stands in for sebum: p_t and p_c are the
        percentiles of T-zone and cheek shine among the reference faces, read as the probability that
        each zone is oily; low shine in both zones splits between dry and normal by how low it is.
        Dry skin is also rough and tight, which shine cannot see: "dry" is the weakest of the four.
        """
        zones = zone_values(prediction.signals, usable, "specular")
        if np.isnan(zones["t_zone"]) or np.isnan(zones["cheeks"]):
            return {"label": None, "probabilities": None}
        row = np.array([zones[z] for z in ZONES], dtype=np.float64)
        p_t, p_c = (float(p) for p in self._zones.percentiles(row))
        # Neither zone oily (mass m): the lower both are, the more of it is dry (m squared).
        m = (1.0 - p_t) * (1.0 - p_c)
        probabilities = {
            "oily": p_t * p_c,
            "combination": p_t * (1.0 - p_c),
            "normal": (1.0 - p_t) * p_c + m - m * m,
            "dry": m * m,
        }
        probabilities = {k: round(v, 3) for k, v in probabilities.items()}
        return {"label": max(probabilities, key=probabilities.__getitem__), "probabilities": probabilities}


class ScorerRegistry:
    """PostScorers by model version, each loaded once from that version's assets.extra/."""

    def __init__(self, model_repo_dir: Path, model_name: str) -> None:
        self.base = model_repo_dir / model_name
        self._lock = threading.Lock()
        self._scorers: dict[int, PostScorer] = {}

    def problem(self, version: int) -> str:
        """Why `version` cannot be scored ("" when it can), in words safe to show a client (no paths):
        the router asks before sending the version any request."""
        try:
            self.for_version(version)
        except ModelBadResponse as exc:
            return str(exc.__cause__) if isinstance(exc.__cause__, CalibrationProblem) else exc.message
        return ""

    def for_version(self, version: int) -> PostScorer:
        """The scorer of `version`; raises ModelBadResponse when its calibration cannot be read."""
        with self._lock:
            scorer = self._scorers.get(version)
        if scorer is not None:
            return scorer
        path = self.base / str(version) / "assets.extra" / contract.CALIBRATION_FILE
        answer = "The model version that answered has no usable calibration."
        if not path.is_file():
            logger.error("version %d has no calibration at %s", version, path)
            raise ModelBadResponse(answer) from CalibrationProblem("its calibration is missing")
        try:
            calibration = load_calibration(path)
        except (OSError, ValueError, KeyError) as exc:
            logger.error("no usable calibration for version %d: %s", version, exc)
            raise ModelBadResponse(answer) from CalibrationProblem("its calibration cannot be read")
        if calibration.version != version:
            logger.error("calibration in version %d says version %d", version, calibration.version)
            mismatch = CalibrationProblem(f"its calibration is for version {calibration.version}")
            raise ModelBadResponse(answer) from mismatch
        scorer = PostScorer(calibration)
        with self._lock:
            self._scorers.setdefault(version, scorer)
            return self._scorers[version]
