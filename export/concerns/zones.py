"""One photo's concern readings: the face stage, its fixed-scale patch slots cut as the service cuts
them (orchestrator/face/patches.py) and every zone's measures by the served model's own functions
(measures.py), cached per photo and variant under build/ so that choosing how zones combine never
reruns the face stage.

A variant is the photo as it was sent ("original") or re-sent the way a messaging app sends it: resized
to 90% or 60% of its size with area averaging and re-encoded as JPEG quality 70.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from export.concerns import measures
from orchestrator.decode.images import decode_image
from orchestrator.errors import NoFaceFound
from orchestrator.face.patches import PatchCutter, cut_slots
from orchestrator.face.scale import ScaleReader
from orchestrator.face.stage import FaceGeometry
from orchestrator.scoring.zones import zone_key
from orchestrator.settings import Settings
from serving import contract

logger = logging.getLogger(__name__)

VARIANTS: dict[str, tuple[float, int] | None] = {
    "original": None,
    "resent_90": (0.9, 70),
    "resent_60": (0.6, 70),
}
# Bumped whenever a zone, a scale or the face stage changes, so cached patches are never mixed across
# versions.
PATCH_VERSION = 4
# Per patch group, bumped whenever that group's measures change: only that group is then recomputed.
MEASURE_VERSIONS: dict[str, int] = {"wrinkles": 3, "colour": 3, "dark_spots": 5, "pores": 2}


@dataclass
class Reading:
    """One photo variant: its scale and, per zone and scale, the raw measures (or why none)."""

    name: str
    variant: str
    px_per_mm: float | None = None
    scale_source: str | None = None
    face_found: bool = True
    zones: dict[str, dict[str, float]] = field(default_factory=dict)  # "zone@scale" -> measures
    unavailable: dict[str, str] = field(default_factory=dict)  # "zone@scale" -> reason

    def to_json(self) -> dict[str, object]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Reading:
        return cls(**data)  # type: ignore[arg-type]


def resend(data: bytes, factor: float, quality: int) -> bytes:
    """The photo resized by `factor` (area averaging) and re-encoded as JPEG at `quality`."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the photo could not be decoded")
    height, width = bgr.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(encoded.tobytes())


_SLOTS_SIGNATURE = [
    tf.TensorSpec([None, contract.PATCH_SIZE_PX, contract.PATCH_SIZE_PX, 3], tf.float32),
    tf.TensorSpec([None, contract.PATCH_SIZE_PX, contract.PATCH_SIZE_PX], tf.float32),
]


def _group_measures(rgb: tf.Tensor, skin: tf.Tensor, group: str) -> dict[str, tf.Tensor]:
    """The served measures of one group's slots; the wrinkle group gives every candidate response of the
    design run instead of the one chosen (and "line_pixels", the sure skin they are read on)."""
    px_per_mm = contract.patch_group(group).px_per_mm
    if group == "wrinkles":
        responses = measures.wrinkle_responses(rgb, skin, px_per_mm)
        responses["line_pixels"] = responses.pop("pixels")
        return responses
    return measures.group_measures(group, rgb, skin, px_per_mm, "")


@functools.cache
def _compiled(group: str) -> Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
    """One graph per patch group (eager ops cost ~20x more)."""
    return tf.function(lambda rgb, skin: _group_measures(rgb, skin, group), input_signature=_SLOTS_SIGNATURE)


@dataclass
class PatchSet:
    """One photo variant's face stage outcome and its contract-4 slots, as the service cuts them."""

    name: str
    variant: str
    px_per_mm: float | None
    scale_source: str | None
    face_found: bool
    rgb: NDArray[np.uint8]  # [slots, P, P, 3]
    skin: NDArray[np.uint8]  # [slots, P, P]
    unavailable: dict[str, str]  # "zone@scale" -> reason

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in self.__dict__.items() if k not in ("rgb", "skin")}
        with path.open("wb") as handle:
            np.savez_compressed(
                handle, rgb=self.rgb, skin=self.skin, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)
            )

    @classmethod
    def load(cls, path: Path) -> PatchSet:
        with np.load(path) as stored:
            meta = json.loads(bytes(stored["meta"]).decode())
            return cls(rgb=stored["rgb"], skin=stored["skin"], **meta)


