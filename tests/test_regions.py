"""Region crops: the contract's order and size, inside the image, clipped where the face is cut off."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.decode.images import decode_image
from orchestrator.face.detection import Box, FaceDetector
from orchestrator.face.regions import REGION_LAYOUT, crop_regions, region_box, to_image_point
from serving import contract


def test_layout_follows_the_contract() -> None:
    assert tuple(REGION_LAYOUT) == contract.REGION_NAMES


def test_crops_of_a_real_face(faces_dir: Path) -> None:
    rgb = decode_image(
        (faces_dir / "congress_C000984.jpg").read_bytes(), max_pixels=10**8, long_side_px=2000
    ).rgb
    (face,) = FaceDetector().detect(rgb)
    crops = crop_regions(rgb, face.box)
    size = contract.REGION_SIZE_PX
    assert crops.batch.shape == (len(contract.REGION_NAMES), size, size, 3)
    assert crops.batch.dtype == np.uint8
    assert all(c == 1.0 for c in crops.coverage)
    boxes = dict(zip(contract.REGION_NAMES, crops.boxes, strict=True))
    # The subject's left cheek is on the image's right; the forehead is above the nose, the chin below.
    assert boxes["left_cheek"].x > boxes["right_cheek"].x
    assert boxes["forehead"].y < boxes["nose"].y < boxes["chin"].y
    assert boxes["left_under_eye"].y < boxes["left_cheek"].y
    # Every crop holds picture, not padding.
    assert all(crop.std() > 2 for crop in crops.batch)


def test_face_cut_by_the_edge_is_clipped_and_reported() -> None:
    rgb = np.full((300, 300, 3), 128, np.uint8)
    face = Box(100, 120, 200, 200)  # the chin lies below the image
    crops = crop_regions(rgb, face)
    coverage = dict(zip(contract.REGION_NAMES, crops.coverage, strict=True))
    assert coverage["forehead"] == 1.0
    assert coverage["chin"] < 0.6
    chin = crops.boxes[contract.REGION_NAMES.index("chin")]
    assert chin.y + chin.height <= 300


def test_region_outside_the_image_is_black() -> None:
    rgb = np.full((100, 100, 3), 200, np.uint8)
    crops = crop_regions(rgb, Box(0, -400, 100, 100))
    assert all(c == 0.0 for c in crops.coverage)
    assert crops.batch.max() == 0


def test_points_map_back_to_the_image() -> None:
    box = region_box(Box(0, 0, 200, 200), "nose")
    x, y = to_image_point(box, 0.5, 0.5)
    assert abs(x - 100) <= 1
    assert box.y <= y <= box.y + box.height
