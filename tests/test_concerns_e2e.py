"""The concern registry end to end: a concern added as one record (with its one measure) is built into a
model version here and shows in the answer, the OpenAPI document, the model card, the command line's
table and the demo page's words, with no other file edited; and once that version is published, the
version before it, pinned with serving.ops, still serves and names the new concern as not scored by it.

The model server is the real one in its own process (serving.launch) over a copy of model_repo/; the
orchestrator runs in this process, where the registry holds the added record.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import skops.io
from flask.testing import FlaskClient

from orchestrator.cli import Outcome, format_report
from orchestrator.face.stage import FaceGeometry
from orchestrator.settings import Settings
from orchestrator.web.app import create_app
from scripts.stack import ROOT, AdmissionProcess, ModelServerProcess
from serving import concerns, contract
from serving.concerns import UNDER_EYES, Concern
from serving.ops import ModelServerOps
from serving.repository import versions_on_disk
from tests.conftest import data_dir
from tests.repos import copy_repo

tf = pytest.importorskip("tensorflow")

from export import measures  # noqa: E402
from export.calibrate import collect_faces, fit_reference, image_files, run_model, write_calibration  # noqa: E402
from export.card import write_model_card  # noqa: E402
from export.model import SkinModel  # noqa: E402
from export.savedmodel import write_saved_model, write_warmup  # noqa: E402
from export.texture import fine_roughness  # noqa: E402
from export.validate import validate_version  # noqa: E402
from orchestrator.predict.prediction import batch_signals  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PORTRAIT = "congress_B001270.jpg"
# A throwaway concern: fine roughness of the skin under the eyes, read as its own signal.
SIGNAL = contract.Signal("under_eye_roughness", "fine-scale roughness of L* (a test signal), L* units")
CONCERN = Concern(
    "eye_bags",
    "Eye bags",
    UNDER_EYES,
    (SIGNAL.name,),
    "mean",
    "Fine roughness of the skin under the eyes (a concern added by a test).",
    "Made up for a test: it shows that one record reaches every part of the service.",
    closeup=False,
)


def _measure(maps: measures.Maps) -> tf.Tensor:
    return fine_roughness(maps.cell_variance, maps.colour.skin, maps.colour.labels)


@dataclass
class Published:
    repo: Path  # a model_repo holding the newest published version and the test-built one after it
    previous: int
    added: int


@pytest.fixture(scope="module")
def registry_with_one_more_concern() -> Iterator[None]:
    """The registry, the contract's signals and export's measures with one record each added."""
    patch = pytest.MonkeyPatch()
    patch.setattr(concerns, "CONCERN_TABLE", (*concerns.CONCERN_TABLE, CONCERN))
    patch.setattr(contract, "SIGNALS", (*contract.SIGNALS, SIGNAL))
    patch.setitem(measures.SIGNAL_MEASURES, SIGNAL.name, _measure)
    try:
        yield
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def published(registry_with_one_more_concern: None, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """A copy of model_repo/ with its newest version, and after it a version built here with the added
    concern: fixed filters, the newest version's acne calibration, percentiles fitted on data/faces."""
    repo = copy_repo(tmp_path_factory.mktemp("concerns") / "model_repo")
    base = repo / contract.MODEL_NAME
    *older, previous = versions_on_disk(base)
    for version in older:
        shutil.rmtree(base / str(version))
    added = previous + 1
    staged = base / f"_staging-{added}"
    model = SkinModel()

    def run(faces: Any, masks: Any) -> tuple[dict[str, Any], Any]:
        out = {name: t.numpy() for name, t in model.serve(tf.constant(faces), tf.constant(masks)).items()}
        return batch_signals(out), out[contract.ACNE_PEAKS.name]

    acne = skops.io.load(base / str(previous) / "assets.extra" / contract.CALIBRATION_FILE, trusted=[])
    reference = collect_faces(image_files(data_dir("faces")), Settings(), FaceGeometry())
    run_model(reference, run)
    calibration = {
        "format": acne["format"],
        "acne_threshold": acne["acne_threshold"],
        "acne_grade_model": acne["acne_grade_model"],
        **fit_reference(reference, acne["acne_threshold"]),
        "reference": {"reference_faces": len(reference), "reference_sources": ["data/faces"]},
    }
    write_saved_model(model, staged)
    write_warmup(staged, patches=False)  # a contract-3 model: the aligned face alone
    fingerprint = write_calibration(calibration, staged)
    facts = {"calibration": calibration["reference"]}
    write_model_card(staged / "assets.extra", added, model.describe(), facts, fingerprint)
    report = validate_version(staged, added)  # raises InvalidVersion listing what breaks the contract
    assert "rows independent of their batch" in report.checks
    staged.rename(base / str(added))
    return Published(repo, previous, added)


