"""The concern measures' design and evaluation on data/ages, figures with bootstrap intervals.

python -m export concerns-eval       # training part + data/faces: choose, fit -> reports/concerns_design.*

The design run reads only the training part of data/ages (export/ages.py) and data/faces: it chooses
which wrinkle sites combine (rule: a site is kept when its line strength follows age on the training
part with Spearman >= MIN_SITE_RHO and a bootstrap interval above 0), fits their normalisation and the
adult reference, and measures re-send stability. The held-out part is read by
`python -m export concerns-report` (export/concerns/served.py), along the service's own path, with a
version published from what this run wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from export.ages import Portrait, assign_splits, read_portraits
from export.concerns import measures
from export.concerns.combine import CONCERNS, WRINKLE_GROUPS, Design, concern_values, wrinkle_group_values
from export.concerns.report import design_markdown
from export.concerns.zones import VARIANTS, Reading, ZoneReader
from orchestrator.face.patches import NEEDED_SCALES
from orchestrator.scoring.reference import SEVERITIES, AdultReference, severity

logger = logging.getLogger(__name__)

MIN_SITE_RHO = 0.2
# Only responses that answer a line whatever its direction may be chosen: forehead lines run across
# the face, glabellar lines up it, crow's feet fan out. hxx and hyy are reported beside them, not chosen.
ORIENTATION_FREE: tuple[str, ...] = ("line", "across", "acrossmax", "acrossdeep")
# Faces of data/faces that are not adults' faces, left out of the reference.
NOT_ADULT_FACES: dict[str, str] = {
    "sn_sophia.jpg": "a humanoid robot",
    "sn_classroom_in_tanzania.jpg": "children",
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ranks 1..n, ties sharing their mean rank."""
    sorter = np.argsort(values, kind="mergesort")
    ordered = values[sorter]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.flatnonzero(first)
    counts = np.diff(np.concatenate([starts, [len(values)]]))
    ranked = np.empty(len(values))
    ranked[sorter] = (starts + (counts + 1) / 2.0)[np.cumsum(first) - 1]
    return ranked


def spearman(x: Sequence[float] | NDArray[np.float64], y: Sequence[float] | NDArray[np.float64]) -> float:
    """Spearman's rank correlation (Pearson on tie-averaged ranks); nan below 3 pairs."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 3:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def bootstrap(statistic: Callable[[NDArray[np.int64]], float], n: int, rounds: int, seed: int) -> list[float]:
    """95% percentile interval of `statistic` over `rounds` resamples (with replacement) of n items."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, size=n)) for _ in range(rounds)] if n else []
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def with_interval(
    values: Sequence[float], statistic: Callable[[NDArray[np.float64]], float], rounds: int, seed: int
) -> dict[str, object]:
    data = np.asarray(values, dtype=np.float64)
    return {
        "value": statistic(data) if len(data) else float("nan"),
        "ci95": bootstrap(lambda pick: statistic(data[pick]), len(data), rounds, seed),
        "n": len(data),
    }


def rho_with_interval(x: Sequence[float], y: Sequence[float], rounds: int, seed: int) -> dict[str, object]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return {
        "value": spearman(a, b),
        "ci95": bootstrap(lambda pick: spearman(a[pick], b[pick]), len(a), rounds, seed),
        "n": len(a),
    }


@dataclass
class Scored:
    """One photo variant's concerns: raw values, scores, severities and why any is not scored."""

    name: str
    age: int | None
    values: dict[str, float]
    reasons: dict[str, str]
    scores: dict[str, float]

    @property
    def severities(self) -> dict[str, str]:
        return {c: severity(s) for c, s in self.scores.items()}


def score_reading(
    reading: Reading, age: int | None, design: Design, reference: AdultReference | None
) -> Scored:
    values, reasons = concern_values(reading, design)
    scores = {}
    if reference is not None:
        scores = {c: reference.score(c, v) for c, v in values.items() if c in reference.quantiles}
    return Scored(reading.name, age, values, reasons, scores)


def ridge_cross_validation(
    originals: dict[str, tuple[Reading, int]], designs: dict[str, Design], seed: int
) -> dict[str, float]:
    """The alternative not taken: every response at every site (robust z-scores, a missing site at 0)
    weighted by ridge regression on age. Its 5-fold cross-validated Spearman on the training part, per
    ridge strength, says how much a fitted, signed weighting could add; signed weights are not used,
    since a wrinkle measure must never fall when lines are added."""
    columns = []
    for response, chosen in designs.items():
        for group in WRINKLE_GROUPS:
            raw = [wrinkle_group_values(r, response)[group] for r, _ in originals.values()]
            columns.append(
                [0.0 if v is None else (v - chosen.centre[group]) / chosen.spread[group] for v in raw]
            )
    features = np.clip(np.array(columns, dtype=np.float64).T, -5.0, 5.0)
    ages = np.array([age for _, age in originals.values()], dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(ages))
    folds = np.array_split(order, 5)
    out = {}
    for strength in (1.0, 10.0, 100.0):
        predicted = np.zeros(len(ages))
        for fold in folds:
            train = np.setdiff1d(order, fold)
            mean_x, mean_y = features[train].mean(axis=0), ages[train].mean()
            centred = features[train] - mean_x
            gram = centred.T @ centred + strength * np.eye(features.shape[1])
            weights = np.linalg.solve(gram, centred.T @ (ages[train] - mean_y))
            predicted[fold] = (features[fold] - mean_x) @ weights
        out[f"lambda_{strength:g}"] = spearman(predicted, ages)
    return out


