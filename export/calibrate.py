"""Fitting a version's post-scoring calibration (scikit-learn) on real faces run through that version.

Photos go through the service's own decode and face stage (orchestrator.decode, orchestrator.face),
the version's own graph produces the signals, and orchestrator.scoring.concerns turns them into raw
values, so what is fitted here is what is served. Reference faces for the measured concerns: the
portraits in data/faces plus the faces of the ACNE04 train split the mesh reads (frontal and
three-quarter views). Acne: the lesion-score threshold is chosen on ACNE04 valid (count error against
the labelled lesions on the skin the mask vouches for), and a logistic model maps the lesion count over
all visible skin to ACNE04's severity grade, fitted on ACNE04 valid. ACNE04 test is never read here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
from orchestrator.face.stage import FaceGeometry, Geometry
from orchestrator.scoring.concerns import (
    ZONES,
    RawConcerns,
    lesion_labels,
    raw_concerns,
    usable_labels,
    zone_values,
)
from orchestrator.scoring.scorer import CALIBRATION_FORMAT
from orchestrator.settings import Settings
from serving import contract
from serving.concerns import measured
from serving.fingerprint import content_fingerprint

logger = logging.getLogger(__name__)

# A version's graph: faces and masks in; named signals [faces, labels] and acne peaks out.
Run = Callable[
    [NDArray[np.uint8], NDArray[np.uint8]], tuple[dict[str, NDArray[np.float32]], NDArray[np.float32]]
]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp", ".tif", ".tiff"}
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)
# Views whose regions come from the face mesh: the reference faces for the measured concerns.
MESH_VIEWS = ("frontal", "three_quarter")


@dataclass
class FaceSample:
    """One photo through the face stage; for ACNE04 photos, the grade and the labelled lesions whose
    centre lies on skin the mask vouches for."""

    source: str
    geometry: Geometry
    grade: int | None = None
    lesions_on_skin: int = 0
    signals: dict[str, NDArray[np.float32]] | None = None  # signal name -> one value per mask label
    peaks: NDArray[np.float32] | None = None


def collect_faces(paths: Iterable[Path], settings: Settings, geometry: FaceGeometry) -> list[FaceSample]:
    """Decode and run the face stage as the service does; photos it refuses are skipped."""
    samples = []
    for path in paths:
        try:
            image = decode_image(
                path.read_bytes(),
                max_pixels=settings.max_image_pixels,
                long_side_px=settings.decode_long_side_px,
            )
            found = geometry.analyse(image.rgb)
        except ShineError:
            continue
        if found.view != "closeup" and found.face_width_px / image.scale < settings.min_face_px:
            continue
        sample = FaceSample(path.name, found)
        xml = path.with_suffix(".xml")
        if xml.is_file() and image.scale == 1.0:
            sample.grade = grade_from_name(path.name)
            sample.lesions_on_skin = lesions_on_skin(parse_voc_boxes(xml), found)
        samples.append(sample)
    return samples


def lesions_on_skin(boxes: NDArray[np.float32], geometry: Geometry) -> int:
    """Labelled lesions whose centre, mapped into the aligned frame, lies on the mask's skin."""
    if len(boxes) == 0:
        return 0
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)
    frame = geometry.alignment.to_frame(centres)
    size = geometry.alignment.size
    inside = np.all((frame >= 0) & (frame < size), axis=1)
    cells = frame[inside].astype(int)
    return int(np.count_nonzero(geometry.mask.labels[cells[:, 1], cells[:, 0]] > contract.NOT_SKIN))


def run_model(samples: list[FaceSample], run: Run, faces_per_batch: int = 8) -> None:
    """Fill each sample's signals and acne peaks from the version's graph."""
    for start in range(0, len(samples), faces_per_batch):
        chunk = samples[start : start + faces_per_batch]
        faces = np.stack([s.geometry.face for s in chunk])
        masks = np.stack([s.geometry.mask.labels for s in chunk])
        signals, peaks = run(faces, masks)
        for i, sample in enumerate(chunk):
            sample.signals, sample.peaks = {name: column[i] for name, column in signals.items()}, peaks[i]


def raw_of(sample: FaceSample, threshold: float) -> RawConcerns:
    """The raw concern values of one sample at an acne threshold, as post-scoring computes them."""
    assert sample.signals is not None and sample.peaks is not None
    mask = sample.geometry.mask
    usable = usable_labels(sample.signals, mask.pixels, mask.visible)
    return raw_concerns(
        sample.signals, sample.peaks, lesion_labels(sample.peaks, mask.labels), usable, threshold
    )


