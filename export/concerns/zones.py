"""One photo's concern readings: the face stage, its fixed-scale patches (orchestrator/face/patches.py)
and every zone's measures (measures.py), cached per photo and variant under build/ so that choosing
how zones combine never reruns the face stage.

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
from orchestrator.face.patches import NEEDED_SCALES, WRINKLE_ZONES, PatchCutter, PatchUnavailable
from orchestrator.face.scale import ScaleReader
from orchestrator.face.stage import FaceGeometry
from orchestrator.settings import Settings

logger = logging.getLogger(__name__)

VARIANTS: dict[str, tuple[float, int] | None] = {
    "original": None,
    "resent_90": (0.9, 70),
    "resent_60": (0.6, 70),
}
# Bumped whenever a zone, a scale or the face stage changes, so cached patches are never mixed across
# versions.
PATCH_VERSION = 2
# Per measure group, bumped whenever that group's measures change: only that group is then recomputed.
MEASURE_VERSIONS: dict[str, int] = {"wrinkles": 2, "colour": 1, "dark_spots": 3, "texture": 1, "pores": 1}


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


def zone_key(zone: str, px_per_mm: float) -> str:
    return f"{zone}@{px_per_mm:g}"


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


_PATCH_SIGNATURE = [tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([None, None], tf.float32)]


def _group_measures(rgb: tf.Tensor, skin: tf.Tensor, group: str, px_per_mm: float) -> dict[str, tf.Tensor]:
    if group == "wrinkles":
        return measures.wrinkle_responses(rgb, skin, px_per_mm)
    if group == "colour":
        lab = measures.mean_lab(rgb, skin)
        shine, total = measures.shine_pixels(rgb, skin)
        median_l = measures.median_lightness(rgb, skin)
        return {"l": lab[0], "a": lab[1], "b": lab[2], "median_l": median_l, "shine": shine, "skin": total}
    if group == "dark_spots":
        spots, count = measures.dark_spot_pixels(rgb, skin, px_per_mm)
        return {"spots": spots, "spot_pixels": count}
    if group == "texture":
        return {"roughness": measures.texture_roughness(rgb, skin, px_per_mm)}
    if group == "pores":
        return {"pores": measures.pore_share(rgb, skin, px_per_mm)}
    raise ValueError(f"unknown measure group {group!r}")


@functools.cache
def _compiled(group: str, px_per_mm: float) -> Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
    """One graph per measure group and scale, for patches of any size (eager ops cost ~20x more)."""
    return tf.function(
        lambda rgb, skin: _group_measures(rgb, skin, group, px_per_mm), input_signature=_PATCH_SIGNATURE
    )


def _zone_measures(
    rgb: NDArray[np.uint8], skin: NDArray[np.bool_], group: str, px_per_mm: float
) -> dict[str, float]:
    out = _compiled(group, px_per_mm)(
        tf.constant(rgb.astype(np.float32)), tf.constant(skin.astype(np.float32))
    )
    return {key: float(value) for key, value in out.items()}


# Which zone measures are read at which scale: the colour concerns share one set of patches.
def patch_plan() -> list[tuple[str, float, tuple[str, ...]]]:
    """(measure group, px/mm, zones) for every set of patches a photo is cut into."""
    colour_zones = sorted(
        {z for c in ("redness", "dark_circles", "oiliness") for z in NEEDED_SCALES[c].zones}
    )
    return [
        ("wrinkles", NEEDED_SCALES["wrinkles"].px_per_mm, WRINKLE_ZONES),
        ("colour", NEEDED_SCALES["redness"].px_per_mm, tuple(colour_zones)),
        ("dark_spots", NEEDED_SCALES["dark_spots"].px_per_mm, NEEDED_SCALES["dark_spots"].zones),
        ("texture", NEEDED_SCALES["texture"].px_per_mm, NEEDED_SCALES["texture"].zones),
        ("pores", NEEDED_SCALES["pores"].px_per_mm, NEEDED_SCALES["pores"].zones),
    ]


@dataclass
class PatchSet:
    """One photo variant's face stage outcome and every patch cut from it ("zone@scale" keys)."""

    name: str
    variant: str
    px_per_mm: float | None
    scale_source: str | None
    face_found: bool
    patches: dict[str, tuple[NDArray[np.uint8], NDArray[np.bool_]]]
    unavailable: dict[str, str]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, NDArray[np.generic]] = {}
        for key, (rgb, skin) in self.patches.items():
            arrays[f"{key}|rgb"], arrays[f"{key}|skin"] = rgb, skin
        meta = {k: v for k, v in self.__dict__.items() if k != "patches"}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> PatchSet:
        with np.load(path) as stored:
            meta = json.loads(bytes(stored["meta"]).decode())
            patches = {}
            for name in stored.files:
                if name.endswith("|rgb"):
                    key = name[: -len("|rgb")]
                    patches[key] = (stored[name], stored[f"{key}|skin"])
        return cls(patches=patches, **meta)


def measure_patches(patches: PatchSet, group: str) -> dict[str, dict[str, float]]:
    """One measure group's readings of a photo variant's patches ("zone@scale" -> measures)."""
    out = {}
    for name, scale, zones in patch_plan():
        if name != group:
            continue
        for zone in zones:
            key = zone_key(zone, scale)
            if key in patches.patches:
                rgb, skin = patches.patches[key]
                out[key] = _zone_measures(rgb, skin, group, scale)
    return out


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
        result = PatchSet(path.name, variant, None, None, True, {}, {})
        try:
            geometry = self.geometry.analyse(rgb, "face")
        except NoFaceFound:
            result.face_found = False
            return result
        if geometry.scale is not None:
            result.px_per_mm = geometry.scale.px_per_mm
            result.scale_source = geometry.scale.source
        for _, px_per_mm, zones in patch_plan():
            for zone in zones:
                key = zone_key(zone, px_per_mm)
                try:
                    patch = self.cutter.cut(rgb, geometry.points, geometry.scale, zone, px_per_mm)
                except PatchUnavailable as exc:
                    result.unavailable[key] = exc.reason
                    continue
                result.patches[key] = (patch.rgb, patch.skin)
        return result
