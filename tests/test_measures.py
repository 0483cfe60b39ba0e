"""Tests for export/measures (with export/colour, export/texture, export/filters): the fixed-filter skin
signals, checked by planting changes in real portraits and re-cropping them.

Every metamorphic test detects the face once on the untouched photo, plants a change in the PHOTO (not
in the crop), cuts both photos with that same face box, and compares the signals region by region.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from PIL import Image

from export.colour import ita_degrees, masked_median, skin_colour, srgb_to_lab
from export.measures import (
    RednessPeaks,
    SkinSignals,
    compute_signals,
    measure_regions,
    redness_peaks,
)
from orchestrator.face.detection import Box, FaceDetector
from orchestrator.face.regions import crop_regions, region_box
from serving import contract

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason=f"portraits not found at {FACES}")

REGION = {name: index for index, name in enumerate(contract.REGION_NAMES)}
SIGNAL = {name: index for index, name in enumerate(contract.SIGNAL_NAMES)}
Image8 = NDArray[np.uint8]
Measure = Callable[[Image8], tuple[NDArray[np.float32], NDArray[np.float32]]]

# A spread of skin tones as the photos render them (SOURCES.md): very light, light, medium,
# medium-dark, dark, and the darkest rendering in the set.
TONE_SPREAD = ("L000174", "B001284", "G000571", "E000288", "C000984", "M001137")
# Foreheads that show skin: five congress portraits put hair or a hat in the forehead crop.
SKIN_FOREHEADS = ("L000174", "G000571", "E000288", "C000984", "M001137")
# Skin tone of each congress portrait as SOURCES.md describes it (5 very light ... 1 dark); portraits
# described only by ancestry are left out.
DESCRIBED_TONE = {
    "L000174": 5, "B001284": 4, "C001091": 3.5, "G000553": 3, "G000571": 3, "V000081": 3,
    "B001270": 2, "E000288": 2, "C000984": 1, "J000126": 1, "L000287": 1, "M001137": 1,
    "M001160": 1, "S001184": 1, "S001185": 1, "W000187": 1, "W000808": 1,
}  # fmt: skip


@pytest.fixture(scope="module")
def measure() -> Measure:
    """The served pair of outputs as one traced graph (TensorFlow loads once per module)."""
    spec = tf.TensorSpec([None, contract.REGION_SIZE_PX, contract.REGION_SIZE_PX, 3], tf.uint8)
    graph = tf.function(
        lambda regions: measure_regions(regions, contract.MAX_LESIONS), input_signature=[spec]
    )

    def run(batch: Image8) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        signals, peaks = graph(tf.constant(batch))
        return signals.numpy(), peaks.numpy()

    return run


@functools.cache
def _detector() -> FaceDetector:
    return FaceDetector()


@functools.cache
def portrait(bioguide: str) -> tuple[Image8, Box]:
    """A congress portrait (RGB) and its largest detected face box."""
    rgb = np.asarray(Image.open(FACES / f"congress_{bioguide}.jpg").convert("RGB"))
    faces = _detector().detect(rgb)
    assert faces, f"no face found in congress_{bioguide}.jpg"
    return rgb, faces[0].box


def crops(rgb: Image8, face: Box) -> Image8:
    return crop_regions(rgb, face).batch


def _blend(rgb: Image8, alpha: NDArray[np.float32], target: NDArray[np.float32]) -> Image8:
    mixed = rgb.astype(np.float32) * (1.0 - alpha[..., None]) + target * alpha[..., None]
    return np.clip(mixed, 0, 255).round().astype(np.uint8)


def _soft_discs(
    shape: tuple[int, ...], centres: list[tuple[float, float]], radius: float, strength: float
) -> NDArray[np.float32]:
    """Opacity of soft-edged discs (Gaussian profile, sigma = radius / 1.6) at (x, y) centres."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    alpha = np.zeros(shape[:2], np.float32)
    for cx, cy in centres:
        distance_sq = (xx - cx) ** 2 + (yy - cy) ** 2
        alpha = np.maximum(alpha, strength * np.exp(-0.5 * distance_sq / (radius / 1.6) ** 2))
    return alpha


