"""Post-scoring: raw model outputs to 0-100 scores, severities, skin tone and skin type.

Each model version carries its own calibration (assets.extra/calibration.skops, fitted in export/), bound
to the SavedModel's content by its fingerprint (serving/fingerprint.py), not to the folder's number; a
response is always scored with the calibration of the version that produced it. Scores are higher for
healthier skin: for measured concerns, 100 minus the percentile of the raw value among the version's
reference faces; for acne, from the ACNE04 severity grade the lesion count predicts.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skops.io
from numpy.typing import NDArray

from orchestrator.answer import (
    ITA_CATEGORIES,
    AcneScore,
    ConcernScore,
    Lab,
    Lesion,
    Overall,
    Scored,
    SkinTone,
    SkinType,
)
from orchestrator.errors import ModelBadResponse
from orchestrator.face.patches import NEEDED_SCALES
from orchestrator.notices import CONCERN_REASON_TABLE, concern_reason
from orchestrator.predict.prediction import Prediction
from orchestrator.scoring.concerns import ZONES, RawConcerns, face_lab, raw_concerns, zone_values
from orchestrator.scoring.reference import AdultReference
from orchestrator.scoring.reference import severity as reference_severity
from orchestrator.scoring.zones import Design, concern_values, region_values, served_zones
from serving import contract
from serving.concerns import ACNE_GRADES, Concern, registry
from serving.fingerprint import content_fingerprint, is_fingerprint

logger = logging.getLogger(__name__)

# 4: bound to the model's content fingerprint ("model_fingerprint"); 3 named a version number instead.
CALIBRATION_FORMAT = 4
# Why a concern has no score where the version that answered does not measure it, or its calibration
# has no reference values for it.
NOT_MEASURED = "not scored by model version {version}: it does not measure {concern}"
NOT_CALIBRATED = "not scored by model version {version}: its calibration has no reference values for it"


class CalibrationProblem(ValueError):
    """Why a version's calibration cannot be used: `reason` in words safe to show a client (no paths),
    `code` a short name for metrics and logs."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Calibration:
    """What post-scoring needs from one model version (the contents of calibration.skops).

    Each QuantileTransformer is fitted on all its columns at once (column names stored beside it), so
    a request costs one transform per table, not one per concern and region.
    """

    model_fingerprint: str  # serving.fingerprint.content_fingerprint of the model it was fitted on
    acne_threshold: float
    acne_grade_model: Any  # sklearn classifier: [[log1p(lesion count over all skin)]] -> ACNE04 grade 0..3
    face: Any  # QuantileTransformer over face-level raw values, columns `face_columns`
    regions: Any  # QuantileTransformer over per-region raw values, columns `region_columns`
    zones: Any  # QuantileTransformer over shine of the T-zone and the cheeks, columns ZONES
    reference: dict[str, Any]  # what the percentiles are relative to
    # The measured concerns (serving.concerns.measured) and (concern, region) pairs it was fitted on:
    # a version calibrated on fewer concerns than this service knows scores those it has.
    face_columns: tuple[str, ...] = ()
    region_columns: tuple[tuple[str, str], ...] = ()
    # Contract 4: how zone measures combine (chosen on data/ages' training part), and the adult
    # reference they are scored against: per concern, and per "concern/region" for region scores.
    zone_design: Design | None = None
    zone_reference: AdultReference | None = None
    zone_regions: AdultReference | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Check the stored format, fingerprint and columns against this code; raises CalibrationProblem."""
        if data.get("format") != CALIBRATION_FORMAT:
            raise CalibrationProblem(
                "calibration_format",
                f"its calibration is in format {data.get('format')!r}; this service reads format "
                f"{CALIBRATION_FORMAT}",
            )
        if not is_fingerprint(data.get("model_fingerprint")):
            raise CalibrationProblem("calibration_unbound", "its calibration records no model fingerprint")
        columns = data["columns"]
        face_columns = tuple(str(c) for c in columns["face"])
        region_columns = tuple((str(c), str(r)) for c, r in columns["regions"])
        sizes = {"face": len(face_columns), "regions": len(region_columns), "zones": len(ZONES)}
        if list(columns["zones"]) != list(ZONES) or any(
            np.asarray(data[table].quantiles_).shape[1] != size for table, size in sizes.items()
        ):
            raise CalibrationProblem(
                "calibration_columns", "its calibration's columns do not match its tables"
            )
        return cls(
            model_fingerprint=str(data["model_fingerprint"]),
            acne_threshold=float(data["acne_threshold"]),
            acne_grade_model=data["acne_grade_model"],
            face=data["face"],
            regions=data["regions"],
            zones=data["zones"],
            reference=dict(data["reference"]),
            face_columns=face_columns,
            region_columns=region_columns,
            **_zone_calibration(data),
        )


def _zone_calibration(data: dict[str, Any]) -> dict[str, Any]:
    """The optional zone part of a calibration (contract-4 versions)."""
    if "zone_design" not in data:
        return {}
    try:
        return {
            "zone_design": Design.from_json(data["zone_design"]),
            "zone_reference": AdultReference(**data["zone_reference"]),
            "zone_regions": AdultReference(**data["zone_regions"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationProblem(
            "calibration_columns", "its calibration's zone reference is malformed"
        ) from exc


def load_calibration(path: Path) -> Calibration:
    """Read a version's calibration.skops (only skops' default trusted types); raises CalibrationProblem."""
    try:
        data = skops.io.load(path, trusted=[])
    except Exception as exc:  # skops raises many kinds on a bad file
        logger.error("cannot read calibration %s: %s", path, exc)
        raise CalibrationProblem("calibration_unreadable", "its calibration cannot be read") from exc
    if not isinstance(data, dict):
        raise CalibrationProblem("calibration_unreadable", "its calibration cannot be read")
    try:
        return Calibration.from_dict(data)
    except CalibrationProblem:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        logger.error("calibration %s is malformed: %r", path, exc)
        raise CalibrationProblem("calibration_unreadable", "its calibration cannot be read") from exc


def check_binding(calibration: Calibration, version_dir: Path) -> None:
    """Check that `calibration` was fitted on the SavedModel at `version_dir` (same content fingerprint,
    whatever the folder's number); raises CalibrationProblem."""
    try:
        fingerprint = content_fingerprint(version_dir)
    except OSError as exc:
        logger.error("cannot fingerprint %s: %s", version_dir, exc)
        raise CalibrationProblem("model_unreadable", "its model files cannot be read") from exc
    if calibration.model_fingerprint != fingerprint:
        logger.error(
            "calibration in %s is for model %s, the folder holds %s",
            version_dir,
            calibration.model_fingerprint,
            fingerprint,
        )
        raise CalibrationProblem(
            "calibration_mismatch", "its calibration was fitted on another model (fingerprints differ)"
        )


def severity(score: float, bands: tuple[tuple[float, str], ...]) -> str:
    """The label of the first band whose lower bound `score` reaches (bands from the concern's record)."""
    for bound, label in bands:
        if score >= bound:
            return label
    return bands[-1][1]


def ita_category(ita_deg: float) -> str:
    for bound, label in ITA_CATEGORIES:
        if ita_deg > bound:
            return label
    return ITA_CATEGORIES[-1][1]


def ita_from_lab(lab_l: float, lab_b: float) -> float:
    """ITA = atan((L* - 50) / b*) in degrees (Chardon et al., Int J Cosmet Sci 13, 1991)."""
    return math.degrees(math.atan2(lab_l - 50.0, lab_b))


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
        patches: PatchOutcome | None = None,
    ) -> Scored:
        """The concerns, skin tone, skin type and overall parts of a report. `peak_labels` names the
        mask label under each lesion candidate, `usable` which labels can be read; with `colour`
        False (a greyscale photo) the colour concerns and the skin tone are unknown, and the overall
        score leaves them out. `patches` says which patch slots were cut (contract-4 versions)."""
        cal = self.calibration
        zoned = self._zone_concerns(prediction, patches, colour) if cal.zone_design is not None else {}
        raw = raw_concerns(prediction.signals, prediction.acne_peaks, peak_labels, usable, cal.acne_threshold)
        face = dict(
            zip(cal.face_columns, self._face.percentiles(raw.face_row(cal.face_columns)), strict=True)
        )
        regions = dict(
            zip(
                cal.region_columns, self._regions.percentiles(raw.region_row(cal.region_columns)), strict=True
            )
        )
        concerns: dict[str, ConcernScore | AcneScore] = {}
        for record in registry():
            if record.name in zoned:
                concerns[record.name] = zoned[record.name]
            elif record.name not in raw.measured:
                reason = NOT_MEASURED.format(version=prediction.version, concern=record.name)
                concerns[record.name] = _not_scored(record, reason, "not_measured")
            elif record.raw == "lesions":
                concerns[record.name] = self._acne(raw.face[record.name], raw.regions[record.name], raw)
            elif record.name not in face:
                reason = NOT_CALIBRATED.format(version=prediction.version)
                concerns[record.name] = _not_scored(record, reason, "not_calibrated")
            else:
                known = colour or not record.needs_colour
                score = _score(face[record.name]) if known else None
                concerns[record.name] = ConcernScore(
                    score=score,
                    severity=None if score is None else severity(score, record.severities),
                    regions={
                        region: _score(regions.get((record.name, region), np.nan)) if known else None
                        for region in record.regions
                    },
                    raw=_round(raw.face[record.name], 4) if known else None,
                )
        scored = [c.score for c in concerns.values() if c.score is not None]
        overall = float(np.mean(scored)) if scored else None
        no_tone = SkinTone(ita_deg=None, category=None, lab=None)
        return Scored(
            concerns=concerns,
            overall=Overall(score=_round(overall) if overall is not None else None),
            skin_tone=self._skin_tone(prediction, raw.usable) if colour else no_tone,
            skin_type=self._skin_type(prediction, raw.usable),
        )

    def _zone_concerns(
        self, prediction: Prediction, patches: PatchOutcome | None, colour: bool
    ) -> dict[str, ConcernScore | AcneScore]:
        """The concerns a contract-4 version reads from its zone measures, scored against the adult
        reference of its calibration; those without a value are not scored, with the cutter's reason."""
        cal = self.calibration
        assert cal.zone_design is not None and cal.zone_reference is not None and cal.zone_regions is not None
        records = [r for r in registry() if r.name in NEEDED_SCALES]
        if prediction.zones is None or patches is None:
            reason = NOT_MEASURED.format(version=prediction.version, concern="zones")
            return {r.name: _not_scored(r, reason, "not_measured") for r in records}
        zones, cut_reasons = served_zones(prediction.zones, patches.unavailable)
        values, reasons = concern_values(zones, cut_reasons, cal.zone_design)
        by_region = region_values(zones)
        out: dict[str, ConcernScore | AcneScore] = {}
        for record in records:
            name = record.name
            if name not in cal.zone_reference.quantiles:
                out[name] = _not_scored(
                    record, NOT_CALIBRATED.format(version=prediction.version), "not_calibrated"
                )
            elif name not in values:
                code = reasons[name]
                out[name] = _not_scored(record, _zone_reason(record, code, patches.px_per_mm), code)
            elif record.needs_colour and not colour:
                out[name] = ConcernScore(
                    score=None, severity=None, regions=dict.fromkeys(record.regions), raw=None
                )
            else:
                score = round(cal.zone_reference.score(name, values[name]), 1)
                regions = {
                    region: round(cal.zone_regions.score(key, by_region[name][region]), 1)
                    if region in by_region[name] and (key := f"{name}/{region}") in cal.zone_regions.quantiles
                    else None
                    for region in record.regions
                }
                out[name] = ConcernScore(
                    score=score,
                    severity=reference_severity(score),
                    regions=regions,
                    raw=_round(values[name], 4),
                )
        return out

    def _acne(self, count: float, regions: dict[str, float], raw: RawConcerns) -> AcneScore:
        region_counts = {r: (None if np.isnan(v) else int(v)) for r, v in regions.items()}
        lesions = [
            Lesion(region=region, y_rel=round(y, 4), x_rel=round(x, 4), confidence=round(s, 3))
            for region, y, x, s in raw.acne_points
        ]
        if np.isnan(count):
            return AcneScore(score=None, severity=None, regions=region_counts, count=None, lesions=lesions)
        probabilities = self.calibration.acne_grade_model.predict_proba(np.array([[math.log1p(count)]]))[0]
        classes = [int(c) for c in self.calibration.acne_grade_model.classes_]
        expected_grade = float(sum(p * c for p, c in zip(probabilities, classes, strict=True)))
        score = 100.0 * (1.0 - expected_grade / (len(ACNE_GRADES) - 1))
        grade = classes[int(np.argmax(probabilities))]
        # ACNE04 grades patients, so its mildest grade covers a face with no lesion found; to a user that
        # face shows no acne. The grade probabilities stay ACNE04's.
        return AcneScore(
            score=_round(score),
            severity=ACNE_GRADES[grade] if count > 0 else "none",
            regions=region_counts,
            count=int(count),
            grade_probabilities={
                ACNE_GRADES[c]: round(float(p), 3) for c, p in zip(classes, probabilities, strict=True)
            },
            lesions=lesions,
        )

    def _skin_tone(self, prediction: Prediction, usable: dict[str, bool]) -> SkinTone:
        lab_l, lab_a, lab_b = face_lab(prediction.signals, usable)
        if np.isnan(lab_l):
            return SkinTone(ita_deg=None, category=None, lab=None)
        ita = ita_from_lab(lab_l, lab_b)
        return SkinTone(
            ita_deg=round(ita, 1),
            category=ita_category(ita),
            lab=Lab(l=round(lab_l, 1), a=round(lab_a, 1), b=round(lab_b, 1)),
        )

    def _skin_type(self, prediction: Prediction, usable: dict[str, bool]) -> SkinType:
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
            return SkinType(label=None, probabilities=None)
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
        return SkinType(label=max(probabilities, key=probabilities.__getitem__), probabilities=probabilities)


