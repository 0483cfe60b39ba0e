"""Post-scoring: monotone in the raw signals, per-version calibration, documented formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.preprocessing import QuantileTransformer

from orchestrator.errors import ModelBadResponse
from orchestrator.predict.prediction import Prediction
from orchestrator.scoring.concerns import CONCERN_REGIONS, CONCERNS, raw_concerns
from orchestrator.scoring.scorer import (
    ITA_CATEGORIES,
    PostScorer,
    QuantileTable,
    ScorerRegistry,
    ita_category,
    ita_from_lab,
    severity,
)
from serving import contract
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO

SIGNAL = {name: i for i, name in enumerate(contract.SIGNAL_NAMES)}
REGION = {name: i for i, name in enumerate(contract.REGION_NAMES)}
FULL = tuple(1.0 for _ in contract.REGION_NAMES)


@pytest.fixture(scope="module")
def scorer() -> PostScorer:
    registry = ScorerRegistry(MODEL_REPO, contract.MODEL_NAME)
    return registry.for_version(versions_on_disk(MODEL_REPO / contract.MODEL_NAME)[-1])


def _prediction(**signals: float) -> Prediction:
    """A typical face's signals (medians over the congress portraits), with some changed."""
    typical = {
        "lab_l": 58.0,
        "lab_a": 18.7,
        "lab_b": 23.7,
        "ita_deg": 15.8,
        "erythema": 19.6,
        "pigment_spots": 0.004,
        "pigment_unevenness": 2.6,
        "wrinkles": 0.29,
        "pores": 0.17,
        "texture": 0.46,
        "specular": 0.01,
        "skin_fraction": 0.99,
    }
    typical.update(signals)
    row = np.array([typical[name] for name in contract.SIGNAL_NAMES], np.float32)
    rows = len(contract.REGION_NAMES)
    return Prediction(
        contract.MODEL_NAME, 1, np.tile(row, (rows, 1)), np.zeros((rows, contract.MAX_LESIONS, 3), np.float32)
    )


def _with_lesions(prediction: Prediction, per_region: int, score: float = 0.9) -> Prediction:
    peaks = prediction.acne_peaks.copy()
    for region in ("forehead", "left_cheek", "right_cheek", "nose", "chin"):
        peaks[REGION[region], :per_region] = [0.5, 0.5, score]
    return Prediction(prediction.model_name, prediction.version, prediction.signals, peaks)


@pytest.mark.parametrize(
    ("concern", "signal", "low", "high"),
    [
        ("redness", "erythema", 12.0, 30.0),
        ("dark_spots", "pigment_spots", 0.0, 0.04),
        ("wrinkles", "wrinkles", 0.15, 1.2),
        ("pores", "pores", 0.08, 1.0),
        ("oiliness", "specular", 0.0, 0.2),
    ],
)
def test_more_of_a_concern_scores_lower(
    scorer: PostScorer, concern: str, signal: str, low: float, high: float
) -> None:
    good = scorer.score(_prediction(**{signal: low}), FULL)["concerns"][concern]
    bad = scorer.score(_prediction(**{signal: high}), FULL)["concerns"][concern]
    assert 0 <= bad["score"] < good["score"] <= 100
    assert set(bad["regions"]) == set(CONCERN_REGIONS[concern])
    assert all(bad["regions"][r] <= good["regions"][r] for r in bad["regions"])


def test_more_lesions_mean_lower_acne_score_and_worse_grade(scorer: PostScorer) -> None:
    clear = scorer.score(_prediction(), FULL)["concerns"]["acne"]
    some = scorer.score(_with_lesions(_prediction(), 2), FULL)["concerns"]["acne"]
    many = scorer.score(_with_lesions(_prediction(), 12), FULL)["concerns"]["acne"]
    assert clear["count"] == 0 and clear["severity"] == "none"
    assert some["count"] == 10 and many["count"] == 60
    assert clear["score"] > some["score"] > many["score"]
    assert sum(many["grade_probabilities"].values()) == pytest.approx(1.0, abs=0.01)
    assert len(scorer.score(_with_lesions(_prediction(), 12), FULL)["concerns"]["acne"]["lesions"]) == 60


def test_weak_lesion_candidates_are_not_counted(scorer: PostScorer) -> None:
    faint = _with_lesions(_prediction(), 5, score=scorer.calibration.acne_threshold / 2)
    assert scorer.score(faint, FULL)["concerns"]["acne"]["count"] == 0