def _places(box: Box, relative: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    return [(box.x + fx * box.width, box.y + fy * box.height) for fx, fy in relative]


PAPULE_PLACES = ((0.3, 0.35), (0.65, 0.3), (0.45, 0.6), (0.72, 0.7), (0.3, 0.78))
SPOT_PLACES = ((0.35, 0.3), (0.7, 0.4), (0.3, 0.7), (0.62, 0.75))


def plant_papules(rgb: Image8, face: Box, region: str) -> Image8:
    """Five inflamed papules: discs ~5 px across (2-3 mm on these faces), the same skin with green
    and blue cut by a third, which raises a* by 15-25 at the centre."""
    box = region_box(face, region)
    alpha = _soft_discs(rgb.shape, _places(box, PAPULE_PLACES), 0.04 * box.width, 0.85)
    return _blend(rgb, alpha, rgb.astype(np.float32) * np.array([1.0, 0.62, 0.66], np.float32))


def plant_spots(rgb: Image8, face: Box, region: str) -> Image8:
    """Four brown spots (lentigo-like): the same skin darker and browner, ~6 px across."""
    box = region_box(face, region)
    alpha = _soft_discs(rgb.shape, _places(box, SPOT_PLACES), 0.05 * box.width, 0.9)
    return _blend(rgb, alpha, rgb.astype(np.float32) * np.array([0.62, 0.55, 0.5], np.float32))


def plant_shine(rgb: Image8, face: Box, region: str) -> Image8:
    """One soft near-white, low-saturation highlight in the middle of the region."""
    box = region_box(face, region)
    centre = [(box.x + box.width / 2, box.y + box.height / 2)]
    alpha = _soft_discs(rgb.shape, centre, 0.08 * box.width, 0.9)
    return _blend(rgb, alpha, np.array([250.0, 248.0, 244.0], np.float32))


def plant_lines(rgb: Image8, face: Box, region: str) -> Image8:
    """Three thin, slightly curved dark lines across the region (antialiased, softened)."""
    box = region_box(face, region)
    ink = np.zeros(rgb.shape[:2], np.float32)
    xs = np.linspace(box.x + 0.1 * box.width, box.x + 0.9 * box.width, 30)
    for row, bend in ((0.25, 0.06), (0.5, -0.05), (0.75, 0.04)):
        ys = box.y + row * box.height + bend * box.height * ((xs - xs.mean()) / (np.ptp(xs) / 2)) ** 2
        points = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.polylines(ink, [points], isClosed=False, color=1.0, thickness=1, lineType=cv2.LINE_AA)
    soft = np.asarray(cv2.GaussianBlur(ink, (0, 0), 0.7), np.float32)
    return _blend(rgb, 0.6 * soft / soft.max(), rgb.astype(np.float32) * 0.55)


def darken_under_eyes(rgb: Image8, face: Box) -> Image8:
    """A soft dark ellipse under each eye, darkening its centre by 35%."""
    yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]].astype(np.float32)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    for region in ("left_under_eye", "right_under_eye"):
        box = region_box(face, region)
        cx, cy = box.x + box.width / 2, box.y + box.height / 2
        spread = ((xx - cx) / (0.45 * box.width)) ** 2 + ((yy - cy) / (0.9 * box.height)) ** 2
        alpha = np.maximum(alpha, np.exp(-0.5 * spread))
    return np.clip(rgb * (1.0 - 0.35 * alpha[..., None]), 0, 255).round().astype(np.uint8)


def apply_gamma(rgb: Image8, gamma: float) -> Image8:
    return np.clip(255.0 * (rgb / 255.0) ** gamma, 0, 255).round().astype(np.uint8)


