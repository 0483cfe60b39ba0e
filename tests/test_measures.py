"""Tests for export/measures (with export/colour, export/texture, export/labels, export/filters): the
fixed-filter skin signals per face region, checked by planting changes in real portraits.

Every metamorphic test runs the face stage once on the untouched photo, plants a change in the PHOTO
inside one region's landmark outline, aligns both photos with that same alignment and reads both with
that same mask, and compares the signals region by region.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from orchestrator.face.stage import Geometry
from orchestrator.scoring.concerns import face_lab, usable_labels
from orchestrator.scoring.scorer import ita_from_lab
from serving import contract
from tests.conftest import DATA
from tests.planting import (
    FACES,
    PAPULE_PLACES,
    Image8,
    apply_gamma,
    darken_under_eyes,
    geometry_stage,
    photo,
    places,
    plant_lines,
    plant_papules,
    plant_shine,
    plant_spots,
    portrait,
    region_box,
)

tf = pytest.importorskip("tensorflow")

from export.colour import ita_degrees, srgb_to_lab  # noqa: E402
from export.labels import label_medians  # noqa: E402
from export.measures import compute_signals, measure_faces, redness_peaks  # noqa: E402

pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason=f"portraits not found at {FACES}")

LABEL = {name: index for index, name in enumerate(contract.LABEL_NAMES)}
SIGNAL = {name: index for index, name in enumerate(contract.signal_names())}
Measure = Callable[[Image8, Image8], tuple[NDArray[np.float32], NDArray[np.float32]]]

# A spread of skin tones as the photos render them (SOURCES.md): very light, light, medium,
# medium-dark, dark, and the darkest rendering in the set.
TONE_SPREAD = ("L000174", "B001284", "G000571", "E000288", "C000984", "M001137")
# Foreheads that show skin (no fringe or hat across them).
SKIN_FOREHEADS = ("L000174", "G000571", "E000288", "C000984", "M001137")
# Portraits whose order of skin tone anyone can see, lightest first: a light-skinned woman, a woman
# with medium-brown skin in bright light, a man with brown skin, a woman with dark skin.
VISIBLE_ORDER = ("B001284", "W000187", "C000984", "S001185")
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
    size = contract.FACE_SIZE_PX
    graph = tf.function(
        lambda face, mask: measure_faces(face, mask, contract.MAX_LESIONS),
        input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.uint8),
            tf.TensorSpec([None, size, size], tf.uint8),
        ],
    )

    def run(faces: Image8, masks: Image8) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        signals, peaks = graph(tf.constant(faces), tf.constant(masks))
        return stacked(signals), peaks.numpy()

    return run


def stacked(signals: dict[str, tf.Tensor]) -> NDArray[np.float32]:
    """The named signals as one [faces, labels, signals] array, columns in contract.SIGNALS order."""
    return np.stack([signals[name].numpy() for name in contract.signal_names()], axis=-1)


def named(signals: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
    """One face's [labels, signals] array as post-scoring reads it: by signal name."""
    return {name: signals[:, index] for name, index in SIGNAL.items()}


