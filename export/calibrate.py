"""Fitting a version's post-scoring calibration (scikit-learn) on real faces run through that version.

Faces are found and cut exactly as the orchestrator does (orchestrator.decode, orchestrator.face), the
version's own graph produces the signals, and orchestrator.scoring.concerns turns them into raw values,
so what is fitted here is what is served. Reference faces for the measured concerns: the portraits in
data/faces plus the frontal faces of the ACNE04 train split. Acne: the lesion-score threshold is chosen
on ACNE04 valid (count error against the labelled boxes inside the regions), and a logistic model maps
the lesion count to ACNE04's severity grade, fitted on train and valid. ACNE04 test is never read here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import skops.io
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import QuantileTransformer

from export.acne.dataset import grade_from_name, parse_voc_boxes
from orchestrator.decode.images import decode_image
from orchestrator.errors import ShineError
from orchestrator.face.detection import FaceDetector
from orchestrator.face.regions import crop_regions
from orchestrator.scoring.concerns import (
    CONCERN_REGIONS,
    MEASURED,
    REGION_COLUMNS,
    ZONES,
    raw_concerns,
    zone_values,
)
from orchestrator.scoring.scorer import CALIBRATION_FORMAT
from orchestrator.settings import Settings
from serving import contract

logger = logging.getLogger(__name__)

Run = Callable[[NDArray[np.uint8]], tuple[NDArray[np.float32], NDArray[np.float32]]]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp", ".tif", ".tiff"}
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)


@dataclass
class FaceSample:
    """One detected face: its crops, and for ACNE04 faces the grade and labelled lesions per region."""

    source: str
    crops: NDArray[np.uint8]
    coverage: tuple[float, ...]
    grade: int | None = None
    true_counts: dict[str, int] = field(default_factory=dict)
    signals: NDArray[np.float32] | None = None
    peaks: NDArray[np.float32] | None = None


def collect_faces(paths: Iterable[Path], settings: Settings, largest_only: bool) -> list[FaceSample]:
    """Decode, detect and crop as the service does; photos without a usable face are skipped."""
    detector = FaceDetector(detect_long_side_px=settings.detect_long_side_px)
    samples = []
    for path in paths:
        try:
            image = decode_image(
                path.read_bytes(),
                max_pixels=settings.max_image_pixels,
                long_side_px=settings.decode_long_side_px,
            )
        except ShineError:
            continue
        faces = detector.detect(image.rgb)
        for face in faces[:1] if largest_only else faces:
            if face.box.width / image.scale < settings.min_face_px:
                continue
            crops = crop_regions(image.rgb, face.box)
            sample = FaceSample(path.name, crops.batch, crops.coverage)
            xml = path.with_suffix(".xml")
            if xml.is_file() and image.scale == 1.0:
                sample.grade = grade_from_name(path.name)
                sample.true_counts = _boxes_in_regions(parse_voc_boxes(xml), crops.boxes)
            samples.append(sample)
    return samples


def _boxes_in_regions(boxes: NDArray[np.float32], regions: tuple[Any, ...]) -> dict[str, int]:
    """Labelled lesions whose centre falls inside each acne region."""
    centres_x = (boxes[:, 0] + boxes[:, 2]) / 2.0
    centres_y = (boxes[:, 1] + boxes[:, 3]) / 2.0
    counts = {}
    for name, box in zip(contract.REGION_NAMES, regions, strict=True):
        if name not in CONCERN_REGIONS["acne"]:
            continue
        inside = (
            (centres_x >= box.x)
            & (centres_x < box.x + box.width)
            & (centres_y >= box.y)
            & (centres_y < box.y + box.height)
        )
        counts[name] = int(inside.sum())
    return counts


def run_model(samples: list[FaceSample], run: Run, faces_per_batch: int = 8) -> None:
    """Fill each sample's signals and acne peaks from the version's graph."""
    for start in range(0, len(samples), faces_per_batch):
        chunk = samples[start : start + faces_per_batch]
        signals, peaks = run(np.concatenate([s.crops for s in chunk], axis=0))
        rows = len(contract.REGION_NAMES)
        for i, sample in enumerate(chunk):
            sample.signals = signals[i * rows : (i + 1) * rows]
            sample.peaks = peaks[i * rows : (i + 1) * rows]


def _raw(sample: FaceSample, threshold: float) -> Any:
    assert sample.signals is not None and sample.peaks is not None
    return raw_concerns(sample.signals, sample.peaks, sample.coverage, threshold)


def choose_threshold(valid: list[FaceSample]) -> tuple[float, float]:
    """The lesion-score threshold with the least count error on labelled faces; returns (t, MAE)."""
    best = (0.5, math.inf)
    for threshold in THRESHOLDS:
        errors = []
        for sample in valid:
            raw = _raw(sample, float(threshold))
            usable = [r for r, ok in raw.usable.items() if ok and r in sample.true_counts]
            predicted = sum(raw.regions["acne"][r] for r in usable)
            errors.append(abs(predicted - sum(sample.true_counts[r] for r in usable)))
        mae = float(np.mean(errors)) if errors else math.inf
        if mae < best[1]:
            best = (float(threshold), mae)
    return best


def fit_grade_model(samples: list[FaceSample], threshold: float) -> LogisticRegression:
    """Logistic regression from log1p(lesion count in the regions) to the ACNE04 grade."""
    return LogisticRegression(max_iter=1000).fit(_log_counts(samples, threshold), _grades(samples))


def _log_counts(samples: list[FaceSample], threshold: float) -> NDArray[np.float64]:
    return np.array([[math.log1p(np.nan_to_num(_raw(s, threshold).face["acne"]))] for s in samples])


def _grades(samples: list[FaceSample]) -> NDArray[np.int64]:
    return np.array([s.grade for s in samples], dtype=np.int64)


def _quantiles(rows: NDArray[np.float64]) -> QuantileTransformer:
    """One QuantileTransformer over every column; NaN (an unusable region) is left out of the fit."""
    usable = np.sum(~np.isnan(rows), axis=0)
    if usable.min() < 5:
        raise ValueError(f"a column has only {usable.min()} usable reference values; need at least 5")
    transformer = QuantileTransformer(n_quantiles=min(200, rows.shape[0]), output_distribution="uniform")
    return transformer.fit(rows)


def fit_calibration(
    version: int,
    reference: list[FaceSample],
    acne_valid: list[FaceSample],
    acne_fit: list[FaceSample],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The calibration dict stored as calibration.skops, and a summary for the model card."""
    threshold, valid_mae = choose_threshold(acne_valid)
    grade_model = fit_grade_model(acne_fit, threshold)
    raws = [_raw(s, threshold) for s in reference]
    zones = [zone_values(s.signals, r.usable, "specular") for s, r in zip(reference, raws, strict=True)]  # type: ignore[arg-type]
    summary = {
        "reference_faces": len(reference),
        "reference_sources": sorted({"data/faces" if s.grade is None else "ACNE04 train" for s in reference}),
        "acne_threshold": threshold,
        "acne_valid_faces": len(acne_valid),
        "acne_valid_count_mae": round(valid_mae, 3),
        "acne_grade_fit_faces": len(acne_fit),
        "acne_valid_grade_accuracy_in_fit": round(
            float(grade_model.score(_log_counts(acne_valid, threshold), _grades(acne_valid))), 4
        ),
    }
    calibration = {
        "format": CALIBRATION_FORMAT,
        "version": version,
        "acne_threshold": threshold,
        "acne_grade_model": grade_model,
        "columns": {
            "face": list(MEASURED),
            "regions": [list(c) for c in REGION_COLUMNS],
            "zones": list(ZONES),
        },
        "face": _quantiles(np.vstack([r.face_row() for r in raws])),
        "regions": _quantiles(np.vstack([r.region_row() for r in raws])),
        "zones": _quantiles(np.array([[z[name] for name in ZONES] for z in zones], dtype=np.float64)),
        "reference": summary,
    }
    return calibration, summary


def write_calibration(calibration: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    skops.io.dump(calibration, path)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