def _column(signals: NDArray[np.float32], name: str) -> NDArray[np.float32]:
    return signals[:, SIGNAL[name]]


# --- the contract ------------------------------------------------------------------------------------


def test_outputs_follow_the_contract(measure: Measure) -> None:
    rgb, face = portrait("C000984")
    signals, peaks = measure(crops(rgb, face))
    assert signals.shape == (len(contract.REGION_NAMES), len(contract.SIGNAL_NAMES))
    assert peaks.shape == (len(contract.REGION_NAMES), contract.MAX_LESIONS, 3)
    assert signals.dtype == np.float32 and peaks.dtype == np.float32
    assert np.isfinite(signals).all() and np.isfinite(peaks).all()
    assert ((peaks >= 0.0) & (peaks <= 1.0)).all()
    scores = peaks[..., 2]
    assert (np.diff(scores, axis=1) <= 0).all(), "peaks are sorted by score"
    assert (peaks[scores == 0] == 0).all(), "rows past the last candidate are zeros"
    shares = signals[:, [SIGNAL["pigment_spots"], SIGNAL["specular"], SIGNAL["skin_fraction"]]]
    assert ((shares >= 0) & (shares <= 1)).all()


def test_public_functions_match_the_shared_pass(measure: Measure) -> None:
    batch = crops(*portrait("G000571"))
    signals, peaks = measure(batch)
    # Two graphs of the same ops: float rounding moves a histogram median by up to ~5e-4 a* units.
    np.testing.assert_allclose(compute_signals(tf.constant(batch)).numpy(), signals, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        redness_peaks(tf.constant(batch), contract.MAX_LESIONS).numpy(), peaks, atol=1e-5
    )
    fewer = redness_peaks(tf.constant(batch), 3).numpy()
    np.testing.assert_allclose(fewer, peaks[:, :3], atol=1e-5)


class _Served(tf.Module):
    """The serving signature the export writes: uint8 regions in, both measured outputs out."""

    @tf.function(input_signature=[tf.TensorSpec(contract.INPUT.shape, tf.uint8, name=contract.INPUT.name)])
    def serve(self, regions: tf.Tensor) -> dict[str, tf.Tensor]:
        signals, peaks = measure_regions(regions, contract.MAX_LESIONS)
        return {"signals": signals, "acne_peaks": peaks}


def test_traces_and_serves_from_a_saved_model(tmp_path: Path, measure: Measure) -> None:
    batch = crops(*portrait("L000174"))
    signals, peaks = measure(batch)
    module = _Served()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={contract.SIGNATURE_NAME: module.serve})
    served = tf.saved_model.load(str(tmp_path / "1")).signatures[contract.SIGNATURE_NAME]
    outputs = served(**{contract.INPUT.name: tf.constant(batch)})
    np.testing.assert_allclose(outputs["signals"].numpy(), signals, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs["acne_peaks"].numpy(), peaks, atol=1e-5)


def test_keras_layers_give_the_same_outputs(measure: Measure) -> None:
    batch = crops(*portrait("B001287"))
    signals, peaks = measure(batch)
    regions = keras.Input((contract.REGION_SIZE_PX, contract.REGION_SIZE_PX, 3), dtype="uint8")
    model = keras.Model(regions, [SkinSignals()(regions), RednessPeaks()(regions)])
    layer_signals, layer_peaks = model(batch)
    np.testing.assert_allclose(np.asarray(layer_signals), signals, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer_peaks), peaks, atol=1e-5)
    assert RednessPeaks.from_config(RednessPeaks(max_peaks=7).get_config()).max_peaks == 7


def test_rejects_other_dtypes_and_sizes() -> None:
    batch = crops(*portrait("L000174"))
    with pytest.raises(TypeError):
        compute_signals(tf.constant(batch, tf.float32))
    with pytest.raises(ValueError):
        compute_signals(tf.constant(batch[:, :128, :128]))