def measure_patches(patches: PatchSet, group: str) -> dict[str, dict[str, float]]:
    """One group's measures of a photo variant's slots ("zone@scale" -> measures), for the slots cut."""
    indices = [i for i, (g, _) in enumerate(contract.PATCH_SLOTS) if g == group]
    scale = contract.patch_group(group).px_per_mm
    if not indices:
        return {}
    out = _compiled(group)(
        tf.constant(patches.rgb[indices].astype(np.float32)),
        tf.constant(patches.skin[indices].astype(np.float32)),
    )
    values = {key: value.numpy() for key, value in out.items()}
    readings = {}
    for row, index in enumerate(indices):
        key = zone_key(contract.PATCH_SLOTS[index][1], scale)
        if key not in patches.unavailable:
            readings[key] = {name: float(column[row]) for name, column in values.items()}
    return readings


class ZoneReader:
    """Reads every zone measure of a photo variant; the face stage's patches are cached under `cache`,
    so a changed measure is recomputed from them without running the face stage again."""

    def __init__(
        self, cache: Path, geometry: FaceGeometry | None = None, settings: Settings | None = None
    ) -> None:
        self.cache = cache
        self.geometry = geometry or FaceGeometry(scale=ScaleReader())
        self.cutter = PatchCutter()
        self.settings = settings or Settings()

    def read(self, path: Path, variant: str) -> Reading:
        """The zone measures of `path` sent as `variant` (each group's from the cache when current)."""
        folder = self.cache / f"v{PATCH_VERSION}" / "readings" / variant / path.parent.name
        patches: PatchSet | None = None
        zones: dict[str, dict[str, float]] = {}
        for group, version in MEASURE_VERSIONS.items():
            cached = folder / f"{path.name}.{group}.v{version}.json"
            if cached.is_file():
                zones.update(json.loads(cached.read_text()))
                continue
            patches = patches or self.patches(path, variant)
            measured = measure_patches(patches, group)
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(measured))
            zones.update(measured)
        meta = folder / f"{path.name}.meta.json"
        if not meta.is_file():
            patches = patches or self.patches(path, variant)
            meta.write_text(
                json.dumps(
                    {
                        "px_per_mm": patches.px_per_mm,
                        "scale_source": patches.scale_source,
                        "face_found": patches.face_found,
                        "unavailable": patches.unavailable,
                    }
                )
            )
        return Reading(name=path.name, variant=variant, zones=zones, **json.loads(meta.read_text()))

    def patches(self, path: Path, variant: str) -> PatchSet:
        """The patches of `path` sent as `variant`, from the cache when they are there."""
        cached = self.cache / f"v{PATCH_VERSION}" / variant / path.parent.name / f"{path.name}.npz"
        if cached.is_file():
            return PatchSet.load(cached)
        patches = self._cut(path, variant)
        patches.save(cached)
        return patches

    def _cut(self, path: Path, variant: str) -> PatchSet:
        data = path.read_bytes()
        change = VARIANTS[variant]
        if change is not None:
            data = resend(data, *change)
        rgb = decode_image(
            data, max_pixels=self.settings.max_image_pixels, long_side_px=self.settings.decode_long_side_px
        ).rgb
        size, count = contract.PATCH_SIZE_PX, len(contract.PATCH_SLOTS)
        empty_rgb = np.zeros((count, size, size, 3), np.uint8)
        result = PatchSet(
            path.name, variant, None, None, True, empty_rgb, np.zeros(empty_rgb.shape[:3], np.uint8), {}
        )
        try:
            geometry = self.geometry.analyse(rgb, "face")
        except NoFaceFound:
            result.face_found = False
            return result
        if geometry.scale is not None:
            result.px_per_mm = geometry.scale.px_per_mm
            result.scale_source = geometry.scale.source
        slots = cut_slots(self.cutter, rgb, geometry.points, geometry.scale)
        result.rgb, result.skin = slots.rgb, slots.skin
        result.unavailable = {
            zone_key(zone, contract.patch_group(group).px_per_mm): reason
            for (group, zone), reason in slots.unavailable.items()
        }
        return result
