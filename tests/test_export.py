"""Export: published versions follow the contract, their calibration and model card bound to their model;
broken ones are refused; publishing is atomic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

import skops.io
import tensorflow as tf

from export.calibrate import write_calibration
from export.publish import PublishError, next_version, publish_version
from export.validate import InvalidVersion, validate_version
from orchestrator.scoring.scorer import CALIBRATION_FORMAT
from serving import contract
from serving.fingerprint import content_fingerprint
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO
from tests.repos import bind_calibration, copy_version, other_fingerprint

BASE = MODEL_REPO / contract.MODEL_NAME


@pytest.mark.parametrize("version", versions_on_disk(BASE))
def test_every_published_version_follows_the_contract(version: int) -> None:
    report = validate_version(BASE / str(version), version)
    assert "rows independent of their batch" in report.checks
    card = json.loads((BASE / str(version) / "assets.extra" / contract.MODEL_CARD_JSON).read_text())
    assert "research" in card["licence"].lower()
    assert card["signature"]["contract"] in contract.READABLE_CONTRACTS
    specs = (
        (*contract.INPUTS, *contract.PATCH_INPUTS) if card["signature"]["contract"] >= 4 else contract.INPUTS
    )
    assert card["signature"]["inputs"] == [
        {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)} for spec in specs
    ]


def _copy(tmp_path: Path, version: int) -> Path:
    """The newest published version copied to `tmp_path`/`version`, its calibration bound to it
    (tests/repos.py), so these tests hold before and after it is re-published in the current format."""
    return copy_version(tmp_path / str(version))


def test_a_version_copied_under_another_number_stays_valid(tmp_path: Path) -> None:
    report = validate_version(_copy(tmp_path, 77), 77)
    assert any("bound to this model" in check for check in report.checks)


def test_a_calibration_fitted_on_another_model_is_refused(tmp_path: Path) -> None:
    copy = _copy(tmp_path, 77)
    bind_calibration(copy, other_fingerprint())
    with pytest.raises(InvalidVersion, match="calibration was fitted on model sha256:"):
        validate_version(copy, 77)


def test_a_calibration_without_a_fingerprint_is_refused(tmp_path: Path) -> None:
    copy = _copy(tmp_path, 77)
    path = copy / "assets.extra" / contract.CALIBRATION_FILE
    calibration = skops.io.load(path, trusted=[])
    del calibration["model_fingerprint"]
    skops.io.dump(calibration, path)
    with pytest.raises(InvalidVersion, match="records no model fingerprint"):
        validate_version(copy, 77)


def test_publishing_writes_the_calibration_bound_to_the_saved_model(tmp_path: Path) -> None:
    copy = _copy(tmp_path, 3)
    calibration = skops.io.load(copy / "assets.extra" / contract.CALIBRATION_FILE, trusted=[])
    del calibration["model_fingerprint"]  # as fit_calibration returns it: not yet bound
    fingerprint = write_calibration(calibration, copy)
    assert fingerprint == content_fingerprint(copy)
    written = skops.io.load(copy / "assets.extra" / contract.CALIBRATION_FILE, trusted=[])
    assert written["format"] == CALIBRATION_FORMAT and written["model_fingerprint"] == fingerprint


def test_missing_model_card_is_refused(tmp_path: Path) -> None:
    copy = _copy(tmp_path, versions_on_disk(BASE)[-1])
    (copy / "assets.extra" / contract.MODEL_CARD_FILE).unlink()
    with pytest.raises(InvalidVersion, match=r"model_card\.md missing"):
        validate_version(copy, versions_on_disk(BASE)[-1])


def test_publish_is_all_or_nothing(tmp_path: Path) -> None:
    base = tmp_path / contract.MODEL_NAME

    def broken_build(path: Path) -> None:
        path.mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"half written")
        raise RuntimeError("the build died half way")

    with pytest.raises(RuntimeError):
        publish_version(base, 1, broken_build)
    assert list(base.iterdir()) == []

    def invalid_build(path: Path) -> None:
        copy_version(path)
        bind_calibration(path, other_fingerprint())  # a calibration fitted on another model

    with pytest.raises(InvalidVersion):
        publish_version(base, 5, invalid_build)
    assert list(base.iterdir()) == []


def test_publish_renames_into_place_and_never_overwrites(tmp_path: Path) -> None:
    base = tmp_path / contract.MODEL_NAME
    source = versions_on_disk(BASE)[-1]

    def build(path: Path) -> None:
        copy_version(path, source)

    published = publish_version(base, source, build)
    assert published == base / str(source)
    assert versions_on_disk(base) == [source]
    assert next_version(base) == source + 1
    with pytest.raises(PublishError):
        publish_version(base, source, build)
    assert [p.name for p in base.iterdir()] == [str(source)]


def test_staging_folders_are_invisible(tmp_path: Path) -> None:
    (tmp_path / "_staging-3-1").mkdir()
    (tmp_path / "_staging-3-1" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "4").mkdir()  # no saved_model.pb yet
    assert versions_on_disk(tmp_path) == []


def test_only_ascii_digit_folders_are_versions(tmp_path: Path) -> None:
    # str.isdigit() accepts both; TF Serving reads neither as a version, and int("²") raises.
    for name in ("\u00b2", "\u0663", "2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"x")
    assert versions_on_disk(tmp_path) == [2]


class OneSignalModel(tf.Module):
    """A model that follows the contract's signature but measures nothing except one signal."""

    @tf.function(
        input_signature=[tf.TensorSpec(spec.shape, tf.uint8, name=spec.name) for spec in contract.INPUTS]
    )
    def serve(self, face: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        mean = tf.reduce_mean(tf.cast(face, tf.float32), axis=[1, 2, 3]) + 0.0 * tf.reduce_mean(
            tf.cast(mask, tf.float32), axis=[1, 2]
        )
        labels = len(contract.LABEL_NAMES)
        names = contract.signal_names()
        outputs = {
            contract.SIGNAL_PREFIX + name: tf.tile(
                (mean if name == names[0] else 0.0 * mean)[:, None], [1, labels]
            )
            for name in names
        }
        peaks = tf.zeros_like(mean)[:, None, None] + tf.zeros([1, *contract.ACNE_PEAKS.shape[1:]])
        return {**outputs, contract.ACNE_PEAKS.name: peaks}


def test_a_version_whose_signals_do_not_all_vary_is_refused(tmp_path: Path) -> None:
    version = versions_on_disk(BASE)[-1]
    path = tmp_path / str(version)
    model = OneSignalModel()
    tf.saved_model.save(model, str(path), signatures={contract.SIGNATURE_NAME: model.serve})
    shutil.copytree(BASE / str(version) / "assets.extra", path / "assets.extra")
    bind_calibration(path)  # fitted on this model, as far as the assets know: only behaviour is wrong
    with pytest.raises(InvalidVersion) as refused:
        validate_version(path, version)
    names = contract.signal_names()
    for name in names[1:]:
        assert name in str(refused.value)
    assert f"{names[0]}," not in str(refused.value) and not str(refused.value).endswith(names[0])
