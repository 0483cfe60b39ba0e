"""Tests for export/acne/aligned.py and the training loop of export/acne/train.py: lesion boxes carried
through a real alignment, the split summary and cache, and a few training steps on real aligned faces
whose weights the served head loads. Photos come from ../shared/data; tests skip when it is absent."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from export.acne.aligned import (
    OUTSIDE_FRAME,
    AlignedSplit,
    centre_labels,
    frame_boxes,
    load_aligned_split,
    summarise,
)
from orchestrator.decode.images import decode_image
from orchestrator.face.alignment import CHIN, FOREHEAD_TOP, LEFT_EYE_OUTER, RIGHT_EYE_OUTER, align_face
from orchestrator.face.detection import FaceDetector
from orchestrator.face.landmarks import FaceMesh
from serving import contract
from tests.conftest import data_dir

# Two valid photos of grade 2 (21 and 33 lesions, three-quarter views) and a photo of grass posing as
# a grade-1 photo with two lesions, which the face stage must refuse.
FACES = (
    "levle2_102_jpg.rf.d9f2c45f08c353330f8735b53b971bc7.jpg",
    "levle2_108_jpg.rf.5fed1464d7761052d7b78dcea151837b.jpg",
)
GRASS = "levle1_grass.png"
GRASS_XML = (
    "<annotation><object><name>pustules</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>20</xmax>"
    "<ymax>20</ymax></bndbox></object><object><name>pustules</name><bndbox><xmin>50</xmin><ymin>60</ymin>"
    "<xmax>58</xmax><ymax>70</ymax></bndbox></object></annotation>"
)


@pytest.fixture(scope="module")
def small_acne04(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ACNE04-shaped folder holding FACES and GRASS as its valid split."""
    acne04 = data_dir("acne04")
    grass = data_dir("nonfaces") / "skimage_grass.png"
    root = tmp_path_factory.mktemp("acne04")
    (root / "valid").mkdir()
    with (acne04 / "index.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["file"] in FACES]
    for name in FACES:
        for suffix in (".jpg", ".xml"):
            shutil.copy(acne04 / "valid" / (Path(name).stem + suffix), root / "valid")
    shutil.copy(grass, root / "valid" / GRASS)
    (root / "valid" / "levle1_grass.xml").write_text(GRASS_XML)
    rows.append({**rows[0], "file": GRASS, "severity_grade_0to3": "1", "n_lesion_boxes": "2"})
    with (root / "index.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def aligned(small_acne04: Path) -> AlignedSplit:
    return load_aligned_split(small_acne04, "valid", small_acne04 / "cache")


def test_a_box_around_a_landmark_lands_on_that_landmark_in_the_frame() -> None:
    path = data_dir("acne04", "valid") / FACES[0]
    rgb = decode_image(path.read_bytes(), max_pixels=64_000_000, long_side_px=2000).rgb
    detection = FaceDetector().detect(rgb)[0]
    points = FaceMesh().landmarks(rgb, detection).points
    alignment = align_face(points)
    landmarks = (FOREHEAD_TOP, CHIN, RIGHT_EYE_OUTER, LEFT_EYE_OUTER, 1)
    photo = points[list(landmarks), :2].astype(np.float64)
    boxes = np.concatenate([photo - 6.0, photo + 6.0], axis=1)
    mapped = frame_boxes(boxes, alignment)
    centres = (mapped[:, :2] + mapped[:, 2:]) / 2
    np.testing.assert_allclose(centres, alignment.to_frame(photo), atol=1e-3)
    # The alignment's own definition: forehead and chin centred vertically, the outer eye corners level.
    assert (centres[0, 1] + centres[1, 1]) / 2 == pytest.approx(contract.FACE_SIZE_PX / 2, abs=1e-3)
    assert centres[2, 1] == pytest.approx(centres[3, 1], abs=1e-3)
    # A 12 px square turns by the roll and scales with the alignment: its mapped box holds it.
    side = mapped[:, 2:] - mapped[:, :2]
    assert np.all(side >= 12 * alignment.scale - 1e-3)
    assert np.all(side <= 12 * alignment.scale * np.sqrt(2) + 1e-3)


def test_split_keeps_faces_refuses_grass_and_caches(aligned: AlignedSplit, small_acne04: Path) -> None:
    assert list(aligned.files) == list(FACES)
    assert list(aligned.refused) == [GRASS]
    assert aligned.faces.shape == (2, contract.FACE_SIZE_PX, contract.FACE_SIZE_PX, 3)
    assert aligned.labels.shape == (2, contract.FACE_SIZE_PX, contract.FACE_SIZE_PX)
    assert list(aligned.photo_counts) == [21, 33] and len(aligned.boxes) == 54
    summary = json.loads((small_acne04 / "cache" / "aligned_valid_summary.json").read_text())
    assert summary["photos"] == 3 and summary["analysed"] == 2 and summary["refused"] == 1
    assert summary["refused_by_grade"] == {"1": 1}
    assert summary["lesions"]["labelled_on_refused_photos"] == 2
    again = load_aligned_split(small_acne04, "valid", small_acne04 / "cache", geometry=_no_geometry)
    np.testing.assert_array_equal(again.faces, aligned.faces)
    np.testing.assert_array_equal(again.boxes, aligned.boxes)


def _no_geometry() -> None:
    raise AssertionError("the cached split should have been read, not rebuilt")


def test_summary_counts_lesions_outside_the_frame_and_off_the_mask(aligned: AlignedSplit) -> None:
    labels = aligned.labels[0]
    off = np.argwhere(labels == contract.NOT_SKIN)
    on = np.argwhere(labels > contract.NOT_SKIN)
    (y0, x0), (y1, x1) = off[len(off) // 2], on[len(on) // 2]
    boxes = np.array(
        [[x0, y0, x0 + 1, y0 + 1], [x1 - 3, y1 - 3, x1 + 4, y1 + 4], [-20, 100, -10, 110]], np.float32
    )
    label = centre_labels(boxes, labels)
    assert label[0] == contract.NOT_SKIN and label[1] == labels[y1, x1] and label[2] == OUTSIDE_FRAME
    split = AlignedSplit(
        **{**aligned.__dict__, "box_image": np.zeros(3, np.int64), "boxes": boxes, "box_label": label}
    )
    lesions = summarise(split, refused_lesions=0, refused_grades=[])["lesions"]
    assert isinstance(lesions, dict)
    assert lesions["outside_frame"] == 1 and lesions["in_frame_off_mask"] == 1
    assert lesions["in_frame_on_skin"] == 1
    assert [len(b) for b in split.image_boxes("in_frame")] == [2, 0]
    assert [len(b) for b in split.image_boxes("on_skin")] == [1, 0]


# Keras's h5 writer calls np.array on its variables the NumPy 1 way; not ours to fix.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_a_few_training_steps_write_weights_the_served_head_loads(
    aligned: AlignedSplit, tmp_path: Path
) -> None:
    import keras

    from export.acne.efficientnet import WeightsUnavailable, imagenet_state_dict
    from export.acne.train import parse_args, train
    from export.model import DetectorHead

    try:
        imagenet_state_dict()
    except WeightsUnavailable as exc:
        pytest.skip(str(exc))
    args = parse_args(
        ["--out", str(tmp_path), "--steps", "2", "--batch", "2", "--crop", "128", "--checks", "1"]
    )
    keras.utils.set_random_seed(args.seed)  # thread pools and op determinism are main()'s, per process
    calibration = train(args, aligned, aligned)
    assert calibration["network"] == "lite" and calibration["steps"] == 2
    assert 0.0 < float(calibration["threshold"]) < 1.0  # type: ignore[arg-type]
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [row["weights"] for row in log] == ["raw", "ema"] and log[0]["step"] == 2
    head = DetectorHead.from_dir(tmp_path)
    assert head.network == "lite"
    logits = head.build()(aligned.faces[:1].astype(np.float32))
    assert tuple(logits.shape) == (1, contract.FACE_SIZE_PX // 4, contract.FACE_SIZE_PX // 4, 1)
