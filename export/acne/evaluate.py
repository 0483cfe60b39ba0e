"""Evaluate a published version on ACNE04 through the service's own path, with bootstrap intervals.

    python -m export evaluate-acne [--version N] [--split test]

Each photo goes through what the service does with an upload: decode (orchestrator.decode), the face
stage (orchestrator.face: detection, landmarks, view, alignment, region mask), the version's SavedModel
(run in this process) and post-scoring with the version's own calibration (orchestrator.scoring). The
report gives the share of photos analysed, lesion precision / recall / F1 (a reported lesion is a hit
when it falls inside a labelled box, one-to-one), counted over the labelled lesions on the skin the
service read and over all labelled lesions, the count error, the grade agreement with ACNE04's grade
and its confusion matrix; beside them the same model on whole photos (no face stage), as earlier
versions were judged. Valid is reported too: every choice (threshold, grade model) was made there.
Nothing is tuned here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from export.acne.dataset import grade_from_name, parse_voc_boxes
from export.acne.metrics import GRADES, confusion, match_points
from orchestrator.decode.images import decode_image
from orchestrator.errors import NoFaceFound
from orchestrator.face.scene import SceneCheck
from orchestrator.face.stage import FaceGeometry
from orchestrator.predict.prediction import Prediction, batch_signals
from orchestrator.scoring.concerns import lesion_labels, usable_labels
from orchestrator.scoring.scorer import PostScorer, load_calibration
from orchestrator.settings import Settings
from serving import contract
from serving.concerns import ACNE_GRADES
from serving.repository import versions_on_disk

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "acne04"
Serve = Callable[
    [NDArray[np.uint8], NDArray[np.uint8]], tuple[dict[str, NDArray[np.float32]], NDArray[np.float32]]
]


@dataclass
class PhotoResult:
    """One ACNE04 photo through the served path."""

    file: str
    grade: int
    boxes: NDArray[np.float32]  # [N, 4] labelled lesions, photo pixels
    view: str = "refused"
    count: int = 0  # lesions the report counts
    predicted_grade: int = -1
    lesions: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))  # (y, x) by score
    on_skin: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per box
    whole_photo: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))  # (y, x) by score

    @property
    def analysed(self) -> bool:
        return self.view != "refused"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ACNE04 folder with index.csv")
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--version", type=int, default=None, help="default: the newest published")
    parser.add_argument("--split", default="test")
    parser.add_argument("--report-md", type=Path, default=ROOT / "reports" / "acne04_eval.md")
    parser.add_argument("--report-json", type=Path, default=ROOT / "reports" / "acne04_eval.json")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples over photos")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", action="append", default=[], help="extra line for the report (repeatable)")
    return parser.parse_args(argv)


def load_version(folder: Path) -> tuple[Serve, PostScorer]:
    """The version's serving signature as a function of (faces, masks), and its post-scorer. A version
    that also takes patch slots (contract 4) is sent empty ones: acne and the face's signals do not
    read them."""
    signature = tf.saved_model.load(str(folder)).signatures[contract.SIGNATURE_NAME]
    patched = contract.PATCH_INPUTS[0].name in signature.structured_input_signature[1]

    def serve(
        faces: NDArray[np.uint8], masks: NDArray[np.uint8]
    ) -> tuple[dict[str, NDArray[np.float32]], NDArray[np.float32]]:
        inputs = {"face": tf.constant(faces), "mask": tf.constant(masks)}
        if patched:
            for spec in contract.PATCH_INPUTS:
                inputs[spec.name] = tf.zeros([len(faces), *spec.shape[1:]], tf.uint8)
        out = {name: t.numpy() for name, t in signature(**inputs).items()}
        return batch_signals(out), out[contract.ACNE_PEAKS.name]

    calibration = load_calibration(folder / "assets.extra" / contract.CALIBRATION_FILE)
    return serve, PostScorer(calibration)


def run_photo(
    path: Path, geometry: FaceGeometry, serve: Serve, scorer: PostScorer, version: int
) -> PhotoResult:
    """One photo through decode, the face stage, the model and post-scoring."""
    result = PhotoResult(path.name, grade_from_name(path.name), parse_voc_boxes(path.with_suffix(".xml")))
    image = decode_image(path.read_bytes(), max_pixels=64_000_000, long_side_px=2000)
    result.whole_photo = whole_photo_lesions(image.rgb, serve, scorer.calibration.acne_threshold)
    try:
        found = geometry.analyse(image.rgb)
    except NoFaceFound:
        return result
    signals, peaks = serve(found.face[None], found.mask.labels[None])
    prediction = Prediction(contract.MODEL_NAME, version, {n: v[0] for n, v in signals.items()}, peaks[0])
    mask = found.mask
    usable = usable_labels(prediction.signals, mask.pixels, mask.visible)
    scored = scorer.score(prediction, lesion_labels(prediction.acne_peaks, mask.labels), usable)
    acne = scored.concerns["acne"].dump()
    result.view = found.view
    result.count = int(acne["count"] or 0)
    probabilities = acne.get("grade_probabilities") or {}
    result.predicted_grade = (
        ACNE_GRADES.index(max(probabilities, key=probabilities.__getitem__)) if probabilities else 0
    )
    size = found.alignment.size
    points = np.array(
        [[lesion["x_rel"] * size, lesion["y_rel"] * size] for lesion in acne["lesions"]]
    ).reshape(-1, 2)
    photo = found.alignment.to_photo(points) / image.scale
    result.lesions = photo[:, ::-1]  # (y, x), best first as the report lists them
    result.on_skin = boxes_on_read_skin(result.boxes, found, usable, image.scale)
    return result


def boxes_on_read_skin(
    boxes: NDArray[np.float32], found: Any, usable: dict[str, bool], scale: float
) -> NDArray[np.bool_]:
    """Which labelled lesions have their centre on skin the service read (a usable mask label)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=bool)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1) * scale
    frame = found.alignment.to_frame(centres)
    size = found.alignment.size
    inside = np.all((frame >= 0) & (frame < size), axis=1)
    labels = np.zeros(len(boxes), dtype=np.int64)
    cells = frame[inside].astype(int)
    labels[inside] = found.mask.labels[cells[:, 1], cells[:, 0]]
    read = np.array([False, *(usable[name] for name in contract.LABEL_NAMES)])
    return np.asarray(read[labels], dtype=bool)


