"""The ACNE04 evaluation report as Markdown: renders the JSON report of `export.acne.evaluate`."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

GRADE_NAMES = ("mild", "moderate", "severe", "very severe")
TARGETS = {"f1": 0.70, "mae": 3.5, "grading_accuracy": 0.80}


def _ci(report: dict[str, Any], key: str, digits: int = 3) -> str:
    low, high = report["bootstrap_95ci"][key]
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _confusion_table(matrix: list[list[int]]) -> list[str]:
    lines = ["| labelled \\ predicted | " + " | ".join(GRADE_NAMES) + " |", "| --- |" + " ---: |" * 4]
    for name, row in zip(GRADE_NAMES, matrix, strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _met(value: float, target: float, lower_is_better: bool = False) -> str:
    ok = value <= target if lower_is_better else value >= target
    return "met" if ok else "**not met**"


def render_markdown(report: dict[str, Any]) -> str:
    """Render the report dict as the Markdown committed in reports/acne04_eval.md."""
    lesions, training, valid = report["lesions"], report["training"], report["valid"]
    graded, ceiling = report["grading_from_predicted_counts"], report["grading_from_true_counts"]
    latency = report["latency_7x160"]
    accuracy = graded["accuracy"]
    lines = [
        "# ACNE04 acne lesion detector: held-out test evaluation",
        "",
        f"Split: ACNE04 **{report['split']}** ({report['images']} images, "
        f"{report['labelled_lesions']} labelled lesions), "
        "never used for training or for any choice. The epoch, input scale, test-time flip, score "
        "threshold, count calibration and "
        "count-to-grade bands were all chosen on valid (283 images); the network was fitted on train only. "
        "Data: Roboflow export of ACNE04 (Wu et al., ICCV 2019), research use only.",
        "",
        f"## Results on {report['split']}",
        "",
        "| metric | value | 95% CI (bootstrap over images) | target |",
        "| --- | ---: | --- | --- |",
        f"| lesion precision | {lesions['precision']:.3f} | | |",
        f"| lesion recall | {lesions['recall']:.3f} | | |",
        f"| lesion F1 | {lesions['f1']:.3f} | {_ci(report, 'f1')} | >= 0.70, "
        f"{_met(lesions['f1'], TARGETS['f1'])} |",
        f"| counting MAE, raw detections (lesions/image) | {report['count_mae']:.2f} | "
        f"{_ci(report, 'mae', 2)} | <= 3.5, "
        f"{_met(report['count_mae'], TARGETS['mae'], lower_is_better=True)} |",
        f"| counting MAE, count calibrated on valid (lesions/image) | {report['count_mae_calibrated']:.2f} | "
        f"{_ci(report, 'mae_calibrated', 2)} | <= 3.5, "
        f"{_met(report['count_mae_calibrated'], TARGETS['mae'], lower_is_better=True)} |",
        f"| grading accuracy (bands on predicted counts) | {accuracy:.3f} | "
        f"{_ci(report, 'grading_accuracy')} | "
        f">= 0.80, {_met(accuracy, TARGETS['grading_accuracy'])} |",
        f"| grading accuracy from true counts (ceiling) | {ceiling['accuracy']:.3f} | | |",
        "",
        f"Predicted {report['predicted_lesions']} lesions against {report['labelled_lesions']} labelled. "
        "The calibrated count maps each photo's detected count through an isotonic regression of labelled "
        f"on detected counts fitted on the {report['count_calibration']['valid_images']} valid photos "
        "(monotone, so it leaves the grading unchanged). "
        f"Bootstrap: {report['bootstrap']['resamples']} resamples of the {report['split']} images, seed "
        f"{report['bootstrap']['seed']}, percentile intervals.",
        "",
        "**Matching rule.** "
        + report["matching"][0].upper()
        + report["matching"][1:]
        + ". The detector predicts lesion centres, not "
        "boxes, so this is a point-in-box criterion: it is more lenient than the IoU >= 0.5 rule of box "
        "detectors for large boxes and about as strict for small ones; numbers are not comparable to box "
        "mAP.",
        "",
        "### Counting by grade",
        "",
        "| grade | images | mean labelled | mean predicted | MAE |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["count_by_grade"].items():
        lines.append(
            f"| {name} | {row['images']} | {row['mean_true']:.1f} | {row['mean_predicted']:.1f} | "
            f"{row['mae']:.2f} |"
        )
    edges = ", ".join(f"{e:g}" for e in graded["band_edges"])
    true_edges = ", ".join(f"{e:g}" for e in ceiling["band_edges"])
    lines += [
        "",
        "### Grading",
        "",
        "Grade = number of band edges <= lesion count (0 mild, 1 moderate, 2 severe, 3 very severe). Edges "
        "were fitted on **valid** by exhaustive search for the best grading accuracy (each edge centred in "
        "its run "
        f"of equally good values): on predicted counts, edges {edges}; on true counts (the ceiling, same "
        f"procedure), edges {true_edges}. ACNE04's Hayashi bands are 0-5, 6-20, 21-50, >50 on whole "
        "faces.",
        "",
        "Confusion matrix, bands on predicted counts:",
        "",
        *_confusion_table(graded["confusion"]),
        "",
        "Confusion matrix, bands on true counts (ceiling):",
        "",
        *_confusion_table(ceiling["confusion"]),
        "",
        "### Gap to the anchors",
        "",
        f"ACNE04's published anchor is about 84% grading accuracy (Wu et al., ICCV 2019: ImageNet-pretrained "
        f"ResNet-50, label-distribution learning, full-resolution originals, 5-fold); later work reports "
        f"83.7-87.3%, and the labels' own repeat-annotation agreement is about 79%. This detector reaches "
        f"{accuracy:.1%} ({(accuracy - 0.84) * 100:+.1f} points against 84%) while being trained from "
        "scratch "
        "in "
        f"under an hour on 2 CPU cores, at {report['parameters']:,} parameters, on 640 px stretched Roboflow "
        "images. The comparison is indicative only: a different split (the fixed Roboflow test split of "
        f"{report['images']} images, not 5-fold), and grades here come from per-photo counts through bands "
        "fitted on valid. With so few test images the interval is wide.",
        "",
        "## Valid (selection split)",
        "",
        f"precision {valid['precision']:.3f}, recall {valid['recall']:.3f}, F1 {valid['f1']:.3f}, counting "
        "MAE "
        f"{valid['mae']:.2f}, grading accuracy {valid['grading_accuracy']:.3f} (bands fitted on these same "
        "predicted counts, so optimistic).",
        "",
        "## Model and training",
        "",
        f"* Network: CenterNet-style centre heatmap at stride 4 (Zhou et al. 2019), plain conv encoder to "
        f"stride 16 with a U-Net/FPN decoder, CornerNet focal loss; {report['parameters']:,} parameters in "
        "the served form (batch norm folded). Trained from scratch, no pretrained weights.",
        f"* Command: `{training['command']}` (seed {training['seed']}); {training['steps']} steps of "
        f"{training['batch']} patches of {training['train_patch_px']} px at scales "
        f"{training['train_scale_range'][0]}-{training['train_scale_range'][1]}x of native 640 px "
        f"({training.get('train_lesion_focus', 0.0):.0%} of them centred near a labelled lesion), random "
        "rotation, flips, blur and colour jitter; AdamW with cosine decay over the time budget, weight "
        "averaging, and the best periodic valid check kept; "
        f"training {training['train_minutes']:.1f} min, whole command {training['total_minutes']:.1f} min "
        "wall "
        "clock on 2 CPU cores.",
        f"* Evaluation: whole 640 px photos resized (INTER_AREA) to {report['eval_image_px']} px, mirrored "
        f"test-time augmentation {'on' if report['eval_flip_tta'] else 'off'}, score threshold "
        f"{report['score_threshold']:.2f}, up to 128 peaks per image.",
        f"* Served-shape latency, detector + sigmoid + peak decoding on one face's [7, 160, 160, 3] batch "
        f"in a tf.function, 2 threads: min {latency['min_ms']:.1f} ms, median {latency['p50_ms']:.1f} ms, "
        f"p90 {latency['p90_ms']:.1f} ms (timings on a shared machine vary).",
        "* Served setting: the served model runs on 160 px face-region crops that show skin at roughly "
        "0.5-0.9x of ACNE04's resolution; training covered that range, but this report measures whole photos "
        "at one scale, not region crops.",
        "",
    ]
    if report.get("notes"):
        lines += ["## Notes", "", *(f"* {note}" for note in report["notes"]), ""]
    return "\n".join(lines)