def predicted_count(sample: FaceSample, threshold: float) -> float:
    """Lesions the version counts on the face's visible skin (0 when no skin could be read)."""
    return float(np.nan_to_num(raw_of(sample, threshold).face["acne"]))


def choose_threshold(valid: list[FaceSample]) -> tuple[float, float]:
    """The lesion-score threshold with the least count error on labelled faces; returns (t, MAE)."""
    best = (0.5, math.inf)
    for threshold in THRESHOLDS:
        errors = [abs(predicted_count(s, float(threshold)) - s.lesions_on_skin) for s in valid]
        mae = float(np.mean(errors)) if errors else math.inf
        if mae < best[1]:
            best = (float(threshold), mae)
    return best


def fit_grade_model(samples: list[FaceSample], threshold: float) -> LogisticRegression:
    """Logistic regression from log1p(lesion count over all visible skin) to the ACNE04 grade."""
    return LogisticRegression(max_iter=1000).fit(_log_counts(samples, threshold), _grades(samples))


def _log_counts(samples: list[FaceSample], threshold: float) -> NDArray[np.float64]:
    return np.array([[math.log1p(predicted_count(s, threshold))] for s in samples])


def _grades(samples: list[FaceSample]) -> NDArray[np.int64]:
    return np.array([s.grade for s in samples], dtype=np.int64)


def _quantiles(rows: NDArray[np.float64]) -> QuantileTransformer:
    """One QuantileTransformer over every column; NaN (an unusable region) is left out of the fit."""
    usable = np.sum(~np.isnan(rows), axis=0)
    if usable.min() < 5:
        raise ValueError(f"a column has only {usable.min()} usable reference values; need at least 5")
    transformer = QuantileTransformer(n_quantiles=min(200, rows.shape[0]), output_distribution="uniform")
    return transformer.fit(rows)


def fit_reference(reference: list[FaceSample], threshold: float) -> dict[str, Any]:
    """The percentile tables of the measured concerns this model measures, fitted on the reference faces
    (mesh views only), with their columns: the part of calibration.skops that is not acne's."""
    reference = [s for s in reference if s.geometry.view in MESH_VIEWS]
    raws = [raw_of(s, threshold) for s in reference]
    zones = [
        zone_values(s.signals, r.usable, "specular")
        for s, r in zip(reference, raws, strict=True)
        if s.signals is not None
    ]
    # The measured concerns this model measures, in registry order.
    face_columns = tuple(c.name for c in measured() if raws and c.name in raws[0].measured)
    region_columns = tuple((c.name, r) for c in measured() if c.name in face_columns for r in c.regions)
    return {
        "columns": {
            "face": list(face_columns),
            "regions": [list(c) for c in region_columns],
            "zones": list(ZONES),
        },
        "face": _quantiles(np.vstack([r.face_row(face_columns) for r in raws])),
        "regions": _quantiles(np.vstack([r.region_row(region_columns) for r in raws])),
        "zones": _quantiles(np.array([[z[name] for name in ZONES] for z in zones], dtype=np.float64)),
    }


def fit_calibration(
    reference: list[FaceSample], acne_valid: list[FaceSample]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The calibration dict stored as calibration.skops (bound to its model by write_calibration), and a
    summary for the model card."""
    threshold, valid_mae = choose_threshold(acne_valid)
    grade_model = fit_grade_model(acne_valid, threshold)
    summary = {
        "reference_faces": sum(s.geometry.view in MESH_VIEWS for s in reference),
        "reference_sources": sorted(
            {
                "data/faces" if s.grade is None else "ACNE04 train"
                for s in reference
                if s.geometry.view in MESH_VIEWS
            }
        ),
        "acne_threshold": threshold,
        "acne_valid_faces": len(acne_valid),
        "acne_valid_count_mae": round(valid_mae, 3),
        "acne_grade_fit": "ACNE04 valid",
        "acne_valid_grade_accuracy_in_fit": round(
            float(grade_model.score(_log_counts(acne_valid, threshold), _grades(acne_valid))), 4
        ),
    }
    calibration = {
        "format": CALIBRATION_FORMAT,
        "acne_threshold": threshold,
        "acne_grade_model": grade_model,
        **fit_reference(reference, threshold),
        "reference": summary,
    }
    return calibration, summary


def write_calibration(calibration: dict[str, Any], version_dir: Path) -> str:
    """Write the calibration into the version's assets.extra/, bound to the SavedModel already written at
    `version_dir` by its content fingerprint; returns the fingerprint. Raises FileNotFoundError when
    the folder holds no SavedModel yet."""
    fingerprint = content_fingerprint(version_dir)
    path = version_dir / "assets.extra" / contract.CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    skops.io.dump({**calibration, "model_fingerprint": fingerprint}, path)
    return fingerprint


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
