"""Post-scoring: monotone in the raw signals, per-version calibration, documented formulas."""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.preprocessing import QuantileTransformer

from orchestrator.answer import ITA_CATEGORIES
from orchestrator.errors import ModelBadResponse
from orchestrator.predict.prediction import Prediction
from orchestrator.scoring.concerns import lesion_labels, raw_concerns
from orchestrator.scoring.scorer import (
    PatchOutcome,
    PostScorer,
    QuantileTable,
    ScorerRegistry,
    ita_category,
    ita_from_lab,
    severity,
)
from serving import contract
from serving.concerns import SEVERITY_BANDS, concern, concern_names, measured
from serving.fingerprint import content_fingerprint
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO
from tests.repos import bind_calibration, other_fingerprint

LABEL = {name: i for i, name in enumerate(contract.LABEL_NAMES)}
ALL = dict.fromkeys(contract.LABEL_NAMES, True)
NO_LESIONS: list[str | None] = [None] * contract.MAX_LESIONS


@pytest.fixture(scope="module")
def scorer(model_repo: Path) -> PostScorer:
    """The newest published version that scores every concern from its aligned-face signals (calibration
    bound to its model: tests/repos.py)."""
    registry = ScorerRegistry(model_repo, contract.MODEL_NAME)
    for version in reversed(versions_on_disk(model_repo / contract.MODEL_NAME)):
        if registry.for_version(version).calibration.zone_design is None:
            return registry.for_version(version)
    raise AssertionError("no published version reads its concerns from signals")


@pytest.fixture(scope="module")
def zone_scorer(model_repo: Path) -> PostScorer:
    """The newest published version, which reads concerns on fixed-scale patches (contract 4)."""
    registry = ScorerRegistry(model_repo, contract.MODEL_NAME)
    scorer = registry.for_version(versions_on_disk(model_repo / contract.MODEL_NAME)[-1])
    assert scorer.calibration.zone_design is not None
    return scorer


# A typical portrait's zone measures, the same in every slot of each measure's group.
TYPICAL_ZONES = {
    "lines": 0.4,
    "line_pixels": 500.0,
    "lab_a": 16.0,
    "median_l": 62.0,
    "median_ita": 35.0,
    "shine": 4.0,
    "skin": 400.0,
    "spots": 4.0,
    "spot_pixels": 400.0,
    "pores": 0.05,
}


def _zoned(changes: dict[tuple[str, str], dict[str, float]] | None = None) -> Prediction:
    """A typical face with zone measures, some slots' measures changed ((group, zone) -> measures)."""
    zones = {
        name: np.full(len(contract.PATCH_SLOTS), value, np.float32) for name, value in TYPICAL_ZONES.items()
    }
    for slot, measures in (changes or {}).items():
        for name, value in measures.items():
            zones[name][contract.PATCH_SLOTS.index(slot)] = value
    typical = _prediction()
    return Prediction(typical.model_name, 7, typical.signals, typical.acne_peaks, zones)


def _zone_score(
    scorer: PostScorer,
    prediction: Prediction,
    unavailable: dict[tuple[str, str], str] | None = None,
    colour: bool = True,
) -> dict[str, Any]:
    outcome = PatchOutcome(1.6, unavailable or {})
    return scorer.score(prediction, NO_LESIONS, ALL, colour=colour, patches=outcome).dump()


def _prediction(**signals: float) -> Prediction:
    """A typical face's signals, the same in every region, with some changed."""
    typical = {
        "lab_l": 62.0,
        "lab_a": 18.7,
        "lab_b": 22.0,
        "ita_deg": 28.6,
        "erythema": 19.6,
        "pigment_spots": 0.004,
        "pigment_unevenness": 2.0,
        "wrinkles": 0.4,
        "pores": 0.3,
        "texture": 1.0,
        "specular": 0.01,
        "skin_fraction": 0.99,
    }
    typical.update(signals)
    rows = len(contract.LABEL_NAMES)
    columns = {name: np.full(rows, typical[name], np.float32) for name in contract.signal_names()}
    return Prediction(contract.MODEL_NAME, 1, columns, np.zeros((contract.MAX_LESIONS, 3), np.float32))