def test_dark_circles_grow_with_darker_under_eyes(scorer: PostScorer) -> None:
    prediction = _prediction()
    darker = prediction.signals.copy()
    for region in ("left_under_eye", "right_under_eye"):
        darker[REGION[region], SIGNAL["lab_l"]] -= 12
    worse = Prediction(prediction.model_name, 1, darker, prediction.acne_peaks)
    assert (
        scorer.score(worse, FULL)["concerns"]["dark_circles"]["score"]
        < scorer.score(prediction, FULL)["concerns"]["dark_circles"]["score"]
    )


def test_unusable_regions_are_left_out(scorer: PostScorer) -> None:
    coverage = tuple(0.0 if name == "chin" else 1.0 for name in contract.REGION_NAMES)
    report = scorer.score(_prediction(), coverage)
    assert report["concerns"]["redness"]["regions"]["chin"] is None
    assert report["concerns"]["acne"]["regions"]["chin"] is None
    assert report["usable_regions"]["chin"] is False
    no_skin = scorer.score(_prediction(skin_fraction=0.0), FULL)
    assert all(no_skin["concerns"][c]["score"] is None for c in CONCERNS)
    assert no_skin["skin_tone"]["ita_deg"] is None


def test_skin_type_probabilities(scorer: PostScorer) -> None:
    skin_type = scorer.score(_prediction(specular=0.3), FULL)["skin_type"]
    assert skin_type["label"] == "oily"
    assert sum(skin_type["probabilities"].values()) == pytest.approx(1.0, abs=0.01)
    signals = _prediction().signals.copy()
    signals[:, SIGNAL["specular"]] = 0.0
    for zone in ("forehead", "nose", "chin"):
        signals[REGION[zone], SIGNAL["specular"]] = 0.3
    combination = Prediction(contract.MODEL_NAME, 1, signals, _prediction().acne_peaks)
    assert scorer.score(combination, FULL)["skin_type"]["label"] == "combination"


def test_ita_formula_and_categories() -> None:
    assert ita_from_lab(50.0, 20.0) == pytest.approx(0.0)
    assert ita_from_lab(70.0, 20.0) == pytest.approx(math.degrees(math.atan(1.0)))
    assert ita_from_lab(30.0, 20.0) < 0
    assert [ita_category(x) for x in (60, 45, 30, 20, 0, -40)] == [label for _, label in ITA_CATEGORIES]


def test_severity_bands() -> None:
    assert [severity(s) for s in (100, 75, 60, 40, 10)] == ["none", "none", "mild", "moderate", "severe"]


def test_missing_calibration_is_a_bad_response() -> None:
    with pytest.raises(ModelBadResponse):
        ScorerRegistry(MODEL_REPO, contract.MODEL_NAME).for_version(10_000)


def test_raw_values_are_what_the_signals_say() -> None:
    prediction = _prediction(erythema=25.0)
    raw = raw_concerns(prediction.signals, prediction.acne_peaks, FULL, 0.5)
    assert raw.face["redness"] == pytest.approx(25.0 - 18.7, abs=1e-4)  # erythema minus the face's median a*
    assert raw.face["dark_circles"] == pytest.approx(0.0)
    assert raw.face["acne"] == 0.0


def test_quantile_table_matches_scikit_learn_transform() -> None:
    """The per-row lookup gives what QuantileTransformer.transform gives: inside the range, on repeated
    quantiles (ties), at and beyond both bounds, and for NaN."""
    rng = np.random.default_rng(3)
    reference = np.column_stack(
        [
            rng.normal(size=300),
            np.round(rng.exponential(size=300), 1),  # many ties
            np.where(rng.random(300) < 0.6, 0.0, rng.random(300)),  # a run of zeros at the bottom
        ]
    )
    transformer = QuantileTransformer(n_quantiles=100, output_distribution="uniform").fit(reference)
    table = QuantileTable(transformer)
    rows = np.vstack(
        [
            rng.normal(size=(40, 3)) * 2,
            reference[:40],
            transformer.quantiles_[[0, -1]],
            [[np.nan, 0.0, -5.0], [1e9, np.nan, 0.0]],
        ]
    )
    for row in rows:
        expected = np.clip(transformer.transform(row.reshape(1, -1))[0], 0.0, 1.0)
        np.testing.assert_allclose(table.percentiles(row), expected, rtol=0, atol=1e-12)


def test_quantile_table_refuses_a_row_of_the_wrong_length(scorer: PostScorer) -> None:
    with pytest.raises(ValueError, match="expected"):
        QuantileTable(scorer.calibration.face).percentiles(np.zeros(2))
