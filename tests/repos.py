"""Model repositories for tests: copies of model_repo/ whose calibrations are bound to their own model.

Calibrations written before format 4 named a version number instead of the model's content. So that
tests of the service hold whether or not the published versions have been re-published in the current
format, `copy_repo` re-writes each copied calibration in the current format, bound to its own folder's
content fingerprint (`bind_calibration`); the published versions themselves are checked as they are by
tests/test_export.py. `bind_calibration` with another fingerprint stands for a calibration fitted on
another model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import skops.io

from orchestrator.scoring.scorer import CALIBRATION_FORMAT
from serving import contract
from serving.fingerprint import PREFIX, content_fingerprint
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO

PUBLISHED_BASE = MODEL_REPO / contract.MODEL_NAME


def other_fingerprint(seed: str = "another model") -> str:
    """A well-formed fingerprint no SavedModel here has."""
    return PREFIX + hashlib.sha256(seed.encode()).hexdigest()


def bind_calibration(version_dir: Path, fingerprint: str | None = None, card: bool = True) -> str:
    """Re-write the version's calibration (and, with `card`, its model card) in the current format, bound
    to `fingerprint` (default: the folder's own content); returns the fingerprint written."""
    fingerprint = fingerprint or content_fingerprint(version_dir)
    extra = version_dir / "assets.extra"
    path = extra / contract.CALIBRATION_FILE
    calibration = skops.io.load(path, trusted=[])
    calibration.pop("version", None)  # format 3 named a version number
    calibration.update(format=CALIBRATION_FORMAT, model_fingerprint=fingerprint)
    skops.io.dump(calibration, path)
    card_path = extra / contract.MODEL_CARD_JSON
    if card and card_path.is_file():
        written = json.loads(card_path.read_text())
        written["model_fingerprint"] = fingerprint
        card_path.write_text(json.dumps(written, indent=2) + "\n")
    return fingerprint


def copy_version(target: Path, version: int | None = None) -> Path:
    """Copy a published version (default: the newest) to `target`, its calibration bound to it."""
    source = PUBLISHED_BASE / str(version or versions_on_disk(PUBLISHED_BASE)[-1])
    shutil.copytree(source, target)
    bind_calibration(target)
    return target


def copy_repo(target: Path) -> Path:
    """A model_repo/ at `target` with every published version, each calibration bound to its own model;
    returns `target` (use it as model_repo_dir)."""
    for version in versions_on_disk(PUBLISHED_BASE):
        copy_version(target / contract.MODEL_NAME / str(version), version)
    return target


# Bad versions, as they reach a model repository by hand: each edits a staged copy of a good version
# (`folder`) in place. Admission must refuse each with the reason code beside it.


def cut_calibration(folder: Path) -> None:
    """The calibration copied only half-way ("calibration_unreadable")."""
    path = folder / "assets.extra" / contract.CALIBRATION_FILE
    os.truncate(path, path.stat().st_size // 2)


def cut_weights(folder: Path) -> None:
    """The weights copied only half-way ("model_changed")."""
    weights = next((folder / "variables").glob("variables.data-*"))
    os.truncate(weights, weights.stat().st_size // 2)


def calibration_of_another_model(folder: Path) -> None:
    """A calibration fitted on another model copied in; the model card left as it was
    ("calibration_mismatch")."""
    bind_calibration(folder, other_fingerprint(), card=False)


def empty(folder: Path) -> None:
    """Nothing in the folder at all ("empty")."""
    shutil.rmtree(folder)
    folder.mkdir()


def half_copied(folder: Path) -> None:
    """A copy stopped part-way (the weights and assets.extra never arrived), then renamed into place
    ("incomplete")."""
    shutil.rmtree(folder / "assets.extra")
    for weights in (folder / "variables").glob("variables.data-*"):
        weights.unlink()


def other_signature(folder: Path) -> None:
    """A SavedModel that loads and answers the good version's inputs (its warmup stays valid) but whose
    "signals" output has one column fewer than contract 2's named axis (it would be read wrong), with
    the good version's assets.extra bound to it ("signature")."""
    import tensorflow as tf

    card = json.loads((folder / "assets.extra" / contract.MODEL_CARD_JSON).read_text())
    names = [spec["name"] for spec in card["signature"]["inputs"]]
    specs = {spec.name: spec for spec in (*contract.INPUTS, *contract.PATCH_INPUTS)}
    signature = [tf.TensorSpec(specs[n].shape, tf.as_dtype(specs[n].dtype), name=n) for n in names]
    columns = len(contract.SIGNAL_AXIS_NAMES) - 1

    class ShortSignals(tf.Module):
        @tf.function(input_signature=signature)
        def serve(self, *inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            rows = tf.shape(inputs[0])[0]
            level = tf.add_n([tf.reduce_mean(tf.cast(t, tf.float32)) for t in inputs])
            return {
                "signals": tf.fill([rows, len(contract.LABEL_NAMES), columns], level),
                "acne_peaks": tf.fill([rows, *contract.ACNE_PEAKS.shape[1:]], 0.0 * level),
            }

    extra = folder.parent / f"_{folder.name}-extra"
    shutil.move(str(folder / "assets.extra"), extra)
    shutil.rmtree(folder)
    module = ShortSignals()
    tf.saved_model.save(module, str(folder), signatures={contract.SIGNATURE_NAME: module.serve})
    shutil.move(str(extra), folder / "assets.extra")
    bind_calibration(folder)


BAD_VERSIONS = {
    "calibration_unreadable": cut_calibration,
    "model_changed": cut_weights,
    "calibration_mismatch": calibration_of_another_model,
    "signature": other_signature,
    "empty": empty,
    "incomplete": half_copied,
}