def _not_scored(record: Concern, reason: str, code: str) -> ConcernScore | AcneScore:
    """A concern this answer cannot score, with the reason (words) and its code (notices' table)."""
    code = concern_reason(code)
    if record.raw == "lesions":
        regions = dict.fromkeys(record.regions)
        return AcneScore(
            score=None,
            severity=None,
            regions=regions,
            count=None,
            lesions=[],
            reason=reason,
            reason_code=code,
        )
    return ConcernScore(
        score=None,
        severity=None,
        regions=dict.fromkeys(record.regions),
        raw=None,
        reason=reason,
        reason_code=code,
    )


def _zone_reason(record: Concern, code: str, px_per_mm: float | None) -> str:
    """The words of a zone concern's reason, for this photo."""
    if code == "photo_too_small" and px_per_mm is not None:
        need = NEEDED_SCALES[record.name].px_per_mm
        return (
            f"{record.label} is read at {need:g} pixels per millimetre and this photo gives "
            f"{px_per_mm:.2f} on the face: move closer, or send the photo at its full resolution"
        )
    return CONCERN_REASON_TABLE[code]


@dataclass(frozen=True)
class PatchOutcome:
    """What the face's patch slots were cut at: its scale and the slots left empty, with the reasons."""

    px_per_mm: float | None
    unavailable: Mapping[tuple[str, str], str]