def test_crop_outside_the_photo_reports_zeros(measure: Measure) -> None:
    rgb, face = portrait("S001184")
    # Cut the photo above the chin: crop_regions fills the chin crop with black, as for any region
    # that falls outside a photo.
    cut = np.ascontiguousarray(rgb[: face.y + int(0.9 * face.height)])
    regions = crop_regions(cut, face)
    assert regions.coverage[REGION["chin"]] == 0.0
    signals, peaks = measure(regions.batch)
    assert (signals[REGION["chin"]] == 0.0).all()
    assert (peaks[REGION["chin"]] == 0.0).all()
    assert (signals[REGION["forehead"], SIGNAL["skin_fraction"]]) > 0.5


def test_backdrop_is_not_skin(measure: Measure) -> None:
    rgb, face = portrait("B001270")
    backdrop = cv2.resize(rgb[: face.y // 2, : face.x // 2], (contract.REGION_SIZE_PX,) * 2)
    signals, _ = measure(np.stack([backdrop, crops(rgb, face)[REGION["left_cheek"]]]))
    assert _column(signals, "skin_fraction")[0] < 0.02
    assert _column(signals, "skin_fraction")[1] > 0.8


# --- formulas -----------------------------------------------------------------------------------------


def test_cielab_matches_reference_values() -> None:
    # sRGB D65 reference values (IEC 61966-2-1 + CIE 15:2004), as any CIELAB calculator gives them.
    srgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [119, 119, 119]])
    expected = np.array(
        [[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18],
         [32.30, 79.19, -107.86], [50.03, 0.0, 0.0]]
    )  # fmt: skip
    lab = srgb_to_lab(tf.constant(srgb.T, tf.float32)).numpy().T
    np.testing.assert_allclose(lab, expected, atol=0.05)


def test_ita_follows_chardon() -> None:
    median_lab = np.array([[70.0, 10.0, 15.0], [40.0, 12.0, 20.0], [50.0, 5.0, 18.0], [62.0, 8.0, 0.0]])
    ita = ita_degrees(tf.constant(median_lab, tf.float32)).numpy()
    expected = [math.degrees(math.atan((lab[0] - 50.0) / lab[2])) for lab in median_lab[:3]]
    np.testing.assert_allclose(ita[:3], expected, atol=1e-4)
    assert ita[3] == pytest.approx(90.0, abs=0.01), "b* = 0 gives +90 deg, not a division by zero"


def test_histogram_median_matches_numpy() -> None:
    batch = crops(*portrait("G000553"))
    small = batch.reshape(7, 80, 2, 80, 2, 3).mean(axis=(2, 4))
    lab = srgb_to_lab(tf.constant(small.transpose(3, 0, 1, 2).reshape(3, -1), tf.float32))
    lab = tf.reshape(lab, [3, 7, 80, 80])
    skin = skin_colour(lab).skin.numpy().reshape(7, -1)
    planes = lab.numpy().reshape(3, 7, -1)
    ours = masked_median(tf.constant(planes), tf.constant(skin)).numpy()
    for row in range(7):
        chosen = skin[row] > 0.5
        reference = [np.median(planes[c, row][chosen]) for c in range(3)]
        np.testing.assert_allclose(ours[row], reference, atol=0.15)


