"""The concern report along the service's own path, a version beside the one before it:
reports/concerns_eval.{md,json}.

    python -m export concerns-report [--versions 6 7]

Every photo goes through the orchestrator's pipeline (decode, face stage, patch slots, the version's
model run in this process, post-scoring with its calibration), exactly as a request would, only without
the model server between. Read: the held-out part of data/ages (export/ages.py; nothing was chosen on
it), each portrait as sent and re-sent the way a messaging app sends it (90% size, JPEG quality 70), and
the photos of data/faces. Figures carry 95% bootstrap intervals over photos.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.ages import read_portraits
from export.concerns.evaluate import rho_with_interval, with_interval
from export.concerns.zones import resend
from export.inprocess import InProcessModel
from orchestrator.errors import ShineError
from orchestrator.face.patches import NEEDED_SCALES
from orchestrator.pipeline import Pipeline, Timer
from orchestrator.settings import Settings
from orchestrator.web.app import create_app
from orchestrator.web.services import EXTENSION
from serving import contract
from serving.concerns import measured

logger = logging.getLogger(__name__)

SEVERITIES: tuple[str, ...] = ("severe", "moderate", "mild", "none")
RESEND = (0.9, 70)
# The targets on the held-out part.
TARGETS = {"age_rho": -0.5, "under45_severe": 0.10, "severe": 0.20, "scored": 0.95}
MUST_SCORE: tuple[str, ...] = ("wrinkles", "redness", "dark_spots", "dark_circles", "oiliness")

Answer = dict[str, Any]


def pipeline_for(version_dir: Path, work: Path) -> Pipeline:
    """Shine's pipeline with `version_dir`'s model in process, over a model repository holding only it."""
    repo = work / f"repo{version_dir.name}"
    (repo / contract.MODEL_NAME).mkdir(parents=True, exist_ok=True)
    link = repo / contract.MODEL_NAME / version_dir.name
    if not link.exists():
        link.symlink_to(version_dir.resolve())
    settings = Settings(model_repo_dir=repo)
    app = create_app(settings, client=InProcessModel(settings, link))
    pipeline: Pipeline = app.extensions[EXTENSION].pipeline
    return pipeline


def analyse(pipeline: Pipeline, data: bytes) -> Answer | None:
    """The answer's JSON as the API returns it, or None where the service refuses the photo."""
    try:
        return pipeline.analyze(data, Timer()).dump()
    except ShineError:
        return None


def _concern(answer: Answer | None, name: str) -> tuple[float | None, str | None, str | None]:
    """(score, severity, reason code) of one concern in an answer."""
    if answer is None:
        return None, None, "refused"
    entry = answer["concerns"][name]
    return entry.get("score"), entry.get("severity"), entry.get("reason_code")