def whole_photo_lesions(rgb: NDArray[np.uint8], serve: Serve, threshold: float) -> NDArray[np.float64]:
    """The model's lesions on the whole photo, squeezed into its input with every pixel marked skin
    (no face stage): how earlier versions were judged. (y, x) in photo pixels, best first."""
    size = contract.FACE_SIZE_PX
    height, width = rgb.shape[:2]
    squeezed = np.asarray(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    mask = np.full((size, size), contract.LABEL_NAMES.index(contract.OTHER_SKIN) + 1, np.uint8)
    _, peaks = serve(squeezed[None], mask[None])
    kept = peaks[0][peaks[0, :, 2] >= threshold]
    return np.stack([kept[:, 0] * height, kept[:, 1] * width], axis=1).astype(np.float64)


def lesion_counts(
    results: list[PhotoResult], skin_only: bool, whole_photo: bool = False
) -> NDArray[np.int64]:
    """[photos, 4]: reported lesions that hit a labelled box, reported lesions, labelled lesions found,
    labelled lesions (those on skin the service read, or all). A reported lesion is judged against
    every labelled box either way: one beside the mask's skin that hits a lesion is a true lesion."""
    rows = []
    for r in results:
        points = r.whole_photo if whole_photo else r.lesions
        counted = r.on_skin if skin_only and not whole_photo else np.ones(len(r.boxes), dtype=bool)
        if skin_only and not whole_photo and not r.analysed:
            counted = np.zeros(len(r.boxes), dtype=bool)
        hits, matched = match_points(points.astype(np.float32).reshape(-1, 2), r.boxes)
        rows.append((int(hits.sum()), len(points), int((matched & counted).sum()), int(counted.sum())))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def precision_recall_f1(table: NDArray[np.int64]) -> tuple[float, float, float]:
    """Micro precision (reported lesions that hit a box), recall (labelled lesions found) and F1."""
    hits, reported, found, labelled = (float(v) for v in table.sum(axis=0))
    precision = hits / reported if reported else 0.0
    recall = found / labelled if labelled else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def figures(results: list[PhotoResult]) -> dict[str, float]:
    """Every headline figure of one set of photos (a bootstrap resample or the split itself)."""
    analysed = [r for r in results if r.analysed]
    skin = lesion_counts(analysed, skin_only=True)
    every = lesion_counts(results, skin_only=False)
    whole = lesion_counts(results, skin_only=False, whole_photo=True)
    out = {"analysed_share": len(analysed) / len(results) if results else 0.0}
    for name, table in (("skin", skin), ("all", every), ("whole_photo", whole)):
        out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = precision_recall_f1(table)
    if analysed:
        counts = np.array([r.count for r in analysed])
        out["count_mae"] = float(np.mean(np.abs(counts - np.array([len(r.boxes) for r in analysed]))))
        out["count_mae_skin"] = float(
            np.mean(np.abs(counts - np.array([int(r.on_skin.sum()) for r in analysed])))
        )
        out["grading_accuracy"] = float(np.mean([r.predicted_grade == r.grade for r in analysed]))
    out["grading_accuracy_all_photos"] = float(np.mean([r.predicted_grade == r.grade for r in results]))
    out["count_mae_whole_photo"] = float(np.mean(np.abs(whole[:, 1] - whole[:, 3])))
    return out


def bootstrap(results: list[PhotoResult], rounds: int, seed: int) -> dict[str, list[float]]:
    """95% percentile intervals of every figure, resampling photos."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        pick = rng.integers(0, len(results), size=len(results))
        for key, value in figures([results[i] for i in pick]).items():
            samples.setdefault(key, []).append(value)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}


def split_photos(data: Path, split: str) -> list[Path]:
    return sorted(p for p in (data / split).glob("*.jpg"))


def run_split(
    data: Path, split: str, geometry: FaceGeometry, serve: Serve, scorer: PostScorer, version: int
) -> list[PhotoResult]:
    started = time.monotonic()
    results = [run_photo(path, geometry, serve, scorer, version) for path in split_photos(data, split)]
    logger.info(
        "%s: %d photos through the served path in %.0f s", split, len(results), time.monotonic() - started
    )
    return results


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    base = args.model_repo / contract.MODEL_NAME
    version = args.version or max(versions_on_disk(base))
    folder = base / str(version)
    serve, scorer = load_version(folder)
    settings = Settings()
    geometry = FaceGeometry(scene=SceneCheck(settings.scene_model_path))
    valid = run_split(args.data, "valid", geometry, serve, scorer, version)
    held_out = run_split(args.data, args.split, geometry, serve, scorer, version)
    analysed = [r for r in held_out if r.analysed]
    views: dict[str, int] = {}
    for r in held_out:
        views[r.view] = views.get(r.view, 0) + 1
    card = json.loads((folder / "assets.extra" / contract.MODEL_CARD_JSON).read_text())
    return {
        "version": version,
        "description": card.get("description", ""),
        "split": args.split,
        "photos": len(held_out),
        "views": views,
        "labelled_lesions": int(sum(len(r.boxes) for r in held_out)),
        "labelled_lesions_on_read_skin": int(sum(int(r.on_skin.sum()) for r in analysed)),
        "labelled_lesions_in_refused_photos": int(sum(len(r.boxes) for r in held_out if not r.analysed)),
        "acne_threshold": scorer.calibration.acne_threshold,
        "figures": figures(held_out),
        "bootstrap_95ci": bootstrap(held_out, args.bootstrap, args.seed),
        "bootstrap": {"resamples": args.bootstrap, "seed": args.seed, "unit": "photo"},
        "confusion": confusion(
            np.array([r.grade for r in analysed], dtype=np.int64),
            np.array([r.predicted_grade for r in analysed], dtype=np.int64),
        ).tolist(),
        "by_grade": {
            ACNE_GRADES[g]: {
                "photos": sum(1 for r in held_out if r.grade == g),
                "analysed": sum(1 for r in analysed if r.grade == g),
                "mean_labelled": float(np.mean([len(r.boxes) for r in analysed if r.grade == g] or [0])),
                "mean_reported": float(np.mean([r.count for r in analysed if r.grade == g] or [0])),
            }
            for g in range(GRADES)
        },
        "valid": {"photos": len(valid), "figures": figures(valid)},
        "matching": "a reported lesion is a hit when its position falls inside a labelled box not matched "
        "yet; greedy in the report's order (by score), one-to-one, nearest box centre on ties; no IoU. "
        "Precision: reported lesions that hit any labelled box; recall: labelled lesions hit, among those "
        "on the skin the service read, or among all",
        "notes": list(args.note),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m export evaluate-acne`."""
    from export.acne.report import render_markdown

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    report = evaluate(args)
    args.report_json.parent.mkdir(parents=True, exist_ok=True)
    args.report_json.write_text(json.dumps(report, indent=2) + "\n")
    args.report_md.write_text(render_markdown(report))
    f = report["figures"]
    logger.info(
        "%s, version %d: analysed %.1f%%, F1 %.3f (skin) / %.3f (all), MAE %.2f, grading %.1f%%; wrote %s",
        args.split,
        report["version"],
        100 * f["analysed_share"],
        f["f1_skin"],
        f["f1_all"],
        f["count_mae"],
        100 * f["grading_accuracy"],
        args.report_md,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