def _changed(prediction: Prediction, signal: str, regions: tuple[str, ...], value: float) -> Prediction:
    """The prediction with one signal set to `value` in `regions`."""
    signals = {name: column.copy() for name, column in prediction.signals.items()}
    for region in regions:
        signals[signal][LABEL[region]] = value
    return Prediction(prediction.model_name, prediction.version, signals, prediction.acne_peaks)


def _peaks(prediction: Prediction) -> np.ndarray:
    assert prediction.acne_peaks is not None
    return prediction.acne_peaks.copy()


def _with_lesions(
    prediction: Prediction, per_region: int, score: float = 0.9
) -> tuple[Prediction, list[str | None]]:
    """Lesion candidates, `per_region` on each of the five skin regions, and the label under each."""
    peaks = _peaks(prediction)
    labels = list(NO_LESIONS)
    row = 0
    for region in ("forehead", "left_cheek", "right_cheek", "nose", "chin"):
        for _ in range(per_region):
            peaks[row] = [0.5, 0.5, score]
            labels[row] = region
            row += 1
    return Prediction(prediction.model_name, prediction.version, prediction.signals, peaks), labels


def _score(
    scorer: PostScorer,
    prediction: Prediction,
    labels: list[str | None] = NO_LESIONS,
    usable: dict[str, bool] = ALL,
    colour: bool = True,
) -> dict[str, Any]:
    return scorer.score(prediction, labels, usable, colour=colour).dump()


# A typical low and high value of each signal a concern is read from face-wide.
SIGNAL_RANGES = {
    "erythema": (12.0, 30.0),
    "pigment_spots": (0.0, 0.04),
    "wrinkles": (0.15, 1.2),
    "pores": (0.08, 1.0),
    "specular": (0.0, 0.2),
}


@pytest.mark.parametrize(
    "name", [c.name for c in measured() if c.raw in ("mean", "above_face") and c.signals[0] in SIGNAL_RANGES]
)
def test_more_of_a_concern_scores_lower(scorer: PostScorer, name: str) -> None:
    signal = concern(name).signals[0]
    low, high = SIGNAL_RANGES[signal]
    good = _score(scorer, _prediction(**{signal: low}))["concerns"][name]
    bad = _score(scorer, _prediction(**{signal: high}))["concerns"][name]
    assert 0 <= bad["score"] < good["score"] <= 100
    assert set(bad["regions"]) == set(concern(name).regions)
    assert all(bad["regions"][r] <= good["regions"][r] for r in bad["regions"])


def test_more_lesions_mean_lower_acne_score_and_worse_grade(scorer: PostScorer) -> None:
    clear = _score(scorer, _prediction())["concerns"]["acne"]
    some = _score(scorer, *_with_lesions(_prediction(), 2))["concerns"]["acne"]
    many = _score(scorer, *_with_lesions(_prediction(), 12))["concerns"]["acne"]
    assert clear["count"] == 0 and clear["severity"] == "none"
    assert some["count"] == 10 and many["count"] == 60
    assert clear["score"] > some["score"] > many["score"]
    worst = max(many["grade_probabilities"], key=many["grade_probabilities"].__getitem__)
    assert worst in ("severe", "very_severe")
    assert many["regions"]["left_cheek"] == 12
    assert len(many["lesions"]) == 60
    assert {lesion["region"] for lesion in many["lesions"]} == {
        "forehead",
        "left_cheek",
        "right_cheek",
        "nose",
        "chin",
    }


def test_one_lesion_is_mild_acne(scorer: PostScorer) -> None:
    prediction, labels = _with_lesions(_prediction(), 0)
    peaks = _peaks(prediction)
    peaks[0] = [0.5, 0.5, 0.9]
    labels[0] = "left_cheek"
    one = _score(scorer, Prediction(prediction.model_name, 1, prediction.signals, peaks), labels)
    assert one["concerns"]["acne"]["count"] == 1
    assert one["concerns"]["acne"]["severity"] == "mild"


