"""The benchmark's own parts: the monolith baseline answers like the service it is compared with, and
the load helpers summarise what they measure."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from orchestrator.settings import Settings
from scripts.bench import render_overload
from scripts.load import run_load, run_overload, summarise
from scripts.monolith import InProcessModel
from serving import contract
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO, ROOT, data_dir


def test_the_monolith_runs_the_same_pipeline_with_the_model_in_process() -> None:
    from orchestrator.web.app import create_app

    base = MODEL_REPO / contract.MODEL_NAME
    version = versions_on_disk(base)[-1]
    settings = Settings(
        model_repo_dir=MODEL_REPO, recommendations_file=ROOT / "configs" / "recommendations.json"
    )
    model = InProcessModel(settings, base / str(version))
    app = create_app(settings, client=model)
    photo = (data_dir("faces") / "congress_B001270.jpg").read_bytes()
    response = app.test_client().post(
        "/api/v2/analyze/guest",
        data={"image": (io.BytesIO(photo), "p.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert report["model"]["version"] == version
    assert report["concerns"]["acne"]["score"] is not None
    assert report["concerns"]["wrinkles"]["score"] is not None  # read on the patch slots it was sent
    # The signature it reports is read from the SavedModel itself, and is the contract's.
    signature = model.signature(version)
    specs = (*contract.INPUTS, *contract.PATCH_INPUTS)
    assert signature["inputs"] == {spec.name: (spec.dtype, spec.shape) for spec in specs}


def test_load_counts_failures_and_summaries_keep_the_spread(tmp_path: Path) -> None:
    calls = iter([True, False, True, True])
    result = run_load(lambda: next(calls), concurrency=1, total=4)
    assert result["requests"] == 4 and result["errors"] == 1
    summary = summarise([{"x": 3.0}, {"x": 1.0}, {"x": 2.0}])["x"]
    assert summary == {"median": 2.0, "min": 1.0, "max": 3.0}


def test_overload_runs_count_answers_refusals_other_outcomes_and_late_answers() -> None:
    outcomes = iter(
        [
            (200, "", 120.0),
            (200, "", 10_500.0),  # answered after its client's 10 s
            (503, "OVERLOADED", 3.0),
            (503, "MODEL_UNAVAILABLE", 4.0),
            (0, "ConnectionError", 1.0),
        ]
    )
    result = run_overload(lambda: next(outcomes), concurrency=1, total=5, deadline_s=10.0)
    assert result["answers"] == 2 and result["late_answers"] == 1
    assert result["overloaded"] == 1 and result["other"] == 2
    assert result["overloaded_p99_ms"] == 3.0


def test_the_report_sets_the_model_servers_cpu_beside_the_models_time_and_lists_overload() -> None:
    overload = {"requests": 768.0, "answers": 500.0, "overloaded": 268.0, "other": 0.0, "late_answers": 0.0}
    overload |= {"overloaded_p99_ms": 20.0, "p50_ms": 900.0, "p99_ms": 9000.0, "answers_per_s": 25.0}
    results = {"overload": {"Shine": {"128": overload, "256": overload}, "monolith": {"256": overload}}}
    lines = "\n".join(render_overload(results))
    assert "128 and 256 clients" in lines
    assert "| Shine | 256 | 768 | 500 | 268 (20) | 0 | 0 | 900 | 9000 | 25.0 |" in lines
    assert "| monolith | 256 |" in lines
