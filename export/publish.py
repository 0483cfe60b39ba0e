"""Publishing a version atomically: build under a staging name, validate, then one rename; or to the
bucket, where the completion record written last plays the rename's part (serving/bucket.py).

TF Serving (and the local model server) only look at integer folder names, so a version being
written under `_staging-<n>-<pid>` is invisible to them until the rename, which on one filesystem is
atomic: no server can ever load a half-written version.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from export.validate import validate_version
from serving import contract
from serving.bucket import ModelBucket, VersionRecord
from serving.repository import versions_on_disk

logger = logging.getLogger(__name__)


class PublishError(Exception):
    """The version could not be published (it exists already, or the staged folder is invalid)."""


def next_version(base: Path) -> int:
    """One more than the highest published version (1 for an empty model folder)."""
    return max(versions_on_disk(base), default=0) + 1


def staging_dir(base: Path, version: int) -> Path:
    """A fresh staging folder inside `base` (same filesystem, so the final rename is atomic)."""
    path = base / f"_staging-{version}-{os.getpid()}"
    if path.exists():
        shutil.rmtree(path)
    return path


def publish_version(base: Path, version: int, build: Callable[[Path], None]) -> Path:
    """Build a version with `build(staging_path)`, validate it, and rename it into place.

    Raises PublishError if the version exists, InvalidVersion if the build breaks the contract.
    """
    base.mkdir(parents=True, exist_ok=True)
    final = base / str(version)
    if final.exists():
        raise PublishError(f"{final} exists; versions are immutable, publish a new number")
    staged = staging_dir(base, version)
    try:
        build(staged)
        validate_version(staged, version)
        # Both folders are in `base`: os.rename is one atomic step and fails if `final` appeared.
        os.rename(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    logger.info("published version %d at %s", version, final)
    return final


def publish_to_bucket(
    bucket: ModelBucket, version_dir: Path, version: int | None = None, model: str = contract.MODEL_NAME
) -> VersionRecord:
    """Validate a local version folder and publish it to the bucket as `version` (default: one more than
    any version there); raises InvalidVersion, VersionExists, AccessDenied or BucketError."""
    if version is None:
        version = max(bucket.versions(model), default=0) + 1
    validate_version(version_dir, version)
    return bucket.publish(model, version, version_dir)