def test_weak_lesion_candidates_are_not_counted(scorer: PostScorer) -> None:
    faint = _with_lesions(_prediction(), 5, score=scorer.calibration.acne_threshold / 2)
    assert _score(scorer, *faint)["concerns"]["acne"]["count"] == 0


def test_lesions_on_skin_the_regions_do_not_name_still_count(scorer: PostScorer) -> None:
    prediction, labels = _with_lesions(_prediction(), 2)
    labels = ["other_skin" if label == "chin" else label for label in labels]
    acne = _score(scorer, prediction, labels)["concerns"]["acne"]
    assert acne["count"] == 10
    assert acne["regions"]["other_skin"] == 2 and acne["regions"]["chin"] == 0


def test_dark_circles_grow_with_darker_under_eyes(scorer: PostScorer) -> None:
    prediction = _prediction()
    worse = _changed(prediction, "lab_l", ("left_under_eye", "right_under_eye"), 62.0 - 12)
    assert (
        _score(scorer, worse)["concerns"]["dark_circles"]["score"]
        < _score(scorer, prediction)["concerns"]["dark_circles"]["score"]
    )


def test_unusable_regions_are_left_out(scorer: PostScorer) -> None:
    usable = {**ALL, "chin": False}
    prediction, labels = _with_lesions(_prediction(), 2)
    report = _score(scorer, prediction, labels, usable)
    assert report["concerns"]["redness"]["regions"]["chin"] is None
    assert report["concerns"]["acne"]["regions"]["chin"] is None
    assert report["concerns"]["acne"]["count"] == 8, "lesions on a region that cannot be read are not counted"
    nothing = dict.fromkeys(contract.LABEL_NAMES, False)
    blind = _score(scorer, _prediction(), usable=nothing)
    assert all(blind["concerns"][c]["score"] is None for c in concern_names())
    assert blind["skin_tone"]["ita_deg"] is None
    assert blind["overall"]["score"] is None


def test_a_closeup_is_read_on_its_skin(scorer: PostScorer) -> None:
    closeup = {**dict.fromkeys(contract.LABEL_NAMES, False), "other_skin": True}
    report = _score(scorer, _prediction(), usable=closeup)
    for record in measured():
        entry = report["concerns"][record.name]
        assert (entry["score"] is not None) == record.closeup, record.name
        assert all(value is None for value in entry["regions"].values())
    assert report["skin_tone"]["ita_deg"] is not None
    assert report["skin_type"]["label"] is None


def test_greyscale_leaves_colour_out_of_every_part(scorer: PostScorer) -> None:
    report = _score(scorer, _prediction(erythema=30.0), colour=False)
    colour = [c.name for c in measured() if c.needs_colour]
    assert colour
    for name in colour:
        entry = report["concerns"][name]
        assert entry["score"] is None and entry["severity"] is None and entry["raw"] is None
        assert all(value is None for value in entry["regions"].values())
    assert report["skin_tone"] == {"ita_deg": None, "category": None, "lab": None}
    scores = [c["score"] for name, c in report["concerns"].items() if name not in colour]
    assert report["overall"]["score"] == pytest.approx(
        np.mean([s for s in scores if s is not None]), abs=0.06
    )


def test_skin_type_follows_the_t_zone_and_the_cheeks(scorer: PostScorer) -> None:
    assert _score(scorer, _prediction(specular=0.3))["skin_type"]["label"] == "oily"
    assert _score(scorer, _prediction(specular=0.0))["skin_type"]["label"] in ("dry", "normal")
    combination = _changed(_prediction(specular=0.0), "specular", ("forehead", "nose", "chin"), 0.3)
    assert _score(scorer, combination)["skin_type"]["label"] == "combination"


