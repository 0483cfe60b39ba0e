"""The content fingerprint of a SavedModel version folder: what binds a calibration and a model card to it.

A SHA-256 over the files TF Serving loads (saved_model.pb, everything under variables/ and assets/),
each file's relative name, size and bytes in sorted order. assets.extra/ (warmup records, calibration,
model card) and fingerprint.pb are left out, so copying or renaming a version keeps its fingerprint and
writing its calibration does not change it. Pure Python: the orchestrator reads it without TensorFlow.

TensorFlow's own fingerprint.pb is not used for this: its saved_model_checksum is a FarmHash that
cannot be recomputed here without TensorFlow, its checkpoint_hash covers only variables.index (not the
weights in variables.data-*), and it is written once at save time, so a truncated or replaced weights
file keeps the old one. This digest is recomputed from the bytes on disk, and a few MB hash in
milliseconds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PREFIX = "sha256:"
# The graph file (TF Serving reads either) and the folders the SavedModel loader reads.
GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")
MODEL_DIRS = ("variables", "assets")
_CHUNK_BYTES = 1 << 20


def model_files(version_dir: Path) -> list[Path]:
    """The files the fingerprint covers, in the order it reads them; raises FileNotFoundError when the
    folder holds no saved_model.pb(txt)."""
    graphs = [version_dir / name for name in GRAPH_FILES if (version_dir / name).is_file()]
    if not graphs:
        raise FileNotFoundError(f"{version_dir} holds no {' or '.join(GRAPH_FILES)}")
    files = list(graphs)
    for folder in MODEL_DIRS:
        if (version_dir / folder).is_dir():
            files += [p for p in (version_dir / folder).rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(version_dir).as_posix())


def content_fingerprint(version_dir: Path) -> str:
    """ "sha256:<hex>" of the SavedModel at `version_dir`; raises FileNotFoundError (no SavedModel) or
    OSError (a file cannot be read)."""
    digest = hashlib.sha256()
    for path in model_files(version_dir):
        name = path.relative_to(version_dir).as_posix().encode()
        digest.update(b"%s\0%d\0" % (name, path.stat().st_size))
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
    return PREFIX + digest.hexdigest()


def is_fingerprint(value: object) -> bool:
    """True when `value` has the form content_fingerprint returns."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return False
    hexdigest = value[len(PREFIX) :]
    return len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest)
