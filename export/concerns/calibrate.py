"""The zone part of a contract-4 version's calibration: the design chosen on the training part of
data/ages (reports/concerns_design.json) and the adult reference its scores are read against, fitted on
the version's own outputs along the service's path (decode, face stage with the physical scale, patch
slots, this model, the served combination).

The reference is the training part of data/ages and the adult faces of data/faces
(evaluate.reference_faces); the held-out part is never read here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.ages import assign_splits, read_portraits
from export.concerns.evaluate import reference_faces
from orchestrator.decode.images import decode_image
from orchestrator.errors import ShineError
from orchestrator.face.patches import PatchCutter, cut_slots
from orchestrator.face.stage import FaceGeometry
from orchestrator.scoring.reference import AdultReference
from orchestrator.scoring.zones import Design, concern_values, region_values, served_zones
from orchestrator.settings import Settings

logger = logging.getLogger(__name__)

# (face, mask, patches, patch_skin) of one face, batch dimension first -> zone outputs by measure name.
ServeZones = Callable[
    [NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]],
    dict[str, NDArray[np.float32]],
]
# A concern or region needs this many reference faces for percentiles (AdultReference.fit's floor).
MIN_REFERENCE = 20


@dataclass
class ServedReading:
    """One photo along the service's path: its scale, raw values per concern and region, reasons."""

    name: str
    px_per_mm: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    regions: dict[str, dict[str, float]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    refused: str | None = None  # the service's error code where it gives no answer


def read_served(
    path: Path, data: bytes, serve: ServeZones, design: Design, geometry: FaceGeometry, settings: Settings
) -> ServedReading:
    """`data` (the photo at `path`, as sent) through decode, the face stage, the patch slots and `serve`."""
    reading = ServedReading(path.name)
    try:
        image = decode_image(
            data, max_pixels=settings.max_image_pixels, long_side_px=settings.decode_long_side_px
        )
        found = geometry.analyse(image.rgb)
    except ShineError as exc:
        reading.refused = exc.code
        return reading
    if found.scale is not None:
        reading.px_per_mm = found.scale.px_per_mm
    slots = cut_slots(PatchCutter(), image.rgb, found.points, found.scale)
    outputs = serve(found.face[None], found.mask.labels[None], slots.rgb[None], slots.skin[None])
    zones, cut_reasons = served_zones({k: v[0] for k, v in outputs.items()}, slots.unavailable)
    reading.values, reading.reasons = concern_values(zones, cut_reasons, design)
    reading.regions = region_values(zones)
    return reading


def reference_paths(data: Path) -> list[Path]:
    """The adult reference photos: data/ages' training part and the adult faces of data/faces."""
    portraits = read_portraits(data / "ages")
    splits = assign_splits(portraits)
    train = [p.path for p in portraits if splits[p.bioguide] == "train"]
    return train + reference_faces(data / "faces", {p.bioguide for p in portraits})


def fit_zone_calibration(
    data: Path, design: Design, serve: ServeZones, geometry: FaceGeometry, settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The calibration's zone entries (scorer.Calibration's zone_design, zone_reference, zone_regions)
    and a summary for the model card."""
    values: dict[str, list[float]] = {}
    regions: dict[str, list[float]] = {}
    paths = reference_paths(data)
    for path in paths:
        reading = read_served(path, path.read_bytes(), serve, design, geometry, settings)
        for concern, value in reading.values.items():
            values.setdefault(concern, []).append(value)
        for concern, by_region in reading.regions.items():
            if concern in reading.values:
                for region, value in by_region.items():
                    regions.setdefault(f"{concern}/{region}", []).append(value)
    reference = AdultReference.fit({c: v for c, v in values.items() if len(v) >= MIN_REFERENCE})
    region_reference = AdultReference.fit({k: v for k, v in regions.items() if len(v) >= MIN_REFERENCE})
    summary = {
        "zone_reference_photos": len(paths),
        "zone_reference_counts": reference.counts,
        "zone_reference_sources": ["data/ages training part", "data/faces adults"],
        "zone_design": design.to_json(),
    }
    calibration = {
        "zone_design": design.to_json(),
        "zone_reference": {"quantiles": reference.quantiles, "counts": reference.counts},
        "zone_regions": {"quantiles": region_reference.quantiles, "counts": region_reference.counts},
    }
    logger.info("zone reference: %s", reference.counts)
    return calibration, summary
