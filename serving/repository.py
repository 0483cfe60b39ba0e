"""The model_repo/ layout TF Serving reads: <base_path>/<integer version>/saved_model.pb (+ assets.extra/).

Pure Python, so the ops tool and the publisher can read the layout without TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from serving import contract


def versions_on_disk(base_path: Path) -> list[int]:
    """Integer-named folders holding a saved_model.pb; staging folders and stray files are ignored."""
    if not base_path.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in base_path.iterdir()
        # ASCII digits only, as TF Serving reads them: str.isdigit() also takes "²", which int() refuses.
        if child.name.isascii() and child.name.isdigit() and (child / "saved_model.pb").is_file()
    )


def assets_extra(base_path: Path, version: int) -> Path:
    """The assets.extra/ folder of one version (calibration, model card, warmup records)."""
    return base_path / str(version) / "assets.extra"


def reads_patches(version_dir: Path) -> bool:
    """Whether the version at `version_dir` takes the patch slots (contract 4), by its model card."""
    card = json.loads((version_dir / "assets.extra" / contract.MODEL_CARD_JSON).read_text())
    return any(spec["name"] == contract.PATCH_INPUTS[0].name for spec in card["signature"]["inputs"])


# Where models.config's base paths point: the compose mount of model_repo/ in every container.
CONTAINER_MODELS = "/models"


def inside_repository(path: Path, roots: list[Path]) -> bool:
    """True when `path` (resolved) lies strictly inside one of the model repository `roots`."""
    resolved = path.resolve()
    return any(resolved != root.resolve() and resolved.is_relative_to(root.resolve()) for root in roots)