# --- metamorphic tests on real portraits ---------------------------------------------------------------


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_darkening_lowers_and_brightening_raises_ita(measure: Measure, bioguide: str) -> None:
    rgb, face = portrait(bioguide)
    before = _column(measure(crops(rgb, face))[0], "ita_deg")
    darker = _column(measure(crops(apply_gamma(rgb, 1.3), face))[0], "ita_deg")
    brighter = _column(measure(crops(apply_gamma(rgb, 0.8), face))[0], "ita_deg")
    assert (darker < before - 2.0).all(), (before, darker)
    assert (brighter > before + 3.0).all(), (before, brighter)


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_papules_raise_redness_in_that_cheek_only(measure: Measure, bioguide: str) -> None:
    rgb, face = portrait(bioguide)
    signals, peaks = measure(crops(rgb, face))
    planted_signals, planted_peaks = measure(crops(plant_papules(rgb, face, "left_cheek"), face))
    cheek = REGION["left_cheek"]
    assert _column(planted_signals, "erythema")[cheek] > _column(signals, "erythema")[cheek] + 0.02
    count, planted_count = (peaks[cheek, :, 2] > 0).sum(), (planted_peaks[cheek, :, 2] > 0).sum()
    assert planted_count >= count + 1
    assert planted_peaks[cheek, :, 2].sum() > peaks[cheek, :, 2].sum() + 0.5
    # At least one new peak sits on a planted papule (positions relative to the crop).
    found = planted_peaks[cheek][planted_peaks[cheek, :, 2] > 0, :2]
    papules = np.array(PAPULE_PLACES)[:, ::-1]  # (y, x)
    distances = np.linalg.norm(found[:, None] - papules[None], axis=-1)
    assert (distances.min(axis=0) < 0.06).sum() >= 1
    for other in ("right_cheek", "forehead"):
        np.testing.assert_array_equal(planted_signals[REGION[other]], signals[REGION[other]])
        np.testing.assert_array_equal(planted_peaks[REGION[other]], peaks[REGION[other]])


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_blur_lowers_texture_and_pores(measure: Measure, bioguide: str) -> None:
    rgb, face = portrait(bioguide)
    signals = measure(crops(rgb, face))[0]
    blurred = measure(crops(np.asarray(cv2.GaussianBlur(rgb, (0, 0), 1.5), np.uint8), face))[0]
    assert (_column(blurred, "texture") < 0.9 * _column(signals, "texture")).all()
    assert (_column(blurred, "pores") < _column(signals, "pores")).all()


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_shine_raises_specular_on_the_forehead_only(measure: Measure, bioguide: str) -> None:
    rgb, face = portrait(bioguide)
    signals = measure(crops(rgb, face))[0]
    shiny = measure(crops(plant_shine(rgb, face, "forehead"), face))[0]
    forehead = REGION["forehead"]
    assert _column(shiny, "specular")[forehead] > _column(signals, "specular")[forehead] + 0.01
    for cheek in ("left_cheek", "right_cheek"):
        assert _column(shiny, "specular")[REGION[cheek]] == _column(signals, "specular")[REGION[cheek]]


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_brown_spots_raise_pigment_spots_in_that_cheek(measure: Measure, bioguide: str) -> None:
    rgb, face = portrait(bioguide)
    signals = measure(crops(rgb, face))[0]
    spotted = measure(crops(plant_spots(rgb, face, "right_cheek"), face))[0]
    cheek = REGION["right_cheek"]
    assert _column(spotted, "pigment_spots")[cheek] > _column(signals, "pigment_spots")[cheek] + 0.003
    assert _column(spotted, "pigment_unevenness")[cheek] > _column(signals, "pigment_unevenness")[cheek]
    for other in ("left_cheek", "forehead"):
        np.testing.assert_array_equal(spotted[REGION[other]], signals[REGION[other]])


@pytest.mark.parametrize("bioguide", SKIN_FOREHEADS)
def test_thin_lines_raise_wrinkles_on_the_forehead(measure: Measure, bioguide: str) -> None:
    rgb, face = portrait(bioguide)
    signals = measure(crops(rgb, face))[0]
    lined = measure(crops(plant_lines(rgb, face, "forehead"), face))[0]
    forehead = REGION["forehead"]
    assert _column(lined, "wrinkles")[forehead] > _column(signals, "wrinkles")[forehead] + 0.1
    for cheek in ("left_cheek", "right_cheek"):
        assert _column(lined, "wrinkles")[REGION[cheek]] == _column(signals, "wrinkles")[REGION[cheek]]


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_dark_circles_lower_under_eye_lightness_against_the_cheeks(measure: Measure, bioguide: str) -> None:
    rgb, face = portrait(bioguide)
    lightness = _column(measure(crops(rgb, face))[0], "lab_l")
    shadowed = _column(measure(crops(darken_under_eyes(rgb, face), face))[0], "lab_l")
    for side in ("left", "right"):
        cheek, under_eye = REGION[f"{side}_cheek"], REGION[f"{side}_under_eye"]
        gap_before = lightness[cheek] - lightness[under_eye]
        gap_after = shadowed[cheek] - shadowed[under_eye]
        assert gap_after > gap_before + 4.0, (side, gap_before, gap_after)