def wrinkle_response_names() -> list[str]:
    names = [f"{kind}{sigma:g}" for kind in measures.WRINKLE_KINDS for sigma in measures.WRINKLE_SIGMAS_MM]
    return names + list(measures.WRINKLE_MULTISCALE)


def _follows_age(site: dict[str, object]) -> bool:
    return float(site["value"]) >= MIN_SITE_RHO and float(site["ci95"][0]) > 0  # type: ignore[arg-type,index]


def reference_faces(faces: Path, ages_ids: set[str]) -> list[Path]:
    """The adult faces of data/faces that join the reference: not the robot or the children, and no
    congress portrait of data/ages (data/faces holds copies of 24 of them: a training person is in the
    reference once already, a held-out one must not be in it at all)."""
    chosen = []
    for path in sorted(faces.iterdir()):
        if path.suffix.lower() not in _IMAGE_SUFFIXES or path.name in NOT_ADULT_FACES:
            continue
        if path.name.startswith("congress_") and path.stem.split("_", 1)[1] in ages_ids:
            continue
        chosen.append(path)
    return chosen


def resend_agreement(
    originals: dict[str, Scored], resent: dict[str, Scored], rounds: int, seed: int
) -> dict[str, dict[str, object]]:
    """Per concern, over photos scored both as sent and as re-sent: the share whose severity is kept
    and the median absolute score change, with bootstrap intervals, and how many re-sends are scored."""
    out: dict[str, dict[str, object]] = {}
    for concern in CONCERNS:
        kept, change = [], []
        for name, first in originals.items():
            second = resent.get(name)
            if second is None or concern not in first.scores or concern not in second.scores:
                continue
            kept.append(float(first.severities[concern] == second.severities[concern]))
            change.append(abs(first.scores[concern] - second.scores[concern]))
        scored_first = sum(concern in s.scores for s in originals.values())
        out[concern] = {
            "pairs": len(kept),
            "scored_as_sent": scored_first,
            "kept": with_interval(kept, lambda v: float(np.mean(v)), rounds, seed),
            "median_change": with_interval(change, lambda v: float(np.median(v)), rounds, seed),
        }
    return out


def concern_summary(scored: list[Scored], rounds: int, seed: int) -> dict[str, dict[str, object]]:
    """Per concern: share scored, share of each severity, share of under-45s severe, score vs age."""
    out: dict[str, dict[str, object]] = {}
    for concern in CONCERNS:
        have = [s for s in scored if concern in s.scores]
        summary: dict[str, object] = {
            "scored": with_interval([float(concern in s.scores) for s in scored], _mean, rounds, seed),
            "reasons": _count(s.reasons[concern] for s in scored if concern in s.reasons),
        }
        for label in SEVERITIES:
            summary[label] = with_interval(
                [float(s.severities[concern] == label) for s in have], _mean, rounds, seed
            )
        young = [s for s in have if s.age is not None and s.age < 45]
        summary["under45_severe"] = with_interval(
            [float(s.severities[concern] == "severe") for s in young], _mean, rounds, seed
        )
        aged = [(s.scores[concern], float(s.age)) for s in have if s.age is not None]
        summary["score_vs_age"] = rho_with_interval([a for a, _ in aged], [b for _, b in aged], rounds, seed)
        out[concern] = summary
    return out


def _mean(values: NDArray[np.float64]) -> float:
    return float(np.mean(values))


