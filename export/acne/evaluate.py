"""Held-out evaluation of the acne lesion detector on ACNE04 test, written as a Markdown and JSON report.

    python -m export.acne.evaluate --weights build/acne/detector.weights.h5

The input scale was fixed on valid by `export.acne.train`; the score threshold, grade bands and count
calibration are fitted on valid here for the configuration evaluated; test is only measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from sklearn.isotonic import IsotonicRegression

from export.acne.dataset import Sample, load_images, load_split
from export.acne.inference import make_predictor, match_split, predict_peaks, score_split
from export.acne.metrics import (
    GRADES,
    ImageMatches,
    apply_bands,
    bootstrap_intervals,
    confusion,
    count_table,
    fit_bands,
)
from export.acne.network import build_detector, decode_peaks
from export.acne.train import DEFAULT_DATA, configure_tensorflow

logger = logging.getLogger(__name__)

GRADE_NAMES = ("mild", "moderate", "severe", "very severe")
ANCHOR_ACCURACY = 0.84
LABEL_AGREEMENT = 0.79


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--weights", type=Path, default=Path("build/acne/detector.weights.h5"))
    parser.add_argument("--calibration", type=Path, default=Path("build/acne/acne_calibration.json"))
    parser.add_argument("--report-md", type=Path, default=Path("reports/acne04_eval.md"))
    parser.add_argument("--report-json", type=Path, default=Path("reports/acne04_eval.json"))
    parser.add_argument(
        "--split", default="test", choices=("test", "valid"), help="valid only to smoke-test this command"
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples over images")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", action="append", default=[], help="extra line for the report (repeatable)")
    parser.add_argument(
        "--flip-tta",
        action="store_true",
        help="add the mirrored pass (the served model runs without it, to stay within its time budget)",
    )
    return parser.parse_args(argv)


def measure_latency(model: tf.keras.Model, runs: int = 60) -> dict[str, float]:
    """Time detector + sigmoid + decode on one face's [7, 160, 160, 3] batch in a tf.function, ms."""
    from serving.contract import MAX_LESIONS, REGION_NAMES, REGION_SIZE_PX

    @tf.function(input_signature=[tf.TensorSpec([None, REGION_SIZE_PX, REGION_SIZE_PX, 3], tf.float32)])
    def served(images: tf.Tensor) -> tf.Tensor:
        return decode_peaks(tf.sigmoid(model(images, training=False)), MAX_LESIONS)

    rng = np.random.default_rng(0)
    batch = tf.constant(
        rng.integers(0, 256, (len(REGION_NAMES), REGION_SIZE_PX, REGION_SIZE_PX, 3)), tf.float32
    )
    for _ in range(5):
        served(batch).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        served(batch).numpy()
        times.append((time.perf_counter() - start) * 1e3)
    values = np.array(times)
    return {
        "min_ms": float(values.min()),
        "p50_ms": float(np.median(values)),
        "p90_ms": float(np.percentile(values, 90)),
    }


def grade_report(
    counts: NDArray[np.int64], grades: NDArray[np.int64], edges: list[float]
) -> dict[str, object]:
    """Accuracy and confusion matrix of count -> grade bands."""
    predicted = apply_bands(counts, (edges[0], edges[1], edges[2]))
    return {
        "band_edges": edges,
        "accuracy": float(np.mean(predicted == grades)),
        "confusion": confusion(grades, predicted).tolist(),
        "predicted": predicted,
    }


def fit_count_calibration(predicted: NDArray[np.int64], labelled: NDArray[np.int64]) -> IsotonicRegression:
    """Monotone map from detected to labelled lesion count, fitted on valid.

    The detector over-counts clear skin (stray candidates) and under-counts crowded severe skin
    (neighbouring lesions merge at stride 4); an isotonic regression (Barlow et al. 1972) undoes both
    without changing the order of photos, so grading bands are unaffected.
    """
    return IsotonicRegression(increasing=True, out_of_bounds="clip").fit(predicted, labelled)


def _matches(
    args: argparse.Namespace, calibration: dict[str, Any], model: tf.keras.Model, split: str
) -> tuple[list[Sample], list[ImageMatches]]:
    """Peaks of one split matched to its boxes, in the configuration being evaluated."""
    samples = load_split(args.data, split)
    images = load_images(args.data, split, samples, None)
    predictor = make_predictor(model, flip_tta=args.flip_tta)
    started = time.monotonic()
    peaks = predict_peaks(predictor, images, int(calibration["eval_image_px"]))
    logger.info("predicted %d %s images in %.1f s", len(images), split, time.monotonic() - started)
    return samples, match_split(peaks, samples)


