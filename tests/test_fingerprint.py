"""The content fingerprint: the same for a copied or renamed version, different for any other model bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from serving import contract
from serving.fingerprint import content_fingerprint, is_fingerprint, model_files
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO

BASE = MODEL_REPO / contract.MODEL_NAME


@pytest.fixture
def version(tmp_path: Path) -> Path:
    """A copy of the newest published version."""
    target = tmp_path / "4"
    shutil.copytree(BASE / str(versions_on_disk(BASE)[-1]), target)
    return target


def test_copying_or_renaming_keeps_the_fingerprint(version: Path) -> None:
    fingerprint = content_fingerprint(version)
    assert is_fingerprint(fingerprint)
    copy = version.parent / "_staging"
    shutil.copytree(version, copy)
    copy.rename(version.parent / "9")
    assert content_fingerprint(version.parent / "9") == fingerprint


def test_assets_extra_is_not_part_of_the_model(version: Path) -> None:
    fingerprint = content_fingerprint(version)
    (version / "assets.extra" / contract.CALIBRATION_FILE).write_bytes(b"rewritten")
    (version / "assets.extra" / "notes.txt").write_text("added")
    assert content_fingerprint(version) == fingerprint
    assert all("assets.extra" not in path.parts for path in model_files(version))


@pytest.mark.parametrize("part", ["saved_model.pb", "variables/variables.index", "variables/variables.data"])
def test_any_changed_model_byte_changes_it(version: Path, part: str) -> None:
    fingerprint = content_fingerprint(version)
    path = next(p for p in model_files(version) if p.relative_to(version).as_posix().startswith(part))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert content_fingerprint(version) != fingerprint


def test_truncated_weights_change_it(version: Path) -> None:
    fingerprint = content_fingerprint(version)
    weights = next((version / "variables").glob("variables.data-*"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert content_fingerprint(version) != fingerprint


def test_a_renamed_file_changes_it(version: Path) -> None:
    fingerprint = content_fingerprint(version)
    (version / "assets").mkdir(exist_ok=True)
    (version / "assets" / "a.txt").write_text("vocabulary")
    with_asset = content_fingerprint(version)
    (version / "assets" / "a.txt").rename(version / "assets" / "b.txt")
    assert len({fingerprint, with_asset, content_fingerprint(version)}) == 3


def test_a_folder_without_a_saved_model_has_none(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        content_fingerprint(tmp_path)


def test_only_well_formed_fingerprints_pass() -> None:
    assert not is_fingerprint(None)
    assert not is_fingerprint("sha256:abc")
    assert not is_fingerprint("md5:" + "0" * 64)
    assert is_fingerprint("sha256:" + "0" * 64)
