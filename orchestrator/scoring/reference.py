"""Adults of every age as the reference of the measured concerns: a concern's score is where a face's
raw value falls among adult faces, and the severity cut-offs are shares of that population.

score = 100 x (share of the reference whose value is worse than this face's), so 50 is the median adult
and 10 means nine adults in ten look better on this measure. Cut-offs (the registry's SEVERITY_BANDS,
serving/concerns.py, the same for every version): "severe" is the
worst tenth of adults, "moderate" the next 15%, "mild" the rest of the worse half, "none" the better
half. Every raw measure here grows with the concern (more line strength, more redness...). Acne keeps
its ACNE04 lesion-count grading and is not scored here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.concerns import SEVERITY_BANDS

# The severities, worst first.
SEVERITIES: tuple[str, ...] = ("severe", "moderate", "mild", "none")
# Quantiles kept per concern: every percent, enough for scores to the point.
QUANTILES = np.linspace(0.0, 1.0, 101)


def severity(score: float) -> str:
    """The severity band of a 0-100 score."""
    for bound, label in SEVERITY_BANDS:
        if score >= bound:
            return label
    return SEVERITY_BANDS[-1][1]


@dataclass(frozen=True)
class AdultReference:
    """Per concern, the reference population's raw-value quantiles (QUANTILES) and its size."""

    quantiles: dict[str, list[float]]
    counts: dict[str, int]

    @classmethod
    def fit(cls, values: dict[str, list[float]]) -> AdultReference:
        """The reference from every adult reference face's raw value per concern."""
        quantiles, counts = {}, {}
        for concern, raw in values.items():
            data = np.asarray(raw, dtype=np.float64)
            if data.size < 20:
                raise ValueError(f"{concern}: {data.size} reference faces are too few for percentiles")
            quantiles[concern] = [float(q) for q in np.quantile(data, QUANTILES)]
            counts[concern] = int(data.size)
        return cls(quantiles=quantiles, counts=counts)

    def score(self, concern: str, value: float) -> float:
        """100 x the share of the reference worse (higher) than `value`, interpolated, 0-100."""
        table = np.asarray(self.quantiles[concern])
        # The share at or below `value`, by linear interpolation between the kept quantiles; ties at
        # the extremes take the middle of their run so a constant tail does not read as one end.
        low = np.searchsorted(table, value, side="left")
        high = np.searchsorted(table, value, side="right")
        if high > low:
            share = float((low + high - 1) / 2.0 / (len(table) - 1))
        else:
            share = float(np.interp(value, table, QUANTILES))
        return float(np.clip(100.0 * (1.0 - share), 0.0, 100.0))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"quantiles": self.quantiles, "counts": self.counts}, indent=1))

    @classmethod
    def load(cls, path: Path) -> AdultReference:
        data = json.loads(path.read_text())
        return cls(quantiles=data["quantiles"], counts=data["counts"])
