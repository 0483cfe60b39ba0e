"""The adult reference: scores are shares of the reference worse than a face, severe is its worst tenth."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from orchestrator.scoring.reference import AdultReference, severity


def _reference() -> AdultReference:
    rng = np.random.default_rng(0)
    return AdultReference.fit({"wrinkles": rng.normal(0.0, 1.0, 500).tolist()})


def test_score_is_the_share_of_adults_worse() -> None:
    reference = _reference()
    assert reference.score("wrinkles", 0.0) == pytest.approx(50.0, abs=3.0)
    assert reference.score("wrinkles", 1.2816) == pytest.approx(10.0, abs=2.0)  # the 90th percentile
    assert reference.score("wrinkles", -10.0) == 100.0
    assert reference.score("wrinkles", 10.0) == 0.0
    values = np.linspace(-3, 3, 50)
    scores = [reference.score("wrinkles", float(v)) for v in values]
    assert all(a >= b for a, b in pairwise(scores))


def test_severe_is_the_worst_tenth_of_the_reference() -> None:
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 1.0, 2000)
    reference = AdultReference.fit({"redness": values[:1000].tolist()})
    labels = [severity(reference.score("redness", float(v))) for v in values[1000:]]
    assert labels.count("severe") / len(labels) == pytest.approx(0.10, abs=0.03)
    assert labels.count("none") / len(labels) == pytest.approx(0.50, abs=0.05)


def test_severity_bands() -> None:
    assert [severity(s) for s in (0.0, 9.9, 10.0, 24.9, 25.0, 49.9, 50.0, 100.0)] == [
        "severe",
        "severe",
        "moderate",
        "moderate",
        "mild",
        "mild",
        "none",
        "none",
    ]


def test_a_constant_reference_scores_its_value_at_the_middle() -> None:
    reference = AdultReference.fit({"oiliness": [0.0] * 80 + [0.01, 0.02] * 10})
    assert 40.0 <= reference.score("oiliness", 0.0) <= 100.0
    assert reference.score("oiliness", 0.02) < reference.score("oiliness", 0.0)


def test_too_few_faces_are_refused_and_a_saved_reference_reloads(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AdultReference.fit({"wrinkles": [1.0, 2.0]})
    reference = _reference()
    reference.save(tmp_path / "reference.json")
    again = AdultReference.load(tmp_path / "reference.json")
    assert again.score("wrinkles", 0.3) == reference.score("wrinkles", 0.3)
