"""One photo's zone readings, through the real face stage and the service's patch slots, cached per
variant."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from export.concerns.zones import VARIANTS, PatchSet, ZoneReader, resend
from orchestrator.face.patches import NEEDED_SCALES, WRINKLE_ZONES
from orchestrator.scoring.zones import zone_key
from serving import contract

PORTRAIT = "congress_C000984.jpg"


def test_resend_resizes_and_reencodes(faces_dir: Path) -> None:
    data = (faces_dir / PORTRAIT).read_bytes()
    smaller = resend(data, 0.6, 70)
    image = cv2.imdecode(np.frombuffer(smaller, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and original is not None
    assert image.shape[:2] == (round(original.shape[0] * 0.6), round(original.shape[1] * 0.6))
    assert smaller[:2] == b"\xff\xd8"


def test_a_portrait_reads_every_scored_zone_and_is_cached(faces_dir: Path, tmp_path: Path) -> None:
    reader = ZoneReader(tmp_path)
    first = reader.read(faces_dir / PORTRAIT, "original")
    assert first.face_found and first.scale_source == "iris"
    for zone in WRINKLE_ZONES:
        assert zone_key(zone, NEEDED_SCALES["wrinkles"].px_per_mm) in first.zones, zone
    # Below the portrait's own scale: pores are refused, never enlarged.
    assert first.unavailable[zone_key("right_cheek", NEEDED_SCALES["pores"].px_per_mm)] == "photo_too_small"
    stored = list(tmp_path.rglob("*.npz"))
    assert len(stored) == 1
    slots = PatchSet.load(stored[0])
    assert slots.rgb.shape[:2] == (len(contract.PATCH_SLOTS), contract.PATCH_SIZE_PX)
    cut = [
        i
        for i, (g, z) in enumerate(contract.PATCH_SLOTS)
        if zone_key(z, contract.patch_group(g).px_per_mm) in first.zones
    ]
    assert len(cut) + len(first.unavailable) == len(contract.PATCH_SLOTS)
    assert all(slots.skin[i].any() for i in cut)
    again = ZoneReader(tmp_path).read(faces_dir / PORTRAIT, "original")
    assert again.zones == first.zones


def test_a_60_percent_resend_is_too_small_for_wrinkles(faces_dir: Path, tmp_path: Path) -> None:
    assert VARIANTS["resent_60"] == (0.6, 70)
    reading = ZoneReader(tmp_path).read(faces_dir / "congress_H001042.jpg", "resent_60")  # 1.37 px/mm sent
    assert reading.px_per_mm is not None and reading.px_per_mm < NEEDED_SCALES["wrinkles"].px_per_mm
    assert reading.unavailable[zone_key("forehead", NEEDED_SCALES["wrinkles"].px_per_mm)] == "photo_too_small"
    assert zone_key("nose", NEEDED_SCALES["redness"].px_per_mm) in reading.zones