def read(
    measure: Measure, rgb: Image8, geometry: Geometry
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Signals [labels, columns] and peaks of `rgb` aligned and masked as `geometry` says."""
    face, _ = geometry.alignment.warp(rgb)
    signals, peaks = measure(face[None], geometry.mask.labels[None])
    return signals[0], peaks[0]


def _column(signals: NDArray[np.float32], name: str) -> NDArray[np.float32]:
    return signals[:, SIGNAL[name]]


def skin_labels(geometry: Geometry) -> list[int]:
    """Rows of the labels that hold skin in this face's mask."""
    return [LABEL[name] for name, count in geometry.mask.pixels.items() if count >= 150]


# --- the contract ------------------------------------------------------------------------------------


def test_outputs_follow_the_contract(measure: Measure) -> None:
    _rgb, geometry = portrait("C000984")
    signals, peaks = measure(geometry.face[None], geometry.mask.labels[None])
    assert signals.shape == (1, len(contract.LABEL_NAMES), len(contract.signal_names()))
    assert peaks.shape == (1, contract.MAX_LESIONS, 3)
    assert signals.dtype == np.float32 and peaks.dtype == np.float32
    assert np.isfinite(signals).all() and np.isfinite(peaks).all()
    assert ((peaks >= 0.0) & (peaks <= 1.0)).all()
    scores = peaks[..., 2]
    assert (np.diff(scores, axis=1) <= 0).all(), "peaks are sorted by score"
    assert (peaks[scores == 0] == 0).all(), "rows past the last candidate are zeros"
    shares = signals[0][:, [SIGNAL["pigment_spots"], SIGNAL["specular"], SIGNAL["skin_fraction"]]]
    assert ((shares >= 0) & (shares <= 1)).all()


def test_public_functions_match_the_shared_pass(measure: Measure) -> None:
    _, geometry = portrait("G000571")
    face, mask = geometry.face[None], geometry.mask.labels[None]
    signals, peaks = measure(face, mask)
    # Two graphs of the same ops: float rounding moves a histogram median by up to ~5e-4 a* units.
    np.testing.assert_allclose(
        stacked(compute_signals(tf.constant(face), tf.constant(mask))), signals, rtol=1e-5, atol=1e-3
    )
    direct = redness_peaks(tf.constant(face), tf.constant(mask), contract.MAX_LESIONS).numpy()
    np.testing.assert_allclose(direct, peaks, atol=1e-5)
    fewer = redness_peaks(tf.constant(face), tf.constant(mask), 3).numpy()
    np.testing.assert_allclose(fewer, peaks[:, :3], atol=1e-5)


def test_rejects_other_dtypes_and_sizes() -> None:
    _, geometry = portrait("L000174")
    face, mask = geometry.face[None], geometry.mask.labels[None]
    with pytest.raises(TypeError):
        compute_signals(tf.constant(face, tf.float32), tf.constant(mask))
    with pytest.raises(ValueError):
        compute_signals(tf.constant(face[:, :128, :128]), tf.constant(mask[:, :128, :128]))


def test_a_region_the_mask_leaves_out_reports_zeros(measure: Measure) -> None:
    rgb, geometry = portrait("S001184")
    # Cut the photo above the chin: the face stage marks the chin outside the photo.
    cut = np.ascontiguousarray(
        rgb[: round(float(geometry.alignment.to_photo(geometry.mask.polygons["chin"])[:, 1].min()))]
    )
    found = geometry_stage().analyse(cut)
    assert not found.mask.visible["chin"]
    assert found.mask.reasons["chin"] == "outside_photo"
    signals, _ = measure(found.face[None], found.mask.labels[None])
    assert (signals[0, LABEL["chin"]] == 0.0).all()
    assert signals[0, LABEL["forehead"], SIGNAL["skin_fraction"]] > 0.5


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


def test_label_medians_match_numpy() -> None:
    _, geometry = portrait("G000553")
    half = geometry.face.reshape(192, 2, 192, 2, 3).mean(axis=(1, 3))
    lab = srgb_to_lab(tf.constant(half.transpose(2, 0, 1).reshape(3, -1), tf.float32)).numpy()
    planes = lab.reshape(3, 1, 192, 192)
    labels = geometry.mask.labels[1::2, 1::2].astype(np.int32)[None]
    keep = planes[0] > 30.0  # any condition: medians are over labelled pixels where it holds
    ours = label_medians(tf.constant(planes), tf.constant(labels), tf.constant(keep)).numpy()[0]
    for index, name in enumerate(contract.LABEL_NAMES, start=1):
        chosen = (labels[0] == index) & keep[0]
        if not chosen.any():
            assert (ours[index - 1] == 0).all(), name
            continue
        reference = [np.median(planes[c, 0][chosen]) for c in range(3)]
        np.testing.assert_allclose(ours[index - 1], reference, atol=0.15, err_msg=name)


# --- metamorphic tests on real portraits ---------------------------------------------------------------


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_darkening_lowers_and_brightening_raises_ita(measure: Measure, bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    rows = skin_labels(geometry)
    before = _column(read(measure, rgb, geometry)[0], "ita_deg")[rows]
    darker = _column(read(measure, apply_gamma(rgb, 1.3), geometry)[0], "ita_deg")[rows]
    brighter = _column(read(measure, apply_gamma(rgb, 0.8), geometry)[0], "ita_deg")[rows]
    assert (darker < before - 2.0).all(), (before, darker)
    assert (brighter > before + 3.0).all(), (before, brighter)


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_papules_raise_redness_in_that_cheek_only(measure: Measure, bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    signals, peaks = read(measure, rgb, geometry)
    planted_signals, planted_peaks = read(measure, plant_papules(rgb, geometry, "left_cheek"), geometry)
    cheek = LABEL["left_cheek"]
    assert _column(planted_signals, "erythema")[cheek] > _column(signals, "erythema")[cheek] + 0.02
    # Peaks on the cheek: at least one new one sits on a planted papule.
    size = contract.FACE_SIZE_PX
    papules = geometry.alignment.to_frame(np.array(places(region_box(geometry, "left_cheek"), PAPULE_PLACES)))
    found = planted_peaks[planted_peaks[:, 2] > 0][:, 1::-1] * size  # (x, y) in the frame
    distances = np.linalg.norm(found[:, None] - papules[None], axis=-1)
    assert (distances.min(axis=0) < 6.0).sum() >= 2
    assert (planted_peaks[:, 2] > 0).sum() >= (peaks[:, 2] > 0).sum()
    for other in ("right_cheek", "forehead"):
        np.testing.assert_allclose(planted_signals[LABEL[other]], signals[LABEL[other]], atol=1e-4)


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_blur_lowers_texture_and_pores(measure: Measure, bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    rows = skin_labels(geometry)
    signals = read(measure, rgb, geometry)[0][rows]
    sigma = 0.006 * geometry.face_width_px  # ~1.6 px in the aligned frame
    blurred = read(measure, np.asarray(cv2.GaussianBlur(rgb, (0, 0), sigma), np.uint8), geometry)[0][rows]
    assert (_column(blurred, "texture") < 0.9 * _column(signals, "texture")).all()
    assert (_column(blurred, "pores") < _column(signals, "pores")).all()


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_shine_raises_specular_on_the_nose_only(measure: Measure, bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    signals = read(measure, rgb, geometry)[0]
    shiny = read(measure, plant_shine(rgb, geometry, "nose"), geometry)[0]
    nose = LABEL["nose"]
    assert _column(shiny, "specular")[nose] > _column(signals, "specular")[nose] + 0.01
    for far in ("left_cheek", "right_cheek", "forehead", "chin"):
        assert _column(shiny, "specular")[LABEL[far]] == pytest.approx(
            _column(signals, "specular")[LABEL[far]]
        )


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_brown_spots_raise_pigment_spots_in_that_cheek(measure: Measure, bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    signals = read(measure, rgb, geometry)[0]
    spotted = read(measure, plant_spots(rgb, geometry, "right_cheek"), geometry)[0]
    cheek = LABEL["right_cheek"]
    assert _column(spotted, "pigment_spots")[cheek] > _column(signals, "pigment_spots")[cheek] + 0.003
    assert _column(spotted, "pigment_unevenness")[cheek] > _column(signals, "pigment_unevenness")[cheek]
    for other in ("left_cheek", "forehead"):
        np.testing.assert_allclose(spotted[LABEL[other]], signals[LABEL[other]], atol=1e-4)


@pytest.mark.parametrize("bioguide", SKIN_FOREHEADS)
def test_thin_lines_raise_wrinkles_on_the_forehead(measure: Measure, bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    signals = read(measure, rgb, geometry)[0]
    lined = read(measure, plant_lines(rgb, geometry, "forehead"), geometry)[0]
    forehead = LABEL["forehead"]
    assert _column(lined, "wrinkles")[forehead] > _column(signals, "wrinkles")[forehead] + 0.1
    for cheek in ("left_cheek", "right_cheek"):
        assert _column(lined, "wrinkles")[LABEL[cheek]] == pytest.approx(
            _column(signals, "wrinkles")[LABEL[cheek]]
        )


@pytest.mark.parametrize("bioguide", TONE_SPREAD)
def test_dark_circles_lower_under_eye_lightness_against_the_cheeks(measure: Measure, bioguide: str) -> None:
    rgb, geometry = portrait(bioguide)
    lightness = _column(read(measure, rgb, geometry)[0], "lab_l")
    shadowed = _column(read(measure, darken_under_eyes(rgb, geometry), geometry)[0], "lab_l")
    for side in ("left", "right"):
        cheek, under_eye = LABEL[f"{side}_cheek"], LABEL[f"{side}_under_eye"]
        gap_before = lightness[cheek] - lightness[under_eye]
        gap_after = shadowed[cheek] - shadowed[under_eye]
        assert gap_after > gap_before + 4.0, (side, gap_before, gap_after)


# --- skin tone as a person sees it -----------------------------------------------------------------------


def face_ita(measure: Measure, bioguide: str) -> float:
    """The report's ITA for a portrait: the face's colour over its usable regions."""
    rgb, geometry = portrait(bioguide)
    signals = named(read(measure, rgb, geometry)[0])
    usable = usable_labels(signals, geometry.mask.pixels, geometry.mask.visible)
    lab_l, _, lab_b = face_lab(signals, usable)
    return ita_from_lab(lab_l, lab_b)


def test_a_light_face_is_not_read_darker_than_a_dark_one(measure: Measure) -> None:
    light, dark = face_ita(measure, "B001284"), face_ita(measure, "C000984")
    assert light > 28.0, light  # "intermediate" or lighter (del Bino & Bernerd 2013)
    assert light >= dark + 10.0, (light, dark)


def test_ita_orders_portraits_whose_order_anyone_can_see(measure: Measure) -> None:
    angles = [face_ita(measure, bioguide) for bioguide in VISIBLE_ORDER]
    assert all(a > b + 5.0 for a, b in itertools.pairwise(angles)), dict(
        zip(VISIBLE_ORDER, angles, strict=True)
    )


def _rank(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ranks with ties averaged (for Spearman's correlation)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def test_ita_follows_the_described_skin_tones(measure: Measure) -> None:
    described = sorted(DESCRIBED_TONE)
    tone = _rank(np.array([DESCRIBED_TONE[b] for b in described], np.float64))
    angle = _rank(np.array([face_ita(measure, b) for b in described], np.float64))
    assert np.corrcoef(tone, angle)[0, 1] > 0.6


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_copies_read_the_same_tone(measure: Measure, orientation: int) -> None:
    upright = photo(FACES / "sn_city_portrait.jpg")
    rotated = photo(DATA / "awkward" / "exif_orientation" / f"derived_face_exif_orient{orientation}.jpg")
    angles = []
    for rgb in (upright, rotated):
        geometry = geometry_stage().analyse(rgb)
        signals = named(read(measure, rgb, geometry)[0])
        lab_l, _, lab_b = face_lab(
            signals, usable_labels(signals, geometry.mask.pixels, geometry.mask.visible)
        )
        angles.append(ita_from_lab(lab_l, lab_b))
    assert abs(angles[0] - angles[1]) < 0.5, angles


# --- independence, determinism, no constants -------------------------------------------------------------


@functools.cache
def _pool() -> tuple[Image8, Image8]:
    geometries = [portrait(b)[1] for b in ("L000174", "C000984", "M001137")]
    return np.stack([g.face for g in geometries]), np.stack([g.mask.labels for g in geometries])


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=5))
def test_each_row_depends_on_its_own_face_only(measure: Measure, rows: list[int]) -> None:
    faces, masks = _pool()
    alone = [measure(faces[row : row + 1], masks[row : row + 1]) for row in rows]
    together_signals, together_peaks = measure(faces[rows], masks[rows])
    for position, (signals, peaks) in enumerate(alone):
        # Matrix-product blocking may change with the batch size, so the last bits may differ.
        np.testing.assert_allclose(together_signals[position], signals[0], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(together_peaks[position], peaks[0], atol=1e-4)


def test_same_input_same_output_and_faces_differ(measure: Measure) -> None:
    _, first = portrait("H001042")
    once = measure(first.face[None], first.mask.labels[None])
    again = measure(first.face[None].copy(), first.mask.labels[None].copy())
    np.testing.assert_array_equal(once[0], again[0])
    np.testing.assert_array_equal(once[1], again[1])
    _, second = portrait("S001185")
    other = measure(second.face[None], second.mask.labels[None])[0][0]
    rows = [LABEL["forehead"], LABEL["left_cheek"], LABEL["right_cheek"], LABEL["nose"]]
    differing = np.abs(once[0][0][rows] - other[rows]) > 1e-3
    # Every column but the two shares that can sit at exactly 0 or 1 differs somewhere.
    varying = [SIGNAL[name] for name in contract.signal_names() if name not in ("specular", "skin_fraction")]
    assert differing[:, varying].any(axis=0).all()


def test_no_signal_is_constant_across_portraits(measure: Measure) -> None:
    signals = np.concatenate(
        [read(measure, *portrait(b))[0][skin_labels(portrait(b)[1])] for b in TONE_SPREAD]
    )
    spread = signals.std(axis=0)
    for name in contract.signal_names():
        assert spread[SIGNAL[name]] > 0.0, name
