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

from orchestrator.concerns import CONCERNS, face_lab, raw_concerns, zone_values
from orchestrator.errors import ModelBadResponse
from orchestrator.prediction import Prediction
from serving import contract

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT = 1
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
    """What post-scoring needs from one model version (the contents of calibration.skops)."""

    version: int
    acne_threshold: float
    acne_grade_model: Any  # sklearn classifier: [[log1p(lesion count)]] -> ACNE04 grade 0..3
    face: dict[str, Any]  # concern -> QuantileTransformer over face-level raw values
    regions: dict[str, dict[str, Any]]  # concern -> region -> QuantileTransformer
    zones: dict[str, Any]  # "t_zone" / "cheeks" -> QuantileTransformer of specular share
    reference: dict[str, Any]  # what the percentiles are relative to

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"calibration format {data.get('format')!r}, expected {CALIBRATION_FORMAT}")
        return cls(
            version=int(data["version"]),
            acne_threshold=float(data["acne_threshold"]),
            acne_grade_model=data["acne_grade_model"],
            face=dict(data["face"]),
            regions={k: dict(v) for k, v in data["regions"].items()},
            zones=dict(data["zones"]),
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


def _percentile(transformer: Any, value: float) -> float:
    return float(np.clip(transformer.transform(np.array([[value]]))[0, 0], 0.0, 1.0))


def _round(value: float, digits: int = 1) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), digits)


class PostScorer:
    """Scores one version's outputs with that version's calibration."""

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration

    def score(self, prediction: Prediction, coverage: tuple[float, ...]) -> dict[str, Any]:
        """The concerns, skin tone, skin type and overall parts of a report."""
        cal = self.calibration
        raw = raw_concerns(prediction.signals, prediction.acne_peaks, coverage, cal.acne_threshold)
        concerns: dict[str, Any] = {}
        for concern in CONCERNS:
            if concern == "acne":
                concerns[concern] = self._acne(raw.face["acne"], raw.regions["acne"])
                continue
            face_raw = raw.face[concern]
            region_scores = {
                region: (
                    None
                    if np.isnan(value)
                    else _round(100.0 * (1.0 - _percentile(cal.regions[concern][region], value)))
                )
                for region, value in raw.regions[concern].items()
            }
            if np.isnan(face_raw):
                concerns[concern] = {"score": None, "severity": None, "regions": region_scores, "raw": None}
                continue
            score = 100.0 * (1.0 - _percentile(cal.face[concern], face_raw))
            concerns[concern] = {
                "score": _round(score),
                "severity": severity(score),
                "regions": region_scores,
                "raw": _round(face_raw, 4),
            }
        concerns["acne"]["lesions"] = [
            {"region": region, "y_rel": round(y, 4), "x_rel": round(x, 4), "confidence": round(s, 3)}
            for region, y, x, s in raw.acne_points
        ]
        scored = [c["score"] for c in concerns.values() if c["score"] is not None]
        overall = float(np.mean(scored)) if scored else None
        return {
            "concerns": concerns,
            "overall": {"score": _round(overall) if overall is not None else None},
            "skin_tone": self._skin_tone(prediction, raw.usable),
            "skin_type": self._skin_type(prediction, raw.usable),
            "usable_regions": raw.usable,
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
            "severity": "none" if count == 0 else ACNE_GRADES[grade],
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
        p_t = _percentile(self.calibration.zones["t_zone"], zones["t_zone"])
        p_c = _percentile(self.calibration.zones["cheeks"], zones["cheeks"])
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

    def for_version(self, version: int) -> PostScorer:
        """The scorer of `version`; raises ModelBadResponse when its calibration cannot be read."""
        with self._lock:
            scorer = self._scorers.get(version)
        if scorer is not None:
            return scorer
        path = self.base / str(version) / "assets.extra" / contract.CALIBRATION_FILE
        try:
            calibration = load_calibration(path)
        except (OSError, ValueError, KeyError) as exc:
            logger.error("no usable calibration for version %d: %s", version, exc)
            raise ModelBadResponse("The model version that answered has no usable calibration.") from exc
        if calibration.version != version:
            logger.error("calibration in version %d says version %d", version, calibration.version)
            raise ModelBadResponse("The model version that answered has no usable calibration.")
        scorer = PostScorer(calibration)
        with self._lock:
            self._scorers.setdefault(version, scorer)
            return self._scorers[version]
