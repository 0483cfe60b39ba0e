"""models.config and batching_parameters.txt are read as TF Serving reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.config import (
    BatchingConfig,
    ConfigError,
    ModelEntry,
    VersionPolicy,
    map_base_path,
    parse_batching_parameters,
    parse_model_config,
    render_model_config,
)
from serving.repository import versions_on_disk
from serving.wire.model_status_pb2 import ModelServerConfig

SERVING = Path(__file__).resolve().parent.parent / "serving"


def test_shipped_models_config_parses() -> None:
    (entry,) = parse_model_config((SERVING / "models.config").read_text(), ModelServerConfig)
    assert entry.name == "skin_analyzer"
    assert entry.base_path == "/models/skin_analyzer"
    # Admission's explicit served set (serving/admission): published versions only, named one by one.
    assert entry.policy.kind == "specific"
    on_disk = versions_on_disk(SERVING.parent / "model_repo" / "skin_analyzer")
    assert entry.policy.versions and set(entry.policy.versions) <= set(on_disk)


def test_shipped_batching_parameters_parse() -> None:
    config = parse_batching_parameters((SERVING / "batching_parameters.txt").read_text())
    # One row is one face (contract 2). On 2 cores, batches of two sustained the most faces per second
    # with the least memory (reports/benchmark.md; eight: 56/s at 1.33 GB, four: 72/s, two: 72/s at 0.98).
    assert config.max_batch_size == 2
    # No wait for a second face: a lone request is not held back (c1 p50 18.3 -> 15.3 ms), and under
    # load a batch fills from the queue anyway (c20: 69 -> 74 faces/s).
    assert config.batch_timeout_micros == 0
    assert config.num_batch_threads == 2
    assert config.max_enqueued_batches == 64


@pytest.mark.parametrize(
    ("policy", "on_disk", "served"),
    [
        (VersionPolicy("latest", num_versions=1), [1, 3, 2], [3]),
        (VersionPolicy("latest", num_versions=2), [1, 3, 2], [3, 2]),
        (VersionPolicy("all"), [2, 1], [2, 1]),
        (VersionPolicy("specific", versions=(1,)), [1, 2, 3], [1]),
        (VersionPolicy("specific", versions=(4,)), [1, 2], []),
    ],
)
def test_version_policy_selects(policy: VersionPolicy, on_disk: list[int], served: list[int]) -> None:
    assert policy.select(on_disk) == served


def test_render_round_trips_labels_and_policies() -> None:
    entries = [
        ModelEntry(
            "skin_analyzer",
            "/models/skin_analyzer",
            VersionPolicy("specific", versions=(1, 2)),
            {"stable": 1, "canary": 2},
        ),
        ModelEntry("other", "/models/other", VersionPolicy("all")),
    ]
    assert parse_model_config(render_model_config(entries), ModelServerConfig) == entries


@pytest.mark.parametrize(
    "text",
    [
        "model_config_list { config { name: 'x' } }",
        "model_config_list { config { name: 'x' base_path: '/m' model_platform: 'onnx' } }",
        "model_config_list { config { name: 'x' base_path: '/m' } config { name: 'x' base_path: '/n' } }",
        "model_config_list { config { name: 'x' base_path: '/m' model_version_policy { specific { } } } }",
        "this is not a config",
    ],
)
def test_bad_models_config_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_model_config(text, ModelServerConfig)


@pytest.mark.parametrize(
    "text",
    [
        "max_batch_size { value: 0 }",
        "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2",
        "max_batch_size { value: 8 } allowed_batch_sizes: 4",
        "num_batch_threads: 3",
    ],
)
def test_bad_batching_parameters_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_batching_parameters(text)


def test_batching_defaults_fill_missing_fields() -> None:
    assert parse_batching_parameters("max_batch_size { value: 14 }") == BatchingConfig(max_batch_size=14)


def test_mount_maps_container_paths() -> None:
    mounts = {"/models": Path("/srv/repo")}
    assert map_base_path("/models/skin_analyzer", mounts) == Path("/srv/repo/skin_analyzer")
    assert map_base_path("/modelsx/a", mounts) == Path("/modelsx/a")
    assert map_base_path("/elsewhere/a", mounts) == Path("/elsewhere/a")
