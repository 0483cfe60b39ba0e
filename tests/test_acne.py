"""Tests for export/acne: VOC parsing, heatmap targets, the detector's shapes, peak decoding, matching,
metrics and grade bands. Data-dependent tests skip when ../shared/data is absent (fail under CI=true)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow as tf

from export.acne.dataset import (
    CropSampler,
    grade_from_name,
    load_split,
    parse_voc_boxes,
    render_heatmap,
    warp_boxes,
)
from export.acne.metrics import (
    apply_bands,
    bootstrap_intervals,
    choose_threshold,
    confusion,
    count_table,
    fit_bands,
    lesion_scores,
    match_image,
    match_peaks,
)
from export.acne.network import build_detector, decode_peaks, focal_loss, fold_batch_norm
from tests.conftest import DATA, data_dir, missing

ACNE04 = DATA / "acne04"


@pytest.fixture
def acne04() -> Path:
    if not (data_dir("acne04") / "index.csv").is_file():
        missing(f"ACNE04 index not found at {ACNE04 / 'index.csv'}")
    return ACNE04


needs_data = pytest.mark.usefixtures("acne04")


def _index_rows(split: str) -> list[dict[str, str]]:
    with (ACNE04 / "index.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["split"] == split]


def _photo(split: str, position: int) -> tuple[np.ndarray, np.ndarray]:
    row = _index_rows(split)[position]
    bgr = cv2.imread(str(ACNE04 / split / row["file"]))
    return bgr[:, :, ::-1].copy(), parse_voc_boxes(ACNE04 / split / (Path(row["file"]).stem + ".xml"))


@pytest.mark.parametrize(
    ("name", "grade"),
    [
        ("levle0_0_jpg.rf.2809c8a0d7e1779910e9975cd0f98b71.jpg", 0),
        ("levle3_12.jpg", 3),
        ("a/levle2_7_jpg.rf.x.jpg", 2),
    ],
)
def test_grade_comes_from_the_file_name_prefix(name: str, grade: int) -> None:
    assert grade_from_name(name) == grade


def test_grade_without_prefix_is_rejected() -> None:
    with pytest.raises(ValueError, match="levleG_"):
        grade_from_name("face.jpg")


def test_voc_boxes_are_read_as_xmin_ymin_xmax_ymax(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><object><name>papules</name><bndbox><xmin>10</xmin><xmax>30</xmax><ymin>5</ymin>"
        "<ymax>9</ymax></bndbox></object><object><name>pustules</name><bndbox><xmin>1</xmin><xmax>2</xmax>"
        "<ymin>3</ymin><ymax>4</ymax></bndbox></object></annotation>"
    )
    np.testing.assert_array_equal(parse_voc_boxes(xml), [[10, 5, 30, 9], [1, 3, 2, 4]])


@needs_data
def test_valid_split_parses_with_index_counts_and_grades() -> None:
    samples = load_split(ACNE04, "valid")
    rows = _index_rows("valid")
    assert [s.file for s in samples] == [r["file"] for r in rows]
    assert [s.count for s in samples] == [int(r["n_lesion_boxes"]) for r in rows]
    assert [s.grade for s in samples] == [int(r["severity_grade_0to3"]) for r in rows]
    assert all(s.boxes.dtype == np.float32 and s.boxes.shape[1] == 4 for s in samples)


def test_heatmap_has_one_exact_peak_per_centre_and_drops_outside_boxes() -> None:
    boxes = np.array([[8, 8, 24, 24], [60, 20, 76, 44], [200, 200, 220, 220]], dtype=np.float32)
    heatmap = render_heatmap(boxes, 96)
    assert heatmap.shape == (24, 24)
    assert heatmap.max() == 1.0 and heatmap.min() >= 0.0
    assert sorted(zip(*np.nonzero(heatmap == 1.0), strict=True)) == [(4, 4), (8, 17)]
    assert heatmap[4, 5] < 1.0 and heatmap[4, 5] > heatmap[4, 7]
    assert render_heatmap(np.zeros((0, 4), np.float32), 96).sum() == 0.0


def _frame(position: int) -> tuple[np.ndarray, np.ndarray]:
    """A valid photo shrunk to the 384 px frame (0.6 x, about the aligned scale), boxes likewise."""
    image, boxes = _photo("valid", position)
    return cv2.resize(image, (384, 384), interpolation=cv2.INTER_AREA), boxes * 0.6


@needs_data
def test_crop_sampler_without_jitter_returns_the_frame_or_its_mirror_with_matching_targets() -> None:
    face, boxes = _frame(150)
    sampler = CropSampler(
        face[None], [boxes], crop_px=384, scale_jitter=0.0, max_rotation_deg=0.0, edge_px=0.0, blur_share=0.0
    )
    mirrored = np.stack([384 - boxes[:, 2], boxes[:, 1], 384 - boxes[:, 0], boxes[:, 3]], axis=1)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(8):
        crop, heatmap = sampler.sample(rng)
        flipped = bool(np.array_equal(crop, face[:, ::-1]))
        assert flipped or np.array_equal(crop, face)
        expected = render_heatmap(mirrored if flipped else boxes, 384)
        np.testing.assert_allclose(heatmap[:, :, 0], expected, atol=1e-5)
        seen.add(flipped)
    assert seen == {False, True}


@needs_data
def test_crop_sampler_is_deterministic_and_keeps_lesions_on_peaks() -> None:
    face, boxes = _frame(150)
    sampler = CropSampler(face[None], [boxes], crop_px=192, scale_jitter=0.1, max_rotation_deg=8.0)
    first = sampler.sample(np.random.default_rng(3))
    again = sampler.sample(np.random.default_rng(3))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    rng = np.random.default_rng(1)
    peaks = 0
    for _ in range(20):
        crop, heatmap = sampler.sample(rng)
        assert crop.shape == (192, 192, 3) and crop.dtype == np.uint8
        assert heatmap.shape == (48, 48, 1)
        peaks += int(np.sum(heatmap == 1.0))
    assert 0 < peaks <= 20 * len(boxes)


def test_warped_boxes_are_the_bounds_of_their_mapped_corners() -> None:
    boxes = np.array([[10, 20, 30, 60]], np.float32)
    turn = np.array([[0.0, -1.0, 100.0], [1.0, 0.0, 0.0]])  # 90 degrees, then shifted right
    np.testing.assert_allclose(warp_boxes(boxes, turn), [[40, 10, 80, 30]])


def test_learning_rate_warms_up_alike_for_any_step_count_then_decays() -> None:
    from export.acne.train import learning_rate

    warm = [learning_rate(1.0, s, None, 10) for s in range(10)]
    assert warm == [learning_rate(1.0, s, 500, 10) for s in range(10)]
    assert warm[0] == pytest.approx(0.1) and warm[-1] == pytest.approx(1.0)
    tail = [learning_rate(1.0, s, 500, 10) for s in (10, 250, 500)]
    assert tail[0] == pytest.approx(1.0) and tail[0] > tail[1] > tail[2] == pytest.approx(0.01)


@needs_data
def test_detector_maps_crops_and_whole_photos_to_stride_four_logits() -> None:
    image, _ = _photo("valid", 0)
    model = build_detector()
    crop = image[200:360, 200:360][None].astype(np.float32)
    assert model(crop).shape == (1, 40, 40, 1)
    whole = cv2.resize(image, (192, 128))[None].astype(np.float32)
    assert model(whole).shape == (1, 32, 48, 1)
    assert build_detector(16, context=True)(crop).shape == (1, 40, 40, 1)


@needs_data
@pytest.mark.parametrize("context", [False, True])
def test_folding_batch_norm_keeps_the_output(context: bool) -> None:
    image, _ = _photo("valid", 1)
    trained = build_detector(16, batch_norm=True, context=context)
    rng = np.random.default_rng(0)
    for layer in trained.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.uniform(-0.2, 0.2, n))
            layer.moving_mean.assign(rng.uniform(-0.1, 0.1, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
    crop = image[100:260, 100:260][None].astype(np.float32)
    expected = trained(crop, training=False).numpy()
    assert expected.std() > 1e-3
    np.testing.assert_allclose(fold_batch_norm(trained, 16, context)(crop).numpy(), expected, atol=1e-3)


def test_focal_loss_prefers_the_right_heatmap() -> None:
    target = np.zeros((1, 8, 8, 1), np.float32)
    target[0, 3, 4, 0] = 1.0
    right = np.where(target == 1.0, 4.0, -4.0).astype(np.float32)
    wrong = -right
    assert float(focal_loss(target, right)) < 0.05 < float(focal_loss(target, wrong))


def test_decode_peaks_returns_sorted_relative_centres_and_zero_padding() -> None:
    heatmap = np.zeros((2, 4, 8, 1), np.float32)
    heatmap[0, 1, 2, 0], heatmap[0, 3, 7, 0], heatmap[0, 1, 3, 0] = 0.6, 0.9, 0.5  # (1,3) is not a maximum
    heatmap[1, 0, 0, 0] = 0.3
    peaks = decode_peaks(tf.constant(heatmap), 3).numpy()
    assert peaks.shape == (2, 3, 3)
    np.testing.assert_allclose(peaks[0, 0], [3.5 / 4, 7.5 / 8, 0.9], rtol=1e-6)
    np.testing.assert_allclose(peaks[0, 1], [1.5 / 4, 2.5 / 8, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(peaks[0, 2], [0, 0, 0])
    np.testing.assert_allclose(peaks[1, 0], [0.5 / 4, 0.5 / 8, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(peaks[1, 1:], 0)


def test_decode_peaks_rows_are_independent_and_graph_exportable() -> None:
    rng = np.random.default_rng(0)
    heatmaps = rng.uniform(0, 1, (3, 10, 10, 1)).astype(np.float32)
    decode = tf.function(
        lambda h: decode_peaks(h, 150), input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)]
    )
    together = decode(tf.constant(heatmaps)).numpy()
    assert together.shape == (3, 150, 3)
    for i in range(3):
        np.testing.assert_array_equal(decode(tf.constant(heatmaps[i : i + 1])).numpy()[0], together[i])
    assert np.all(np.diff(together[:, :, 2], axis=1) <= 0)


def test_matching_is_greedy_one_to_one_point_in_box() -> None:
    boxes = np.array([[0, 0, 10, 10], [8, 0, 20, 10]], dtype=np.float32)
    points = np.array([[5, 9], [5, 9], [5, 9], [50, 50]], dtype=np.float32)  # (y, x)
    np.testing.assert_array_equal(match_peaks(points, boxes), [True, True, False, False])
    # A point inside two free boxes takes the one whose centre is nearest (x=9: box 0's centre is 5).
    assert match_peaks(points[:1], boxes[1:]).tolist() == [True]


def test_match_image_scales_relative_peaks_and_sorts_by_score() -> None:
    boxes = np.array([[100, 100, 120, 120]], dtype=np.float32)
    peaks = np.array([[0.1, 0.1, 0.4], [110 / 640, 110 / 640, 0.8], [0, 0, 0]], dtype=np.float32)
    matches = match_image(peaks, boxes, 640)
    assert matches.scores.tolist() == pytest.approx([0.8, 0.4])
    assert matches.at(0.5) == (1, 1, 1)
    assert matches.at(0.3) == (1, 2, 1)


def test_scores_threshold_and_bootstrap() -> None:
    boxes = np.array([[0, 0, 64, 64], [100, 100, 164, 164]], dtype=np.float32)
    good = np.array([[0.05, 0.05, 0.9], [0.2, 0.2, 0.7], [0.9, 0.9, 0.3]], dtype=np.float32)
    matches = [match_image(good, boxes, 640) for _ in range(10)]
    assert choose_threshold(matches, np.array([0.2, 0.5, 0.8])) == 0.5
    table = count_table(matches, 0.5)
    assert lesion_scores(table) == pytest.approx((1.0, 1.0, 1.0))
    grades = np.array([0, 1] * 5)
    intervals = bootstrap_intervals(table, grades, grades, seed=0, rounds=50)
    assert intervals["f1"] == pytest.approx((1.0, 1.0)) and intervals["mae"] == pytest.approx((0.0, 0.0))
    assert intervals == bootstrap_intervals(table, grades, grades, seed=0, rounds=50)


def test_bands_recover_separable_grades_and_centre_the_gap() -> None:
    counts = np.array([0, 2, 5, 9, 12, 20, 30, 40, 60, 70])
    grades = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    edges = fit_bands(counts, grades)
    assert edges[0] == 6.5 and edges[1] == 24.5 and edges[2] == 49.5
    np.testing.assert_array_equal(apply_bands(counts, edges), grades)
    assert confusion(grades, apply_bands(counts, edges)).trace() == len(grades)


def test_bands_stay_ordered_when_counts_overlap() -> None:
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 4, 300)
    counts = np.maximum(0, (grades * 15 + rng.normal(0, 8, 300)).round()).astype(np.int64)
    edges = fit_bands(counts, grades)
    assert edges[0] <= edges[1] <= edges[2]
    assert np.mean(apply_bands(counts, edges) == grades) > 0.6


def test_checkpoint_choice_takes_the_lowest_mae_among_f1s_within_tolerance() -> None:
    from export.acne.train import choose_checkpoint

    scored = [(0.699, 3.46, 1386, "ema"), (0.696, 3.14, 1584, "raw"), (0.690, 2.9, 400, "raw")]
    assert choose_checkpoint(scored)[2:] == (1584, "raw")
    assert choose_checkpoint(scored[:1])[2:] == (1386, "ema")
    with pytest.raises(ValueError, match="no valid check"):
        choose_checkpoint([])