def test_stronger_lines_in_the_chosen_sites_score_wrinkles_lower(zone_scorer: PostScorer) -> None:
    lined = {("wrinkles", zone): {"lines": 1.5} for zone in ("forehead", "glabella", "right_crows_feet")}
    typical = _zone_score(zone_scorer, _zoned())["concerns"]["wrinkles"]
    worse = _zone_score(zone_scorer, _zoned(lined))["concerns"]["wrinkles"]
    assert 0 <= worse["score"] < typical["score"] <= 100
    assert worse["regions"]["forehead"] < typical["regions"]["forehead"]
    assert worse["severity"] == "severe" and worse["regions"]["left_cheek"] is None


def test_darker_under_eye_bands_score_dark_circles_lower(zone_scorer: PostScorer) -> None:
    darker = {("colour", f"{side}_infraorbital"): {"median_ita": 15.0} for side in ("right", "left")}
    typical = _zone_score(zone_scorer, _zoned())["concerns"]["dark_circles"]
    worse = _zone_score(zone_scorer, _zoned(darker))["concerns"]["dark_circles"]
    assert worse["score"] < typical["score"] and worse["severity"] == "severe"
    assert worse["regions"]["left_under_eye"] < typical["regions"]["left_under_eye"]


def test_a_photo_below_a_concerns_scale_leaves_it_unscored_with_the_reason(zone_scorer: PostScorer) -> None:
    small = {slot: "photo_too_small" for slot in contract.PATCH_SLOTS if slot[0] in ("wrinkles", "pores")}
    answer = _zone_score(zone_scorer, _zoned(), small)["concerns"]
    assert answer["wrinkles"]["score"] is None and answer["wrinkles"]["reason_code"] == "photo_too_small"
    assert (
        "1.2 pixels per millimetre" in answer["wrinkles"]["reason"] and "1.60" in answer["wrinkles"]["reason"]
    )
    assert answer["redness"]["score"] is not None and "reason" not in answer["redness"]
    # No adult of the reference was photographed at 8 px/mm: pores are not calibrated, whatever the photo.
    assert answer["pores"]["reason_code"] == "not_calibrated"


def test_greyscale_leaves_zone_colour_concerns_unknown(zone_scorer: PostScorer) -> None:
    answer = _zone_score(zone_scorer, _zoned(), colour=False)["concerns"]
    assert answer["redness"]["score"] is None and answer["wrinkles"]["score"] is not None


def test_a_zone_version_answered_without_patches_names_them_not_measured(zone_scorer: PostScorer) -> None:
    answer = zone_scorer.score(_zoned(), NO_LESIONS, ALL).dump()["concerns"]
    assert answer["wrinkles"]["reason_code"] == "not_measured" and answer["acne"]["score"] is not None


def test_ita_formula_and_categories() -> None:
    assert ita_from_lab(50.0, 20.0) == pytest.approx(0.0)
    assert ita_from_lab(70.0, 20.0) == pytest.approx(math.degrees(math.atan(1.0)))
    assert ita_from_lab(30.0, 20.0) < 0
    assert [ita_category(x) for x in (60, 45, 30, 20, 0, -40)] == [label for _, label in ITA_CATEGORIES]


def test_severity_bands() -> None:
    assert [severity(s, SEVERITY_BANDS) for s in (100, 50, 30, 15, 5)] == [
        "none",
        "none",
        "mild",
        "moderate",
        "severe",
    ]


def test_missing_calibration_is_a_bad_response() -> None:
    with pytest.raises(ModelBadResponse):
        ScorerRegistry(MODEL_REPO, contract.MODEL_NAME).for_version(10_000)


def test_a_calibration_scores_its_model_under_any_number_and_no_other_model(
    model_repo: Path, tmp_path: Path
) -> None:
    source = model_repo / contract.MODEL_NAME / str(versions_on_disk(model_repo / contract.MODEL_NAME)[-1])
    base = tmp_path / contract.MODEL_NAME
    shutil.copytree(source, base / "12")  # copied in under a new number, nothing edited
    shutil.copytree(source, base / "13")
    bind_calibration(base / "13", other_fingerprint())  # a calibration fitted on another model
    registry = ScorerRegistry(tmp_path, contract.MODEL_NAME)
    assert registry.problem(12) is None
    assert registry.for_version(12).calibration.model_fingerprint == content_fingerprint(base / "12")
    problem = registry.problem(13)
    assert problem is not None and problem.code == "calibration_mismatch"
    with pytest.raises(ModelBadResponse) as refused:
        registry.for_version(13)
    assert refused.value.__cause__ is not None
    assert "another model" in str(refused.value.__cause__)