def evaluate(args: argparse.Namespace) -> dict[str, object]:
    """Score the detector on test; returns the JSON report.

    Every choice for the configuration evaluated (score threshold, grade bands, count calibration)
    is made here on valid, so the served configuration (no mirrored pass) is measured as served.
    """
    calibration = json.loads(args.calibration.read_text())
    model = build_detector(int(calibration["width"]), context=bool(calibration.get("context", False)))
    model.load_weights(args.weights)
    valid_samples, valid_matches = _matches(args, calibration, model, "valid")
    valid_score = score_split(valid_matches)  # the best-F1 threshold on valid
    threshold = valid_score.threshold
    valid_table = count_table(valid_matches, threshold)
    valid_grades = np.array([s.grade for s in valid_samples], dtype=np.int64)
    band_edges = fit_bands(valid_table[:, 1], valid_grades)
    edges, true_edges = list(band_edges), list(fit_bands(valid_table[:, 2], valid_grades))
    counter = fit_count_calibration(valid_table[:, 1], valid_table[:, 2])
    samples, matches = _matches(args, calibration, model, args.split)
    table = count_table(matches, threshold)
    score = score_split(matches, threshold)
    calibrated = counter.predict(table[:, 1].astype(np.float64))
    grades = np.array([s.grade for s in samples], dtype=np.int64)
    by_prediction = grade_report(table[:, 1], grades, edges)
    by_truth = grade_report(table[:, 2], grades, true_edges)
    intervals = bootstrap_intervals(
        table, grades, np.asarray(by_prediction.pop("predicted")), args.seed, args.bootstrap, calibrated
    )
    by_truth.pop("predicted")
    per_grade = {
        GRADE_NAMES[g]: {
            "images": int(np.sum(grades == g)),
            "mean_true": float(table[grades == g, 2].mean()) if np.any(grades == g) else 0.0,
            "mean_predicted": float(table[grades == g, 1].mean()) if np.any(grades == g) else 0.0,
            "mae": float(np.mean(np.abs(table[grades == g, 1] - table[grades == g, 2])))
            if np.any(grades == g)
            else 0.0,
        }
        for g in range(GRADES)
    }
    return {
        "split": args.split,
        "images": len(samples),
        "labelled_lesions": int(table[:, 2].sum()),
        "predicted_lesions": int(table[:, 1].sum()),
        "matching": "a prediction is a true positive when its centre falls inside a not-yet-matched "
        "labelled box; greedy by score, one-to-one, nearest box centre on ties; no IoU (centres only)",
        "score_threshold": threshold,
        "eval_image_px": calibration["eval_image_px"],
        "eval_flip_tta": args.flip_tta,
        "lesions": {"precision": score.precision, "recall": score.recall, "f1": score.f1},
        "count_mae": score.mae,
        "count_mae_calibrated": float(np.mean(np.abs(calibrated - table[:, 2]))),
        "count_calibration": {
            "method": "isotonic regression of labelled on detected count, fitted on valid",
            "valid_images": len(valid_table),
            "detected": [float(v) for v in counter.X_thresholds_],
            "labelled": [float(v) for v in counter.y_thresholds_],
        },
        "count_by_grade": per_grade,
        "grading_from_predicted_counts": by_prediction,
        "grading_from_true_counts": by_truth,
        "bootstrap_95ci": {k: list(v) for k, v in intervals.items()},
        "bootstrap": {"resamples": args.bootstrap, "seed": args.seed, "unit": "image"},
        "latency_7x160": measure_latency(model),
        "parameters": int(model.count_params()),
        "training": {
            k: calibration[k]
            for k in (
                "command",
                "seed",
                "train_minutes",
                "total_minutes",
                "steps",
                "batch",
                "train_scale_range",
                "train_patch_px",
                "width",
                "context",
                "train_lesion_focus",
            )
            if k in calibration
        },
        "valid": {
            "images": len(valid_samples),
            "precision": valid_score.precision,
            "recall": valid_score.recall,
            "f1": valid_score.f1,
            "mae": valid_score.mae,
            "grading_accuracy": float(np.mean(apply_bands(valid_table[:, 1], band_edges) == valid_grades)),
        },
        "notes": list(args.note),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m export.acne.evaluate`."""
    from export.acne.report import render_markdown

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    configure_tensorflow(args.threads, args.seed)
    report = evaluate(args)
    args.report_json.parent.mkdir(parents=True, exist_ok=True)
    args.report_json.write_text(json.dumps(report, indent=2) + "\n")
    args.report_md.write_text(render_markdown(report))
    logger.info(
        "%s: F1 %.3f, MAE %.2f, grading %.3f (ceiling %.3f); wrote %s",
        args.split,
        report["lesions"]["f1"],  # type: ignore[index]
        report["count_mae"],
        report["grading_from_predicted_counts"]["accuracy"],  # type: ignore[index]
        report["grading_from_true_counts"]["accuracy"],  # type: ignore[index]
        args.report_md,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
