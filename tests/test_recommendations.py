"""Routine suggestions follow the worst concerns and the skin type, from the shipped table."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.scoring.recommendations import Recommender

TABLE = Path(__file__).resolve().parent.parent / "configs" / "recommendations.json"


def test_worst_concerns_first_then_skin_type_then_basics() -> None:
    recommender = Recommender.from_file(TABLE)
    concerns = {
        "acne": {"severity": "moderate", "score": 40.0},
        "redness": {"severity": "severe", "score": 10.0},
        "pores": {"severity": "none", "score": 90.0},
        "wrinkles": {"severity": "mild", "score": 70.0},
        "oiliness": {"severity": None, "score": None},
    }
    tips = recommender.recommend(concerns, {"label": "combination"})
    assert [t.get("concern") for t in tips[:3]] == ["redness", "acne", "wrinkles"]
    assert tips[3]["skin_type"] == "combination"
    assert "sunscreen" in tips[-1]["tips"][0].lower()


def test_healthy_skin_gets_only_the_basics() -> None:
    recommender = Recommender.from_file(TABLE)
    tips = recommender.recommend({"acne": {"severity": "none", "score": 97.0}}, {"label": None})
    assert len(tips) == 1


def test_every_concern_and_severity_in_the_table_has_tips() -> None:
    table = Recommender.from_file(TABLE).table
    for concern, levels in table["concerns"].items():
        assert {"mild", "moderate", "severe"} <= set(levels), concern
        assert all(levels.values())


def test_bad_table_is_refused() -> None:
    with pytest.raises(ValueError):
        Recommender({"concerns": []})