class ScorerRegistry:
    """PostScorers by model version, each loaded from that version's assets.extra/ once its calibration
    is found bound to the version's own model content."""

    def __init__(self, model_repo_dir: Path, model_name: str) -> None:
        self.base = model_repo_dir / model_name
        self._lock = threading.Lock()
        self._scorers: dict[int, PostScorer] = {}

    def problem(self, version: int) -> CalibrationProblem | None:
        """Check `version`'s calibration against the model in its folder now, and keep its scorer when
        it passes; returns why it cannot be scored (None when it can). The router asks before sending
        the version any request, and again whenever the version comes back after being away."""
        try:
            scorer = self._load(version)
        except CalibrationProblem as problem:
            with self._lock:
                self._scorers.pop(version, None)
            return problem
        with self._lock:
            self._scorers[version] = scorer
        return None

    def for_version(self, version: int) -> PostScorer:
        """The scorer of `version`; raises ModelBadResponse when its calibration cannot be used."""
        with self._lock:
            scorer = self._scorers.get(version)
        if scorer is not None:
            return scorer
        try:
            scorer = self._load(version)
        except CalibrationProblem as problem:
            raise ModelBadResponse("The model version that answered has no usable calibration.") from problem
        with self._lock:
            return self._scorers.setdefault(version, scorer)

    def _load(self, version: int) -> PostScorer:
        folder = self.base / str(version)
        path = folder / "assets.extra" / contract.CALIBRATION_FILE
        if not path.is_file():
            logger.error("version %d has no calibration at %s", version, path)
            raise CalibrationProblem("calibration_missing", "its calibration is missing")
        calibration = load_calibration(path)
        check_binding(calibration, folder)
        return PostScorer(calibration)
