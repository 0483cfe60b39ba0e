"""What the suite does without its prerequisites (../shared/data, TensorFlow): locally a test skips and
says what is missing; under CI=true the run fails instead of quietly skipping half the suite.

Each case runs pytest in a subprocess: on a copy of tests/conftest.py beside a probe test, or on the
real test files with TensorFlow hidden behind a package that refuses to import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The test files that need TensorFlow (or tensorflow-serving-api, which imports it).
NEEDS_TENSORFLOW = (
    "test_acne.py",
    "test_acne_aligned.py",
    "test_acne_served.py",
    "test_admission.py",
    "test_bench.py",
    "test_efficientnet.py",
    "test_export.py",
    "test_local_server.py",
    "test_measures.py",
    "test_wire.py",
)

# One test finds its data through conftest.data_dir, one through a skip marker of its own (as
# tests/test_measures.py does).
PROBE = """
from pathlib import Path

import pytest

from tests.conftest import data_dir

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def test_reads_portraits() -> None:
    assert data_dir("faces").is_dir()


@pytest.mark.skipif(not FACES.is_dir(), reason=f"portraits not found at {FACES}")
def test_marked() -> None:
    pass
"""


def _pytest(cwd: Path, args: list[str], ci: bool, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    if ci:
        env["CI"] = "true"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-o", "addopts=", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _probe_repository(root: Path, with_data_folder: bool) -> Path:
    """A repository holding only tests/conftest.py and a probe test, beside a shared/ without faces/."""
    repository = root / "repo"
    (repository / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", repository / "tests" / "conftest.py")
    (repository / "tests" / "__init__.py").write_text("")
    (repository / "tests" / "test_probe.py").write_text(PROBE)
    if with_data_folder:
        (root / "shared" / "data").mkdir(parents=True)
    return repository


@pytest.mark.parametrize("with_data_folder", [True, False], ids=["faces missing", "data folder missing"])
def test_missing_data_skips_saying_why_but_fails_under_ci(tmp_path: Path, with_data_folder: bool) -> None:
    repository = _probe_repository(tmp_path, with_data_folder)
    local = _pytest(repository, ["tests/test_probe.py"], ci=False)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "2 skipped" in local.stdout
    assert str(tmp_path / "shared" / "data") in local.stdout, "the skip does not say what is missing"
    in_ci = _pytest(repository, ["tests/test_probe.py"], ci=True)
    assert in_ci.returncode not in (0, 5), in_ci.stdout + in_ci.stderr
    assert "skipped" not in in_ci.stdout
    assert str(tmp_path / "shared" / "data") in in_ci.stdout + in_ci.stderr


def test_missing_tensorflow_skips_saying_why_but_fails_under_ci(tmp_path: Path) -> None:
    # A package named tensorflow that imports as if it were not installed hides the installed one.
    shadow = tmp_path / "shadow" / "tensorflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        'raise ModuleNotFoundError("TensorFlow hidden by the test", name="tensorflow")\n'
    )
    files = [f"tests/{name}" for name in NEEDS_TENSORFLOW]
    local = _pytest(ROOT, files, ci=False, pythonpath=str(shadow.parent))
    assert local.returncode in (0, 5), local.stdout + local.stderr  # 5: every module skipped
    assert f"{len(files)} skipped" in local.stdout, local.stdout
    assert local.stdout.count("TensorFlow hidden by the test") >= len(files), "a skip does not say why"
    in_ci = _pytest(ROOT, files, ci=True, pythonpath=str(shadow.parent))
    assert in_ci.returncode not in (0, 5), in_ci.stdout + in_ci.stderr
    assert "skipped" not in in_ci.stdout
    for name in NEEDS_TENSORFLOW:
        assert name in in_ci.stdout, f"{name} did not fail"
