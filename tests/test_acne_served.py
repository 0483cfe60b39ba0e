"""The published model's acne head through the service's own path (face stage, model in process,
post-scoring with the version's calibration): papules planted on one cheek of real portraits are found
there, and the acne score falls."""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from export.acne.evaluate import load_version
from orchestrator.predict.prediction import Prediction
from orchestrator.scoring.concerns import lesion_labels, usable_labels
from serving import contract
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO
from tests.planting import FACES, geometry_stage, plant_inflamed_papules, portrait

# Light to dark skin as the photos render them (SOURCES.md).
PORTRAITS = ("L000174", "B001284", "G000571", "E000288", "C000984", "M001137", "S001185")
pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason=f"portraits not found at {FACES}")


@functools.cache
def served() -> tuple[object, object, int]:
    base = MODEL_REPO / contract.MODEL_NAME
    version = versions_on_disk(base)[-1]
    serve, scorer = load_version(base / str(version))
    return serve, scorer, version


def acne(rgb: np.ndarray) -> dict[str, object]:
    """The acne part of the answer for a photo, as the service computes it."""
    serve, scorer, version = served()
    geometry = geometry_stage().analyse(rgb)
    signals, peaks = serve(geometry.face[None], geometry.mask.labels[None])  # type: ignore[operator]
    prediction = Prediction(contract.MODEL_NAME, version, signals[0], peaks[0])
    usable = usable_labels(prediction.signals, geometry.mask.pixels, geometry.mask.visible)
    labels = lesion_labels(prediction.acne_peaks, geometry.mask.labels)
    return scorer.score(prediction, labels, usable)["concerns"]["acne"]  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("bioguide", PORTRAITS)
def test_papules_planted_on_a_cheek_are_counted_there(bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    before = acne(rgb)
    after = acne(plant_inflamed_papules(rgb, geometry, "left_cheek"))
    assert after["regions"]["left_cheek"] >= before["regions"]["left_cheek"] + 3, (before, after)  # type: ignore[index]
    assert after["score"] < before["score"]  # type: ignore[operator]
    assert after["regions"]["right_cheek"] == before["regions"]["right_cheek"]  # type: ignore[index]