def _rank(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ranks with ties averaged (for Spearman's correlation)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def test_ita_orders_described_skin_tones(measure: Measure) -> None:
    ita: dict[str, float] = {}
    for path in sorted(FACES.glob("congress_*.jpg")):
        bioguide = path.stem.removeprefix("congress_")
        signals = measure(crops(*portrait(bioguide)))[0]
        upper_face = [REGION["forehead"], REGION["left_cheek"], REGION["right_cheek"]]
        ita[bioguide] = float(_column(signals, "ita_deg")[upper_face].mean())
    assert len(ita) == 24
    # The pairs SOURCES.md sets furthest apart.
    assert min(ita["L000174"], ita["B001284"]) > max(ita["C000984"], ita["J000126"]) + 2.0
    # The three darkest renderings fall in del Bino's "dark" class.
    for bioguide in ("M001137", "S001185", "M001160"):
        assert ita[bioguide] < -30.0
    # Spearman rank correlation with the described tones, over the portraits SOURCES.md grades.
    described = sorted(DESCRIBED_TONE)
    tone = _rank(np.array([DESCRIBED_TONE[b] for b in described], np.float64))
    angle = _rank(np.array([ita[b] for b in described], np.float64))
    assert np.corrcoef(tone, angle)[0, 1] > 0.5


# --- independence, determinism, no constants -------------------------------------------------------------


@functools.cache
def _crop_pool() -> Image8:
    return np.concatenate([crops(*portrait(b)) for b in ("L000174", "C000984", "M001137")])


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=12))
def test_each_row_depends_on_its_own_crop_only(measure: Measure, rows: list[int]) -> None:
    pool = _crop_pool()
    alone = [measure(pool[row : row + 1]) for row in rows]
    together_signals, together_peaks = measure(pool[rows])
    for position, (signals, peaks) in enumerate(alone):
        # Matrix-product blocking may change with the batch size, so the last bits may differ.
        np.testing.assert_allclose(together_signals[position], signals[0], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(together_peaks[position], peaks[0], atol=1e-5)


def test_same_input_same_output_and_faces_differ(measure: Measure) -> None:
    first = crops(*portrait("H001042"))
    once, again = measure(first), measure(first.copy())
    np.testing.assert_array_equal(once[0], again[0])
    np.testing.assert_array_equal(once[1], again[1])
    other = measure(crops(*portrait("S001185")))[0]
    skin_rows = [REGION["forehead"], REGION["left_cheek"], REGION["right_cheek"], REGION["nose"]]
    differing = np.abs(once[0][skin_rows] - other[skin_rows]) > 1e-3
    # Every column but the two shares that can sit at exactly 0 or 1 differs somewhere.
    varying = [SIGNAL[name] for name in contract.SIGNAL_NAMES if name not in ("specular", "skin_fraction")]
    assert differing[:, varying].any(axis=0).all()


def test_no_signal_is_constant_across_portraits(measure: Measure) -> None:
    batches = [crops(*portrait(b)) for b in TONE_SPREAD]
    signals = np.concatenate([measure(batch)[0] for batch in batches])
    spread = signals.std(axis=0)
    for name in contract.SIGNAL_NAMES:
        assert spread[SIGNAL[name]] > 0.0, name
