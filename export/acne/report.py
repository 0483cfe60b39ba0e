"""The ACNE04 evaluation report as Markdown: renders the JSON report of `export.acne.evaluate`."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

GRADE_NAMES = ("mild", "moderate", "severe", "very severe")
# The issue's floor and its stretch targets on the served path; ACNE04's published grading anchor.
MUST = {"analysed_share": 0.90, "grading_accuracy": 0.75, "f1_skin": 0.66, "count_mae": 4.0}
STRETCH = {"f1_skin": 0.70, "count_mae": 3.5, "grading_accuracy": 0.78}
LOWER_IS_BETTER = {"count_mae"}


def _value(report: dict[str, Any], key: str) -> str:
    value = report["figures"][key]
    low, high = report["bootstrap_95ci"][key]
    if key.startswith(("count_mae",)):
        return f"{value:.2f} ({low:.2f}-{high:.2f})"
    if key.endswith("share") or key.startswith("grading"):
        return f"{100 * value:.1f}% ({100 * low:.1f}-{100 * high:.1f}%)"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def _verdict(key: str, value: float) -> str:
    parts = []
    for name, targets in (("must", MUST), ("stretch", STRETCH)):
        if key not in targets:
            continue
        target = targets[key]
        ok = value <= target if key in LOWER_IS_BETTER else value >= target
        wanted = f"<= {target}" if key in LOWER_IS_BETTER else f">= {target:g}"
        gap = "" if ok else f", short by {abs(value - target):.3g}"
        parts.append(f"{name} {wanted}: {'met' if ok else '**not met**'}{gap}")
    return "; ".join(parts)


def _confusion_table(matrix: list[list[int]]) -> list[str]:
    lines = ["| labelled \\ reported | " + " | ".join(GRADE_NAMES) + " |", "| --- |" + " ---: |" * 4]
    for name, row in zip(GRADE_NAMES, matrix, strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """Render the report dict as the Markdown committed in reports/acne04_eval.md."""
    f = report["figures"]
    rows = [
        ("photos analysed", "analysed_share"),
        ("lesion F1, lesions on the skin the service read", "f1_skin"),
        ("lesion precision, same", "precision_skin"),
        ("lesion recall, same", "recall_skin"),
        ("lesion F1, all labelled lesions (refused photos' lesions count as missed)", "f1_all"),
        ("lesion recall, all labelled lesions", "recall_all"),
        ("count MAE, lesions per analysed photo (against all its labelled lesions)", "count_mae"),
        ("count MAE against the labelled lesions on read skin", "count_mae_skin"),
        ("grade agreement with ACNE04, analysed photos", "grading_accuracy"),
        ("grade agreement, all photos (a refused photo counts as wrong)", "grading_accuracy_all_photos"),
    ]
    lines = [
        "# ACNE04 acne: held-out evaluation on the served path",
        "",
        f"Model version **{report['version']}** ({report['description']}), ACNE04 **{report['split']}** "
        f"split: {report['photos']} photos, {report['labelled_lesions']} labelled lesions, never used for "
        "training or for any choice. Every photo went through the service's own code: decode, face stage "
        "(detection, landmarks, view, alignment, region mask), the version's SavedModel, post-scoring with "
        "the version's calibration (lesion threshold "
        f"{report['acne_threshold']:.3f} and grade model, both fitted on ACNE04 valid).",
        "",
        f"Matching: {report['matching']}. 95% intervals: percentile bootstrap over photos "
        f"({report['bootstrap']['resamples']} resamples, seed {report['bootstrap']['seed']}).",
        "",
        "| measure | served path (95% CI) | target |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {label} | {_value(report, key)} | {_verdict(key, f[key])} |" for label, key in rows]
    views = ", ".join(f"{name} {count}" for name, count in sorted(report["views"].items()))
    lines += [
        "",
        f"Views taken: {views}. Labelled lesions on the skin the service read: "
        f"{report['labelled_lesions_on_read_skin']}; in photos it refused: "
        f"{report['labelled_lesions_in_refused_photos']}.",
        "",
        "## Beside it: the same model on whole photos",
        "",
        "The photo squeezed into the model's input with every pixel marked skin, no face stage: how earlier "
        "versions were judged (their whole-photo figures were F1 0.643, count MAE 4.22, grading 74.6%).",
        "",
        "| measure | whole photos (95% CI) |",
        "| --- | --- |",
        f"| lesion F1 | {_value(report, 'f1_whole_photo')} |",
        f"| lesion precision / recall | {f['precision_whole_photo']:.3f} / {f['recall_whole_photo']:.3f} |",
        f"| count MAE | {_value(report, 'count_mae_whole_photo')} |",
        "",
        "## Grades (analysed photos)",
        "",
        *_confusion_table(report["confusion"]),
        "",
        "| grade | photos | analysed | mean labelled lesions | mean reported |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["by_grade"].items():
        lines.append(
            f"| {name} | {row['photos']} | {row['analysed']} | {row['mean_labelled']:.1f} | "
            f"{row['mean_reported']:.1f} |"
        )
    v = report["valid"]["figures"]
    lines += [
        "",
        f"## Valid ({report['valid']['photos']} photos; where the threshold and grade model were chosen)",
        "",
        f"Analysed {100 * v['analysed_share']:.1f}%, lesion F1 {v['f1_skin']:.3f} on read skin "
        f"({v['f1_all']:.3f} over all lesions), count MAE {v.get('count_mae', float('nan')):.2f}, "
        f"grade agreement {100 * v.get('grading_accuracy', float('nan')):.1f}%.",
        "",
        "ACNE04's published grading anchor is about 84% (ICCV 2019, 5-fold on the original photos); the "
        "labels' own repeat agreement is about 79%. ACNE04 is for academic use only: so is every model "
        "trained or calibrated on it.",
    ]
    if report["notes"]:
        lines += ["", "## Notes", "", *[f"* {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"