def summarise(
    answers: dict[str, Answer | None],
    resent: dict[str, Answer | None],
    ages: dict[str, int],
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    """Per measured concern: share scored, each severity's share, under-45s called severe, score vs age,
    re-send agreement; and the photos' scale."""
    out: dict[str, Any] = {}
    mean: Callable[[NDArray[np.float64]], float] = lambda v: float(np.mean(v))  # noqa: E731
    for record in measured():
        name = record.name
        rows = [(_concern(a, name), ages[n]) for n, a in answers.items()]
        scored = [(s, sev, age) for (s, sev, _), age in rows if s is not None]
        reasons: dict[str, int] = {}
        for (s, _, code), _age in rows:
            if s is None:
                reasons[str(code)] = reasons.get(str(code), 0) + 1
        entry: dict[str, Any] = {
            "scored": with_interval([float(s is not None) for (s, _, _), _ in rows], mean, rounds, seed),
            "reasons": reasons,
            "score_vs_age": rho_with_interval(
                [s for s, _, _ in scored], [a for _, _, a in scored], rounds, seed
            ),
            "under45_severe": with_interval(
                [float(sev == "severe") for _, sev, a in scored if a < 45], mean, rounds, seed
            ),
        }
        for label in SEVERITIES:
            entry[label] = with_interval([float(sev == label) for _, sev, _ in scored], mean, rounds, seed)
        kept, change = [], []
        for n, answer in answers.items():
            first, second = _concern(answer, name), _concern(resent.get(n), name)
            if first[0] is not None and second[0] is not None:
                kept.append(float(first[1] == second[1]))
                change.append(abs(float(first[0]) - float(second[0])))
        entry["resend"] = {
            "pairs": len(kept),
            "kept": with_interval(kept, mean, rounds, seed),
            "median_change": with_interval(change, lambda v: float(np.median(v)), rounds, seed),
        }
        out[name] = entry
    scales = [a["quality"].get("px_per_mm") for a in answers.values() if a is not None]
    known = [s for s in scales if s is not None]
    out["_scale"] = {
        "px_per_mm_percentiles": dict(
            zip(
                ["min", "p5", "p50", "p95", "max"],
                np.percentile(known, [0, 5, 50, 95, 100]).tolist(),
                strict=True,
            )
        )
        if known
        else {},
        "refused": sum(a is None for a in answers.values()),
    }
    return out


def run(
    data: Path, repo: Path, versions: list[int], out: Path, rounds: int, seed: int, notes: list[str]
) -> dict[str, Any]:
    """Both versions over the same photos; writes out/concerns_eval.{json,md}."""
    held_out = read_portraits(data / "ages", "validation")
    ages = {p.path.name: p.age for p in held_out}
    faces = sorted(p for p in (data / "faces").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    report: dict[str, Any] = {
        "held_out": {"portraits": len(held_out), "under45": sum(a < 45 for a in ages.values())},
        "resend": {"factor": RESEND[0], "jpeg_quality": RESEND[1]},
        "bootstrap": {"rounds": rounds, "seed": seed, "unit": "photo"},
        "notes": notes,
        "versions": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for version in versions:
            pipeline = pipeline_for(repo / contract.MODEL_NAME / str(version), Path(tmp))
            answers = {p.path.name: analyse(pipeline, p.path.read_bytes()) for p in held_out}
            resent = {p.path.name: analyse(pipeline, resend(p.path.read_bytes(), *RESEND)) for p in held_out}
            face_answers = {p.name: analyse(pipeline, p.read_bytes()) for p in faces}
            logger.info(
                "version %d: %d held-out portraits, %d faces", version, len(answers), len(face_answers)
            )
            report["versions"][str(version)] = {
                "held_out": summarise(answers, resent, ages, rounds, seed),
                "faces": {
                    name: {
                        c.name: dict(zip(("score", "severity", "reason"), _concern(a, c.name), strict=True))
                        for c in measured()
                    }
                    for name, a in face_answers.items()
                },
            }
    out.mkdir(parents=True, exist_ok=True)
    (out / "concerns_eval.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "concerns_eval.md").write_text(markdown(report, versions))
    return report


def _figure(entry: dict[str, Any], percent: bool = True) -> str:
    value, (low, high) = entry["value"], entry["ci95"]
    if entry["n"] == 0 or not np.isfinite(value):
        return "n/a"
    if percent:
        return f"{100 * value:.0f}% ({100 * low:.0f}-{100 * high:.0f})"
    return f"{value:.2f} ({low:.2f} to {high:.2f})"


def markdown(report: dict[str, Any], versions: list[int]) -> str:
    shown = [str(v) for v in versions]
    new = shown[-1]
    held, resent = report["held_out"], report["resend"]
    header = "| " + " | ".join(f"version {v}" for v in shown) + " |"
    rule = " --- |" * len(shown)
    lines = [
        "# Concern scores along the service's path",
        "",
        "Written by `python -m export concerns-report` from `reports/concerns_eval.json`: every photo "
        "through the orchestrator's own pipeline (decode, face stage, patch slots, the version's model in "
        "process, post-scoring with its calibration). Held-out part of `data/ages` "
        f"({held['portraits']} portraits, {held['under45']} under 45; nothing was chosen on it), each "
        f"also re-sent at {round(resent['factor'] * 100)}% size as JPEG quality {resent['jpeg_quality']}. "
        "Intervals: 95% bootstrap over photos.",
        "",
        *(f"* {note}" for note in report.get("notes", [])),
        "",
        "## What each concern measures, and at what scale",
        "",
        "| concern | read at | zones | why that scale |",
        "| --- | --- | --- | --- |",
    ]
    for name, need in NEEDED_SCALES.items():
        lines.append(f"| {name} | {need.px_per_mm:g} px/mm | {', '.join(need.zones)} | {need.why} |")
    scale = report["versions"][new]["held_out"]["_scale"]["px_per_mm_percentiles"]
    if scale:
        figures = ", ".join(f"{k} {v:.2f}" for k, v in scale.items())
        lines += ["", f"Held-out portraits' own scale: {figures} px/mm. Below a concern's scale it is not "]
        lines[-1] += "scored (`photo_too_small`)."
    lines += ["", "## Targets (held-out part)", "", "| target " + header, "| --- |" + rule]

    def cell(version: str, concern: str, key: str, percent: bool) -> str:
        return _figure(report["versions"][version]["held_out"][concern][key], percent)

    rows = [("wrinkle score vs age, Spearman <= -0.5", "wrinkles", "score_vs_age", False)]
    rows += [("under-45s called severe (wrinkles) <= 10%", "wrinkles", "under45_severe", True)]
    rows += [(f"{c}: severe <= 20%", c, "severe", True) for c in MUST_SCORE]
    rows += [(f"{c}: scored >= 95%", c, "scored", True) for c in MUST_SCORE]
    for label, concern, key, percent in rows:
        lines.append(f"| {label} | " + " | ".join(cell(v, concern, key, percent) for v in shown) + " |")
    for version in reversed(shown):
        lines += [
            "",
            f"## Version {version}",
            "",
            "| concern | scored | severe | moderate | mild | none | under-45 severe | score vs age | "
            "re-send: severity kept | re-send: median change | not scored because |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for record in measured():
            e = report["versions"][version]["held_out"][record.name]
            pairs = e["resend"]
            severities = " | ".join(_figure(e[label]) for label in SEVERITIES)
            reasons = ", ".join(f"{k} {v}" for k, v in e["reasons"].items()) or "-"
            lines.append(
                f"| {record.name} | {_figure(e['scored'])} | {severities} | {_figure(e['under45_severe'])} | "
                f"{_figure(e['score_vs_age'], False)} | {_figure(pairs['kept'])} ({pairs['pairs']} pairs) | "
                f"{_figure(pairs['median_change'], False)} | {reasons} |"
            )
    lines += ["", "## data/faces: wrinkles and dark circles", "", "| photo " + header, "| --- |" + rule]
    for name in report["versions"][new]["faces"]:
        cells = [_face_cell(report["versions"][v]["faces"].get(name, {})) for v in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _face_cell(concerns: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name in ("wrinkles", "dark_circles"):
        got = concerns.get(name)
        if got is None:
            continue
        score = f" ({got['score']:.0f})" if got["score"] is not None else ""
        parts.append(f"{name} {got['severity'] or got['reason']}{score}")
    return "; ".join(parts)


def add_arguments(parser: argparse.ArgumentParser, data: Path, root: Path) -> None:
    parser.add_argument("--data", type=Path, default=data, help="the shared data folder (ages/, faces/)")
    parser.add_argument("--model-repo", type=Path, default=root / "model_repo")
    parser.add_argument("--versions", type=int, nargs="+", default=[6, 7], help="previous, then new")
    parser.add_argument("--out", type=Path, default=root / "reports", help="where the report is written")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over photos")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--note", action="append", default=[], help="a line for the report (repeatable)")