@pytest.fixture(scope="module")
def served(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The model server and admission over the published copy, serving both versions once admission
    has passed them; yields the server's address and its models.config."""
    work = tmp_path_factory.mktemp("served")
    config = work / "models.config"
    shutil.copy(ROOT / "serving" / "models.config", config)
    server = ModelServerProcess(work / "model_server.log", config=config, model_repo=published.repo)
    admission = AdmissionProcess(server.address, work / "admission.log", config, published.repo)
    server.start()
    ops = ModelServerOps(server.address, config, published.repo)
    try:
        admission.start()
        deadline = time.monotonic() + 300
        while ops.state().served != (published.added, published.previous):
            assert time.monotonic() < deadline, f"admission serves {ops.state().served}"
            time.sleep(0.3)
        yield server.address, config
    finally:
        ops.close()
        admission.stop()
        server.stop()


@pytest.fixture(scope="module")
def client(published: Published, served: tuple[str, Path]) -> FlaskClient:
    settings = Settings(
        model_server_address=served[0],
        model_repo_dir=published.repo,
        recommendations_file=ROOT / "configs" / "recommendations.json",
        predict_timeout_s=30.0,
        routing_refresh_s=0.2,
        rate_limit_burst=100_000,
    )
    return create_app(settings).test_client()


def _check_against_the_document(client: FlaskClient, report: dict[str, Any]) -> None:
    """Validate an answer against the served OpenAPI document's Report schema."""
    schemas = client.get("/api/v2/openapi.json").get_json()["components"]["schemas"]
    resolved = json.loads(json.dumps(schemas).replace("#/components/schemas/", "#/$defs/"))
    jsonschema.validate(report, {"$defs": resolved, **resolved["Report"]})


def _analyse(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    with (data_dir("faces") / PORTRAIT).open("rb") as photo:
        response = client.post(
            "/api/v2/analyze/guest", data={"image": (photo, PORTRAIT)}, content_type="multipart/form-data"
        )
    return response.status_code, response.get_json()


def test_the_added_concern_reaches_every_part(published: Published, client: FlaskClient) -> None:
    status, report = _analyse(client)
    assert status == 200, report
    assert report["model"]["version"] == published.added
    eye_bags = report["concerns"][CONCERN.name]
    assert 0 <= eye_bags["score"] <= 100 and eye_bags["severity"] in CONCERN.severity_labels
    assert set(eye_bags["regions"]) == set(UNDER_EYES) and "reason" not in eye_bags
    _check_against_the_document(client, report)
    broken = {**report, "concerns": {**report["concerns"], CONCERN.name: {**eye_bags, "severity": "dire"}}}
    with pytest.raises(jsonschema.ValidationError):
        _check_against_the_document(client, broken)

    document = client.get("/api/v2/openapi.json").get_json()
    schema = document["components"]["schemas"]["Report"]["properties"]["concerns"]
    assert CONCERN.name in schema["required"]
    assert schema["properties"][CONCERN.name]["description"] == CONCERN.label

    words = client.get("/api/v2/vocabulary").get_json()
    assert {"name": CONCERN.name, "label": CONCERN.label} in [
        {"name": c["name"], "label": c["label"]} for c in words["concerns"]
    ]

    extra = published.repo / contract.MODEL_NAME / str(published.added) / "assets.extra"
    card = json.loads((extra / contract.MODEL_CARD_JSON).read_text())
    assert card["measures"][CONCERN.name]["what"] == CONCERN.measures
    assert {"name": "signal_under_eye_roughness", "dtype": "float32", "shape": [None, 8]} in card[
        "signature"
    ]["outputs"]
    assert f"| {CONCERN.name} | {CONCERN.measures} |" in (extra / contract.MODEL_CARD_FILE).read_text()

    table = format_report(Outcome(Path(PORTRAIT), 200, report={**report, "timing_ms": {"total": 1.0}}))
    row = next(line for line in table.splitlines() if line.strip().startswith("eye bags"))
    assert "worst:" in row


def test_the_previous_version_pinned_still_serves_and_names_the_concern_not_scored(
    published: Published, served: tuple[str, Path], client: FlaskClient
) -> None:
    status, report = _analyse(client)
    assert status == 200 and report["model"]["version"] == published.added
    ops = ModelServerOps(served[0], served[1], published.repo)
    try:
        assert ops.rollback() == published.previous
        deadline = time.monotonic() + 60
        while report["model"]["version"] != published.previous and time.monotonic() < deadline:
            time.sleep(0.3)
            status, report = _analyse(client)
            assert status == 200, report
        assert report["model"]["version"] == published.previous
        eye_bags = report["concerns"][CONCERN.name]
        assert eye_bags["score"] is None and eye_bags["severity"] is None
        assert eye_bags["reason"] == (
            f"not scored by model version {published.previous}: it does not measure {CONCERN.name}"
        )
        # Every other concern is scored, but for one the portrait's scale is below (pores: 8 px/mm).
        assert all(
            entry["score"] is not None or entry["reason_code"] in ("photo_too_small", "not_calibrated")
            for name, entry in report["concerns"].items()
            if name != CONCERN.name
        )
        assert report["concerns"]["wrinkles"]["score"] is not None
        models = client.get("/api/v2/models").get_json()["versions"]
        assert [v["version"] for v in models if v["usable"]] == [published.previous]
    finally:
        ops.unpin()
        ops.close()