def test_raw_values_are_what_the_signals_say() -> None:
    prediction = _prediction(erythema=25.0)
    raw = raw_concerns(prediction.signals, prediction.acne_peaks, NO_LESIONS, ALL, 0.5)
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


def test_a_lesion_on_a_bare_cell_takes_the_label_of_the_skin_beside_it() -> None:
    size = contract.FACE_SIZE_PX
    labels = np.zeros((size, size), np.uint8)
    cheek = contract.LABEL_NAMES.index("left_cheek") + 1
    labels[100:140, 100:140] = cheek  # skin up to x = 139; cells from x = 140 are bare
    peaks = np.zeros((contract.MAX_LESIONS, 3), np.float32)
    peaks[0] = [120 / size, 120 / size, 0.9]  # inside the cheek
    peaks[1] = [120 / size, 142 / size, 0.8]  # the next cell, bare: the model keeps it (one-cell margin)
    peaks[2] = [120 / size, 160 / size, 0.7]  # far from any skin
    assert lesion_labels(peaks, labels)[:4] == ["left_cheek", "left_cheek", None, None]


def test_a_concern_the_version_does_not_measure_is_not_scored_by_it(scorer: PostScorer) -> None:
    """A version without a concern's signals (an older one) answers every other concern as before and
    names that one as not scored by it."""
    full = _prediction(pores=0.5)
    signals = {name: column for name, column in full.signals.items() if name != "pores"}
    older = Prediction(full.model_name, 5, signals, full.acne_peaks)
    report, before = _score(scorer, older), _score(scorer, full)
    missing = [c.name for c in measured() if "pores" in c.signals]
    assert missing == ["pores"]
    pores = report["concerns"]["pores"]
    assert pores["score"] is None and pores["severity"] is None and pores["raw"] is None
    assert pores["reason"] == "not scored by model version 5: it does not measure pores"
    assert all(value is None for value in pores["regions"].values())
    for name in concern_names():
        if name not in missing:
            assert report["concerns"][name] == before["concerns"][name], name
    others = [
        c["score"] for n, c in before["concerns"].items() if n not in missing and c["score"] is not None
    ]
    assert report["overall"]["score"] == pytest.approx(np.mean(others), abs=0.06)


def test_a_version_without_an_acne_head_leaves_acne_unscored(scorer: PostScorer) -> None:
    full = _prediction()
    report = _score(scorer, Prediction(full.model_name, 9, full.signals, None), [])
    acne = report["concerns"]["acne"]
    assert acne["score"] is None and acne["count"] is None and acne["lesions"] == []
    assert "not scored by model version 9" in acne["reason"]
    assert report["concerns"]["redness"]["score"] is not None


def test_a_concern_its_calibration_lacks_is_not_scored(scorer: PostScorer) -> None:
    """A version calibrated on fewer concerns than this service knows scores those it has."""
    cal = scorer.calibration
    keep = [i for i, c in enumerate(cal.face_columns) if c != "wrinkles"]
    face = copy.deepcopy(cal.face)
    face.quantiles_ = cal.face.quantiles_[:, keep]
    face.n_features_in_ = len(keep)
    fewer = dataclasses.replace(
        cal, face=face, face_columns=tuple(c for c in cal.face_columns if c != "wrinkles")
    )
    report = _score(PostScorer(fewer), _prediction())
    assert report["concerns"]["wrinkles"]["score"] is None
    assert "calibration" in report["concerns"]["wrinkles"]["reason"]
    assert report["concerns"]["pores"] == _score(scorer, _prediction())["concerns"]["pores"]
