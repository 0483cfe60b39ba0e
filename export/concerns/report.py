"""The concern design report as markdown, every figure read from the JSON report beside it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from export.concerns.combine import WRINKLE_GROUPS


def _fmt(entry: dict[str, Any], percent: bool = False, digits: int = 2) -> str:
    """A figure with its 95% interval, as a percentage or with `digits` decimals."""
    value, (low, high) = float(entry["value"]), entry["ci95"]
    if not np.isfinite(value):
        return "n/a"
    if percent:
        return f"{100 * value:.0f}% ({100 * low:.0f}-{100 * high:.0f})"
    return f"{value:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table: the header, its rule and one line per row of cells."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(cells) + " |" for cells in rows),
    ]


def design_markdown(report: dict[str, Any]) -> str:
    """The design report as markdown (every figure from the JSON beside it)."""
    r: dict[str, Any] = report
    lines = [
        "# Concern measures: design on the training part of data/ages",
        "",
        "Written by `python -m export concerns-eval` from `reports/concerns_design.json`. Everything here",
        "was chosen on the training part of `data/ages` and on `data/faces`; the held-out part is read only",
        "by `python -m export concerns-report` (`reports/concerns_eval.md`), along the service's path.",
        "Intervals: 95% bootstrap",
        f"over photos ({r['bootstrap']['rounds']} resamples, seed {r['bootstrap']['seed']}).",
        "",
        "## Split",
        "",
        f"{r['split']['train']} training and {r['split']['validation']} held-out portraits:",
        "within each age band (under 45, 45-59, 60-74, 75 and over) the 35% with the lowest SHA-256 key",
        "of the bioguide id are held out (`export/ages.py`).",
        f"Training ages {r['ages']['min']:.0f}-{r['ages']['max']:.0f}, {r['ages']['under45']} under 45.",
        "",
        "## Physical scale",
        "",
        "Pixels per millimetre from the iris (11.7 mm across), the eye distance (63 mm) where no iris",
        "is read",
        "(`orchestrator/face/scale.py`). Training portraits: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["scale"]["px_per_mm_percentiles"].items())
        + f" px/mm; rulers used: {r['scale']['sources']}.",
        "",
        "## Scale each concern is read at",
        "",
        *_table(
            ("concern", "px/mm", "zones", "why"),
            (
                (concern, f"{need['px_per_mm']:g}", ", ".join(need["zones"]), need["why"])
                for concern, need in r["needed_scales"].items()
            ),
        ),
        "",
        "## Wrinkle response and sites (training part)",
        "",
        "Each candidate response (measures.wrinkle_responses: kind and Gaussian scale in mm) per site (mean",
        "over both sides) against age, positive = more with age, and the kept sites' combination.",
        f"Rule, fixed before reading these figures: {r['wrinkle_rule']}.",
        "",
        *_table(
            ("response", *WRINKLE_GROUPS, "kept sites", "combined vs age"),
            (
                (
                    response,
                    *(f"{entry['sites'][g]['value']:.2f}" for g in WRINKLE_GROUPS),
                    ", ".join(entry["kept"]),
                    _fmt(entry["combined"]),
                )
                for response, entry in r["wrinkle_candidates"].items()
            ),
        ),
    ]
    chosen = r["design"]
    lines += [
        "",
        f"Chosen: **{chosen['wrinkle_response']}** over {', '.join(chosen['wrinkle_groups'])}.",
        "Site intervals:",
        "",
    ]
    for site, entry in r["wrinkle_candidates"][chosen["wrinkle_response"]]["sites"].items():
        lines.append(f"* {site}: {_fmt(entry)} (n {entry['n']})")
    ridge = ", ".join(f"{k.split('_')[1]}: {v:.2f}" for k, v in r["wrinkle_ridge_alternative"].items())
    lines += [
        "",
        "Not taken: every response at every site weighted by ridge regression on age (signed weights);",
        f"5-fold cross-validated Spearman on the training part by ridge strength {ridge}. Signed weights",
        "would let added lines lower the wrinkle value, so the equal-weight orientation-free combination",
        "above is used.",
        "",
        "Why these: the under-eye site does not follow age with any response (lashes, the lid margin",
        "and the lower lid's own fold likely dominate it at portrait scale), so it is left out, as the",
        "rule says; the nasolabial fold follows age only weakly at these scales. hxx (valleys running up",
        "the face) follows age better than any orientation-free response on these frontal studio",
        "portraits, but it is blind to horizontal forehead lines, so it is reported, not chosen. At",
        "1.2 mm (lines about 3 mm wide) every kept site follows age best with the chosen kind: finer",
        "scales read skin grain and JPEG noise,",
        "coarser ones the face's relief under the studio light.",
        "",
        "## Adult reference and cut-offs",
        "",
        f"Reference: the {r['reference']['ages_train']} training portraits and",
        f"{len(r['reference']['faces'])} adult faces of `data/faces` (no robot, no children, and none of its",
        "congress portraits: they are copies of data/ages portraits). Score = 100 x the share of the",
        "reference worse than the face;",
        "severe below 10 (worst tenth), moderate below 25, mild below 50, "
        "none from 50. Acne keeps its ACNE04 grading. Reference sizes: "
        + ", ".join(f"{c} {n}" for c, n in r["reference"]["counts"].items())
        + ".",
        "",
        "## Training part: scored, severe, age",
        "",
        "The reference includes these faces, so the severe shares are near 10% by construction; the",
        "held-out report is the check. Pores (8 px/mm) are read on no portrait of",
        "data/ages (1.21-1.88 px/mm): they are not scored there rather than guessed.",
        "",
        *_table(
            ("concern", "scored", "severe", "under-45 severe", "score vs age"),
            (
                (
                    concern,
                    _fmt(s["scored"], True),
                    _fmt(s["severe"], True),
                    _fmt(s["under45_severe"], True),
                    _fmt(s["score_vs_age"]),
                )
                for concern, s in r["train"].items()
            ),
        ),
        "",
        "## Re-send stability (training part)",
        "",
    ]
    for variant, table in r["resend"].items():
        lines += [
            f"{variant}: resized to {variant.split('_')[1]}%, JPEG quality 70.",
            "",
            *_table(
                ("concern", "pairs (scored as sent)", "severity kept", "median score change"),
                (
                    (
                        concern,
                        f"{entry['pairs']} ({entry['scored_as_sent']})",
                        _fmt(entry["kept"], True),
                        _fmt(entry["median_change"], digits=1),
                    )
                    for concern, entry in table.items()
                ),
            ),
            "",
        ]
    return "\n".join(lines)