def _count(items: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:  # type: ignore[attr-defined]
        counts[str(item)] = counts.get(str(item), 0) + 1
    return counts


def read_split(reader: ZoneReader, portraits: list[Portrait], variant: str) -> dict[str, tuple[Reading, int]]:
    return {p.path.name: (reader.read(p.path, variant), p.age) for p in portraits}


def design(data: Path, cache: Path, out: Path, rounds: int, seed: int) -> dict[str, object]:
    """The design run (training part and data/faces only); writes out/concerns_design.{json,md}."""
    ages = data / "ages"
    portraits = read_portraits(ages)
    splits = assign_splits(portraits)
    train = [p for p in portraits if splits[p.bioguide] == "train"]
    validation_ids = {p.bioguide for p in portraits if splits[p.bioguide] == "validation"}
    reader = ZoneReader(cache)
    originals = read_split(reader, train, "original")
    ages_of = np.array([age for _, age in originals.values()], dtype=np.float64)

    # Every candidate response: each site against age, and the sites' equal-weight combination.
    candidates: dict[str, dict[str, object]] = {}
    designs: dict[str, Design] = {}
    for response in wrinkle_response_names():
        sites: dict[str, dict[str, object]] = {}
        centre, spread = {}, {}
        for group in WRINKLE_GROUPS:
            pairs = [
                (v, age)
                for r, age in originals.values()
                if (v := wrinkle_group_values(r, response)[group]) is not None
            ]
            sites[group] = rho_with_interval([p[0] for p in pairs], [p[1] for p in pairs], rounds, seed)
            q1, median, q3 = np.percentile([p[0] for p in pairs], [25, 50, 75])
            centre[group], spread[group] = float(median), float(max(q3 - q1, 1e-6))
        kept = tuple(g for g, site in sites.items() if _follows_age(site))
        designs[response] = Design(response, kept or tuple(WRINKLE_GROUPS), centre, spread)
        combined = [(concern_values(r, designs[response])[0], age) for r, age in originals.values()]
        pairs = [(values["wrinkles"], age) for values, age in combined if "wrinkles" in values]
        candidates[response] = {
            "sites": sites,
            "kept": list(designs[response].wrinkle_groups),
            "combined": rho_with_interval([p[0] for p in pairs], [p[1] for p in pairs], rounds, seed),
        }
    ridge = ridge_cross_validation(originals, designs, seed)
    eligible = [name for name in candidates if name.rstrip("0123456789.") in ORIENTATION_FREE]
    best = max(eligible, key=lambda name: float(candidates[name]["combined"]["value"]))  # type: ignore[index]
    chosen = designs[best]

    # The adult reference: the training portraits and the adult faces of data/faces.
    faces = reference_faces(data / "faces", {p.bioguide for p in portraits})
    reference_readings = [r for r, _ in originals.values()] + [reader.read(p, "original") for p in faces]
    pooled: dict[str, list[float]] = {c: [] for c in CONCERNS}
    for reading in reference_readings:
        for concern, value in concern_values(reading, chosen)[0].items():
            pooled[concern].append(value)
    reference = AdultReference.fit({c: v for c, v in pooled.items() if len(v) >= 20})

    scored = {n: score_reading(r, age, chosen, reference) for n, (r, age) in originals.items()}
    resent = {}
    for variant in VARIANTS:
        if variant == "original":
            continue
        readings = read_split(reader, train, variant)
        variant_scored = {n: score_reading(r, age, chosen, reference) for n, (r, age) in readings.items()}
        resent[variant] = resend_agreement(scored, variant_scored, rounds, seed)
    scales = [r.px_per_mm for r, _ in originals.values() if r.px_per_mm is not None]
    report: dict[str, object] = {
        "split": {"train": len(train), "validation": len(validation_ids), "key": "see export/ages.py"},
        "reference": {
            "ages_train": len(originals),
            "faces": [p.name for p in faces],
            "faces_left_out": dict(NOT_ADULT_FACES) | {"congress_*": "copies of data/ages portraits"},
            "counts": reference.counts,
        },
        "scale": {
            "px_per_mm_percentiles": dict(
                zip(
                    ["min", "p2", "p5", "p50", "p95", "max"],
                    np.percentile(scales, [0, 2, 5, 50, 95, 100]).tolist(),
                    strict=True,
                )
            ),
            "sources": _count(r.scale_source for r, _ in originals.values()),
        },
        "needed_scales": {
            c: {"px_per_mm": s.px_per_mm, "zones": list(s.zones), "why": s.why}
            for c, s in NEEDED_SCALES.items()
        },
        "wrinkle_candidates": candidates,
        "wrinkle_ridge_alternative": ridge,
        "wrinkle_rule": (
            f"per response, keep a site when Spearman(response, age) >= {MIN_SITE_RHO} with its 95% interval "
            "above 0; combine the kept sites' robust z-scores by their mean; take, among the responses that "
            f"answer lines of any direction ({', '.join(ORIENTATION_FREE)}), the one whose combination "
            "follows "
            "age best (Spearman) on the training part"
        ),
        "design": chosen.to_json(),
        "reference_quantiles": {"quantiles": reference.quantiles, "counts": reference.counts},
        "train": concern_summary(list(scored.values()), rounds, seed),
        "resend": resent,
        "ages": {
            "min": float(ages_of.min()),
            "max": float(ages_of.max()),
            "under45": int((ages_of < 45).sum()),
        },
        "bootstrap": {"rounds": rounds, "seed": seed, "unit": "photo"},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "concerns_design.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "concerns_design.md").write_text(design_markdown(report))
    return report


def add_arguments(parser: argparse.ArgumentParser, data: Path, root: Path) -> None:
    parser.add_argument("--data", type=Path, default=data, help="the shared data folder (ages/, faces/)")
    parser.add_argument(
        "--cache", type=Path, default=root / "build" / "concerns" / "cache", help="per-photo readings"
    )
    parser.add_argument("--out", type=Path, default=root / "reports", help="where the reports are written")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over photos")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
