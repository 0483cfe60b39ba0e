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


def bind_calibration(version_dir: Path, fingerprint: str | None = None) -> str:
    """Re-write the version's calibration (and model card) in the current format, bound to `fingerprint`
    (default: the folder's own content); returns the fingerprint written."""
    fingerprint = fingerprint or content_fingerprint(version_dir)
    extra = version_dir / "assets.extra"
    path = extra / contract.CALIBRATION_FILE
    calibration = skops.io.load(path, trusted=[])
    calibration.pop("version", None)  # format 3 named a version number
    calibration.update(format=CALIBRATION_FORMAT, model_fingerprint=fingerprint)
    skops.io.dump(calibration, path)
    card_path = extra / contract.MODEL_CARD_JSON
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        card["model_fingerprint"] = fingerprint
        card_path.write_text(json.dumps(card, indent=2) + "\n")
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
