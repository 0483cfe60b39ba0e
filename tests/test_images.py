"""Tests for the decode stage (orchestrator.decode.images with formats, colours, profiles) on real photos."""

from __future__ import annotations

import functools
import io
import logging
import subprocess
import sys
import textwrap
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageOps

from orchestrator.decode import colours, formats
from orchestrator.decode.images import DecodedImage, decode_image
from orchestrator.errors import ImageTooLargePixels, InvalidImage, ShineError, UnsupportedFormat
from tests.conftest import DATA, ROOT, data_dir, missing

MAX_PIXELS = 64_000_000  # the settings default
LONG_SIDE_PX = 2048  # the settings default
DECODE_ERRORS = (InvalidImage, UnsupportedFormat, ImageTooLargePixels)

# Every file in awkward/ and what decoding it must give: (format, upright full width, height, scale) or
# the error class. Scales below 1 are the JPEG DCT reduction or, for other formats, the resize to 2048.
AWKWARD: dict[str, tuple[str, int, int, float] | type[ShineError]] = {
    "alpha/derived_face_transparent_background.png": ("PNG", 450, 550, 1.0),
    "alpha/fr_32bit_rgba_obama.png": ("PNG", 626, 1200, 1.0),
    "alpha/pillow_transparent.webp": ("WEBP", 200, 150, 1.0),
    "alpha/pillowheif_heif_RGBA_8__128x128.heif": ("HEIF", 128, 128, 1.0),
    "alpha/sn_benedict_cumberbatch_2014_rgba.png": ("PNG", 384, 482, 1.0),
    "cmyk/derived_face_cmyk.jpg": ("JPEG", 450, 550, 1.0),
    "cmyk/pillow_pil_sample_cmyk.jpg": ("JPEG", 100, 100, 1.0),
    "corrupt/derived_empty.jpg": InvalidImage,
    "corrupt/derived_face_truncated_half.jpg": InvalidImage,
    "corrupt/derived_not_an_image.jpg": InvalidImage,
    "corrupt/pillow_broken.png": InvalidImage,
    "corrupt/pillow_junk_jpeg_header.jpg": ("JPEG", 1024, 768, 1.0),  # junk is skipped, the picture is whole
    "corrupt/pillow_truncated_jpeg.jpg": InvalidImage,
    "corrupt/pillow_ultrahdr.jpg": InvalidImage,
    "corrupt/pillowheif_heif_corrupted_corrupted.heic": InvalidImage,
    "corrupt/pillowheif_heif_truncated_truncated.heic": ("HEIF", 16, 16, 1.0),  # the primary image is whole
    "exif_orientation/derived_face_exif_orient3.jpg": ("JPEG", 1200, 794, 1.0),
    "exif_orientation/derived_face_exif_orient6.jpg": ("JPEG", 1200, 794, 1.0),
    "exif_orientation/derived_face_exif_orient8.jpg": ("JPEG", 1200, 794, 1.0),
    "exif_orientation/exiforient_Landscape_6.jpg": ("JPEG", 1800, 1200, 1.0),
    "exif_orientation/exiforient_Landscape_8.jpg": ("JPEG", 1800, 1200, 1.0),
    "exif_orientation/exiforient_Portrait_1.jpg": ("JPEG", 1200, 1800, 1.0),
    "exif_orientation/exiforient_Portrait_3.jpg": ("JPEG", 1200, 1800, 1.0),
    "exif_orientation/exiforient_Portrait_6.jpg": ("JPEG", 1200, 1800, 1.0),
    "exif_orientation/exiforient_Portrait_8.jpg": ("JPEG", 1200, 1800, 1.0),
    "exif_orientation/pillow_hopper_orientation_2.jpg": ("JPEG", 128, 128, 1.0),
    "exif_orientation/pillow_hopper_orientation_3.jpg": ("JPEG", 128, 128, 1.0),
    "exif_orientation/pillow_hopper_orientation_5.jpg": ("JPEG", 128, 128, 1.0),
    "exif_orientation/pillow_hopper_orientation_6.jpg": ("JPEG", 128, 128, 1.0),
    "exif_orientation/pillow_hopper_orientation_6.webp": ("WEBP", 128, 128, 1.0),
    "exif_orientation/pillow_hopper_orientation_8.jpg": ("JPEG", 128, 128, 1.0),
    "grayscale/derived_face_gray_L.jpg": ("JPEG", 1200, 794, 1.0),
    "grayscale/pillow_hopper_gray.jpg": ("JPEG", 128, 128, 1.0),
    "grayscale/skimage_camera_gray_person.png": ("PNG", 512, 512, 1.0),
    "heic/derived_face.heic": ("HEIF", 1200, 794, 1.0),
    "heic/pillow_avif_hopper.heif": ("HEIF", 128, 128, 1.0),
    "heic/pillowheif_heif_other_cat.hif": ("HEIF", 4240, 2832, 2048 / 4240),
    "heic/pillowheif_heif_other_pug.heic": ("HEIF", 4032, 3024, 2048 / 4032),
    "heic/pillowheif_heif_special_xiaomi.heic": ("HEIF", 2592, 1944, 2048 / 2592),
    "misc_jpeg/derived_face_palette.png": ("PNG", 450, 550, 1.0),
    "misc_jpeg/pillow_hopper_16bit_qtables.jpg": ("JPEG", 128, 128, 1.0),
    "mpo/pillow_sugarshack.mpo": ("MPO", 640, 480, 1.0),
    "progressive/derived_face_progressive.jpg": ("JPEG", 1200, 794, 1.0),
    "progressive/pillow_icc_profile_big.jpg": ("JPEG", 425, 250, 1.0),
    "tiny/derived_face_48px.jpg": ("JPEG", 48, 59, 1.0),
    "tiny/pillow_hopper.jpg": ("JPEG", 128, 128, 1.0),
    "very_large/derived_face_upscaled_6000x9000.jpg": ("JPEG", 6000, 9000, 0.25),
    "very_large/pillow_decompression_bomb.gif": ImageTooLargePixels,
    "very_large/pillow_xmp_test.jpg": ("JPEG", 2000, 1072, 1.0),
    "very_large/pillowheif_heif_special_200MP.heic": ImageTooLargePixels,
    "webp_avif/derived_face.webp": ("WEBP", 1200, 794, 1.0),
    "webp_avif/pillow_avif_exif.avif": ("AVIF", 512, 512, 1.0),
    "webp_avif/pillow_avif_hopper.avif": ("AVIF", 128, 128, 1.0),
    "webp_avif/pillow_hopper.webp": ("WEBP", 128, 128, 1.0),
    "webp_avif/pillow_iss634.webp": ("WEBP", 245, 245, 1.0),
}


def read(relative: str) -> bytes:
    """The bytes of a file under ../shared/data; skips the test, saying why, when it is absent (fails
    under CI=true)."""
    path = DATA / relative
    if not path.is_file():
        data_dir()  # names the whole folder when that is what is missing
        missing(f"test photo {relative} not found under {DATA}")
    return path.read_bytes()


@functools.cache
def decoded(relative: str, long_side_px: int = LONG_SIDE_PX) -> DecodedImage:
    """Decode a data file once per test session (the HEICs take a second each); results are read-only."""
    return decode_image(read(relative), max_pixels=MAX_PIXELS, long_side_px=long_side_px)


def mean_difference(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def orientation_variants(rgb: NDArray[np.uint8]) -> list[NDArray[np.uint8]]:
    """The seven wrong ways up of an image (every flip and rotation but the identity)."""
    variants = [np.rot90(rgb, k) for k in (1, 2, 3)]
    variants += [np.rot90(rgb[:, ::-1], k) for k in (0, 1, 2, 3)]
    return variants


def assert_upright_like(image: NDArray[np.uint8], reference: NDArray[np.uint8], tolerance: float) -> None:
    """`image` matches `reference` within `tolerance` and far better than any other way up."""
    assert image.shape == reference.shape
    right = mean_difference(image, reference)
    assert right < tolerance
    for wrong in orientation_variants(image):
        if wrong.shape == reference.shape:
            assert mean_difference(wrong, reference) > 4 * right + 10


def assert_well_formed(image: DecodedImage) -> None:
    rgb = image.rgb
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags.c_contiguous and not rgb.flags.writeable
    assert 1 <= image.exif_orientation <= 8
    assert image.format in formats.ACCEPTED_FORMATS
    height, width = rgb.shape[:2]
    # Rounding of the reduced size (ceil for JPEG DCT scaling, round for resizes) moves it by a pixel.
    assert abs(width - image.width_px * image.scale) <= 1
    assert abs(height - image.height_px * image.scale) <= 1


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


@functools.cache
def hopper() -> Image.Image:
    """Pillow's 128x128 test portrait (Grace Hopper), as RGB."""
    with Image.open(io.BytesIO(read("awkward/tiny/pillow_hopper.jpg"))) as image:
        return image.convert("RGB")


# ---- every awkward file -------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", sorted(AWKWARD))
def test_awkward_file_decodes_or_fails_with_its_error(relative: str) -> None:
    expected = AWKWARD[relative]
    if isinstance(expected, type):
        with pytest.raises(expected) as raised:
            decoded(f"awkward/{relative}")
        message = raised.value.message
        assert "Traceback" not in message and "BytesIO" not in message and "/tmp" not in message
        assert "/" not in message.replace("HEIC/HEIF", "")  # no path of any kind
        return
    image = decoded(f"awkward/{relative}")
    fmt, width_px, height_px, scale = expected
    assert (image.format, image.width_px, image.height_px) == (fmt, width_px, height_px)
    assert image.scale == pytest.approx(scale, abs=1e-3)
    assert max(image.rgb.shape[:2]) <= 2 * LONG_SIDE_PX
    assert_well_formed(image)


def test_every_awkward_file_has_an_expected_outcome() -> None:
    folder = data_dir("awkward")
    present = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}
    assert present == set(AWKWARD)


# ---- orientation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_face_decodes_upright(orientation: int) -> None:
    image = decoded(f"awkward/exif_orientation/derived_face_exif_orient{orientation}.jpg")
    assert image.exif_orientation == orientation
    assert_upright_like(image.rgb, decoded("faces/sn_city_portrait.jpg").rgb, tolerance=3.0)


@pytest.mark.parametrize(
    "relative",
    [f"pillow_hopper_orientation_{o}.jpg" for o in (2, 3, 5, 6, 8)] + ["pillow_hopper_orientation_6.webp"],
)
def test_hopper_orientations_decode_upright(relative: str) -> None:
    image = decoded(f"awkward/exif_orientation/{relative}")
    assert image.exif_orientation == int(relative.split("_")[-1][0])
    assert_upright_like(image.rgb, decoded("awkward/tiny/pillow_hopper.jpg").rgb, tolerance=8.0)


@pytest.mark.parametrize(
    ("relative", "reference"),
    [
        (f"exiforient_Portrait_{o}.jpg", "awkward/exif_orientation/exiforient_Portrait_1.jpg")
        for o in (3, 6, 8)
    ]
    + [(f"exiforient_Landscape_{o}.jpg", "nonfaces/exiforient_Landscape_1.jpg") for o in (6, 8)],
)
def test_orientation_examples_decode_upright(relative: str, reference: str) -> None:
    image = decoded(f"awkward/exif_orientation/{relative}")
    assert_upright_like(image.rgb, decoded(reference).rgb, tolerance=6.0)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "AVIF"])
def test_orientation_matches_pillow_exif_transpose(fmt: str, orientation: int) -> None:
    """All eight orientations, in every format that carries EXIF, as Pillow's exif_transpose shows them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, object] = {"exif": exif}
    if fmt == "WEBP":
        params["lossless"] = True
    data = encode(hopper().crop((0, 0, 128, 96)), fmt, **params)  # not square, so a turn shows in the shape
    image = decode_image(data, max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX)
    with Image.open(io.BytesIO(data)) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert image.exif_orientation == orientation
    assert (image.height_px, image.width_px) == expected.shape[:2]
    np.testing.assert_array_equal(image.rgb, expected)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_heif_orientation_applied_once(orientation: int) -> None:
    """libheif turns HEIF upright itself (irot/imir); the decoder must not turn it a second time."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    source = hopper().crop((0, 0, 128, 96))
    upright = decode_image(
        encode(source, "PNG", exif=exif.tobytes()), max_pixels=MAX_PIXELS, long_side_px=4096
    )
    image = decode_image(
        encode(source, "HEIF", exif=exif.tobytes(), quality=95), max_pixels=MAX_PIXELS, long_side_px=4096
    )
    assert image.exif_orientation == orientation
    assert (image.width_px, image.height_px) == (upright.width_px, upright.height_px)
    assert_upright_like(image.rgb, upright.rgb, tolerance=6.0)


def test_heic_face_decodes_like_its_jpeg_source() -> None:
    assert_upright_like(
        decoded("awkward/heic/derived_face.heic").rgb,
        decoded("faces/sn_city_portrait.jpg").rgb,
        tolerance=3.0,
    )


# ---- colour: alpha, grey, CMYK, ICC -------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        "awkward/alpha/derived_face_transparent_background.png",
        "awkward/alpha/pillow_transparent.webp",
        "awkward/alpha/pillowheif_heif_RGBA_8__128x128.heif",
    ],
)
def test_transparent_pixels_become_neutral_grey_not_black(relative: str) -> None:
    image = decoded(relative)
    with Image.open(io.BytesIO(read(relative))) as opened:
        rgba = np.asarray(opened.convert("RGBA")).astype(np.float64)
    alpha = rgba[:, :, 3:] / 255.0
    expected = rgba[:, :, :3] * alpha + np.asarray(colours.NEUTRAL_BACKGROUND) * (1.0 - alpha)
    assert image.had_alpha
    assert (alpha < 1.0).any()
    assert np.abs(image.rgb - expected).max() <= 1.5
    transparent = alpha[:, :, 0] == 0.0
    assert (image.rgb[transparent] == 128).all()  # never black, never the colour hidden under alpha 0


def test_opaque_alpha_channel_is_not_reported() -> None:
    assert not decoded("awkward/alpha/fr_32bit_rgba_obama.png").had_alpha


def test_palette_transparency_is_composited() -> None:
    palette = hopper().convert("P")
    data = encode(palette, "PNG", transparency=int(np.asarray(palette)[0, 0]))
    image = decode_image(data, max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX)
    assert image.had_alpha
    assert tuple(image.rgb[0, 0]) == colours.NEUTRAL_BACKGROUND


@pytest.mark.parametrize(
    "relative",
    [
        "awkward/grayscale/derived_face_gray_L.jpg",
        "awkward/grayscale/pillow_hopper_gray.jpg",
        "awkward/grayscale/skimage_camera_gray_person.png",
    ],
)
def test_grayscale_sources_are_flagged_and_three_channel(relative: str) -> None:
    image = decoded(relative)
    assert image.grayscale
    assert np.ptp(image.rgb, axis=2).max() == 0


def test_colour_sources_are_not_flagged_grey() -> None:
    assert not decoded("awkward/misc_jpeg/derived_face_palette.png").grayscale
    assert not decoded("faces/sn_city_portrait.jpg").grayscale


def test_sixteen_bit_grey_keeps_its_range() -> None:
    ramp = np.tile(np.array([0, 256, 32768, 65535], dtype=np.uint16), (8, 1))
    image = decode_image(encode(Image.fromarray(ramp), "PNG"), max_pixels=MAX_PIXELS, long_side_px=64)
    assert image.grayscale
    assert image.rgb[0, :, 0].tolist() == [0, 1, 128, 255]


def test_cmyk_with_a_mismatched_profile_still_decodes() -> None:
    cmyk = hopper().convert("CMYK")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    plain = decode_image(encode(cmyk, "JPEG", quality=95), max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX)
    tagged = decode_image(
        encode(cmyk, "JPEG", quality=95, icc_profile=srgb), max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX
    )
    np.testing.assert_array_equal(tagged.rgb, plain.rgb)


def test_cmyk_jpeg_matches_its_rgb_source() -> None:
    image = decoded("awkward/cmyk/derived_face_cmyk.jpg")
    assert mean_difference(image.rgb, decoded("faces/congress_S001185.jpg").rgb) < 3.0


@pytest.mark.parametrize(
    "relative", ["awkward/very_large/pillow_xmp_test.jpg", "awkward/progressive/pillow_icc_profile_big.jpg"]
)
def test_embedded_profile_is_converted_to_srgb(relative: str) -> None:
    """Adobe RGB (matrix-shaper, OpenCV path) and the 500 KB LUT profile (lcms path) agree with lcms."""
    data = read(relative)
    with Image.open(io.BytesIO(data)) as opened:
        source = ImageCms.ImageCmsProfile(io.BytesIO(opened.info["icc_profile"]))
        raw = opened.convert("RGB")
    transform = ImageCms.buildTransform(
        source,
        ImageCms.createProfile("sRGB"),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    expected = np.asarray(transform.apply(raw))
    image = decoded(relative)
    assert mean_difference(image.rgb, np.asarray(raw)) > 1.0  # the profile mattered
    assert np.abs(image.rgb.astype(np.int16) - expected).max() <= 2
    assert mean_difference(image.rgb, expected) < 0.5


def test_display_p3_photo_is_converted_like_lcms() -> None:
    """Phones embed Display P3; its fast path must agree with lcms on a real face."""
    with Image.open(io.BytesIO(read("awkward/heic/pillowheif_heif_other_pug.heic"))) as phone:
        display_p3 = phone.info["icc_profile"]
    face = decoded("faces/sn_city_portrait.jpg").rgb
    image = decode_image(
        encode(Image.fromarray(face), "PNG", icc_profile=display_p3, compress_level=1),
        max_pixels=MAX_PIXELS,
        long_side_px=4096,
    )
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(display_p3)),
        ImageCms.createProfile("sRGB"),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    expected = np.asarray(transform.apply(Image.fromarray(face)))
    assert np.abs(image.rgb.astype(np.int16) - expected).max() <= 2
    assert mean_difference(image.rgb, face) > 1.0


def test_srgb_profile_changes_nothing() -> None:
    face = decoded("faces/sn_city_portrait.jpg").rgb
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = decode_image(
        encode(Image.fromarray(face), "PNG", icc_profile=srgb, compress_level=1),
        max_pixels=MAX_PIXELS,
        long_side_px=4096,
    )
    np.testing.assert_array_equal(image.rgb, face)


def test_broken_profile_is_ignored_not_fatal() -> None:
    face = decoded("awkward/tiny/pillow_hopper.jpg").rgb
    image = decode_image(
        encode(Image.fromarray(face), "PNG", icc_profile=b"not a profile" * 20),
        max_pixels=MAX_PIXELS,
        long_side_px=4096,
    )
    np.testing.assert_array_equal(image.rgb, face)


# ---- pixel budget -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        "awkward/very_large/pillow_decompression_bomb.gif",
        "awkward/very_large/pillowheif_heif_special_200MP.heic",
    ],
)
def test_pixel_bombs_are_refused_from_the_header(relative: str) -> None:
    data = read(relative)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargePixels) as raised:
            decode_image(data, max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "64,000,000" in raised.value.message
    assert elapsed < 2.0  # a full decode of either takes minutes or gigabytes
    assert peak < 20 * 1024 * 1024


def test_pixel_bombs_never_allocate_their_pixels() -> None:
    """Peak RSS of a fresh process (tracemalloc cannot see Pillow's or libheif's C allocations)."""
    data_dir("awkward", "very_large")
    script = textwrap.dedent(
        f"""
        import resource, sys
        from pathlib import Path
        from orchestrator.errors import ImageTooLargePixels
        from orchestrator.decode.images import decode_image
        folder = Path({str(DATA / "awkward" / "very_large")!r})
        decode_image((folder.parent / "tiny" / "pillow_hopper.jpg").read_bytes(), max_pixels=64_000_000,
                     long_side_px=2048)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for name in ("pillow_decompression_bomb.gif", "pillowheif_heif_special_200MP.heic"):
            try:
                decode_image((folder / name).read_bytes(), max_pixels=64_000_000, long_side_px=2048)
            except ImageTooLargePixels:
                pass
            else:
                sys.exit("decoded " + name)
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown_kib, any(name.startswith("tensorflow") for name in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    grown_kib, tensorflow_loaded = result.stdout.split()
    assert int(grown_kib) < 50 * 1024  # the 200 MP HEIC alone would be 600 MB of RGB
    assert tensorflow_loaded == "False"


def test_budget_is_checked_against_the_full_size() -> None:
    with pytest.raises(ImageTooLargePixels) as raised:
        decode_image(read("faces/sn_city_portrait.jpg"), max_pixels=900_000, long_side_px=LONG_SIDE_PX)
    assert "1200x794" in raised.value.message and "900,000" in raised.value.message


def test_configure_decoders_ties_pillows_guard_to_the_budget() -> None:
    previous = Image.MAX_IMAGE_PIXELS
    try:
        formats.configure_decoders(1_000_000)
        assert Image.MAX_IMAGE_PIXELS == 1_000_000
        with pytest.raises(ImageTooLargePixels):
            decode_image(
                read("awkward/heic/pillowheif_heif_other_pug.heic"), max_pixels=1_000_000, long_side_px=64
            )
    finally:
        Image.MAX_IMAGE_PIXELS = previous


# ---- reduced decode -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("long_side_px", "scale", "decoded_long_side"),
    [(2048, 0.25, 2250), (3000, 0.5, 4500), (1125, 0.125, 1125), (1126, 0.25, 2250)],
)
def test_large_jpeg_decodes_at_the_largest_reduction_that_keeps_the_long_side(
    long_side_px: int, scale: float, decoded_long_side: int
) -> None:
    image = decoded("awkward/very_large/derived_face_upscaled_6000x9000.jpg", long_side_px)
    assert image.scale == scale
    assert max(image.rgb.shape[:2]) == decoded_long_side
    assert (image.width_px, image.height_px) == (6000, 9000)


def test_reduced_decode_of_a_rotated_jpeg_stays_upright() -> None:
    image = decoded("awkward/exif_orientation/derived_face_exif_orient6.jpg", 600)
    assert (image.scale, image.rgb.shape[:2], image.width_px, image.height_px) == (0.5, (397, 600), 1200, 794)
    reference = decoded("faces/sn_city_portrait.jpg", 600).rgb
    assert_upright_like(image.rgb, reference, tolerance=4.0)


def test_mpo_first_frame_is_reduced_like_a_jpeg() -> None:
    image = decoded("awkward/mpo/pillow_sugarshack.mpo", 300)
    assert (image.format, image.scale, image.rgb.shape[:2]) == ("MPO", 0.5, (240, 320))


@pytest.mark.parametrize(
    ("relative", "fmt"),
    [("awkward/webp_avif/derived_face.webp", "WEBP"), ("awkward/heic/derived_face.heic", "HEIF")],
)
def test_other_formats_are_resized_to_the_long_side(relative: str, fmt: str) -> None:
    image = decoded(relative, 600)
    assert (image.format, image.rgb.shape[:2], image.width_px, image.height_px) == (
        fmt,
        (397, 600),
        1200,
        794,
    )
    assert image.scale == pytest.approx(0.5)
    small = decoded("faces/sn_city_portrait.jpg", 600).rgb  # DCT-reduced to the same size
    assert mean_difference(image.rgb, small) < 3.0


def test_small_images_are_not_enlarged() -> None:
    image = decoded("awkward/tiny/derived_face_48px.jpg")
    assert (image.scale, image.rgb.shape[:2]) == (1.0, (59, 48))


# ---- recognition --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "JPEG2000", "PDF", "PCX", "SGI", "QOI", "DDS"])
def test_formats_outside_the_list_are_unsupported(fmt: str) -> None:
    with pytest.raises(UnsupportedFormat) as raised:
        decode_image(encode(hopper(), fmt), max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX)
    assert raised.value.status == 415


@pytest.mark.parametrize(
    "data",
    [
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"%PDF-1.7\n",
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42",
    ],
)
def test_other_known_files_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        decode_image(data, max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX)


def test_format_comes_from_the_bytes_not_the_name() -> None:
    # A PNG saved as .jpg and a WebP with no name at all are recognised by their signatures.
    assert decoded("awkward/misc_jpeg/derived_face_palette.png").format == "PNG"
    assert decode_image(encode(hopper(), "BMP"), max_pixels=MAX_PIXELS, long_side_px=64).format == "BMP"
    assert decode_image(encode(hopper(), "GIF"), max_pixels=MAX_PIXELS, long_side_px=64).format == "GIF"


def test_jpeg_with_hundreds_of_scan_markers_is_refused() -> None:
    baseline = read("awkward/tiny/pillow_hopper.jpg")
    # Scan markers hidden in comment segments count as scans to the cheap pre-check.
    bloated = baseline[:2] + b"\xff\xfe\x00\x04\xff\xda" * 200 + baseline[2:]
    with pytest.raises(InvalidImage):
        decode_image(bloated, max_pixels=MAX_PIXELS, long_side_px=LONG_SIDE_PX)


@pytest.mark.parametrize("relative", ["faces/skimage_astronaut.png", "faces/congress_B001270.jpg"])
def test_a_fault_in_shines_own_decode_code_is_raised_not_reported_as_a_corrupt_upload(relative: str) -> None:
    # No setting allows a long side of 0, so this is a caller's bug in Shine's own code (a division by
    # it), not a broken file: it must surface as itself (a logged 500 the fuzz tests see), never as
    # InvalidImage.
    with pytest.raises(ZeroDivisionError):
        decode_image(read(relative), max_pixels=MAX_PIXELS, long_side_px=0)


def test_decoding_logs_nothing_about_the_photo(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        decode_image(read("awkward/very_large/pillow_xmp_test.jpg"), max_pixels=MAX_PIXELS, long_side_px=512)
        with pytest.raises(InvalidImage):
            decode_image(
                read("awkward/corrupt/pillow_truncated_jpeg.jpg"), max_pixels=MAX_PIXELS, long_side_px=512
            )
    assert caplog.records == []


def test_concurrent_decodes_agree() -> None:
    with Image.open(io.BytesIO(read("awkward/heic/pillowheif_heif_other_pug.heic"))) as phone:
        display_p3 = phone.info["icc_profile"]
    data = encode(hopper(), "JPEG", icc_profile=display_p3)
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda _: decode_image(data, max_pixels=MAX_PIXELS, long_side_px=64).rgb, range(16))
        )
    for rgb in results[1:]:
        np.testing.assert_array_equal(rgb, results[0])


# ---- fuzzing ------------------------------------------------------------------------------------------

FUZZ_SEEDS = (
    "awkward/tiny/pillow_hopper.jpg",
    "awkward/progressive/derived_face_progressive.jpg",
    "awkward/webp_avif/pillow_hopper.webp",
    "awkward/webp_avif/pillow_avif_hopper.avif",
    "awkward/heic/pillow_avif_hopper.heif",
    "awkward/misc_jpeg/derived_face_palette.png",
    "awkward/exif_orientation/pillow_hopper_orientation_6.jpg",
    "awkward/cmyk/pillow_pil_sample_cmyk.jpg",
    "awkward/mpo/pillow_sugarshack.mpo",
    "awkward/alpha/pillow_transparent.webp",
)


@functools.cache
def fuzz_seeds() -> tuple[bytes, ...]:
    """Real photos plus Pillow encodings of one in the formats the data folder lacks (GIF, BMP, TIFF)."""
    seeds = [read(relative) for relative in FUZZ_SEEDS]
    seeds += [encode(hopper(), fmt) for fmt in ("GIF", "BMP", "TIFF")]
    seeds.append(encode(hopper(), "TIFF", compression="tiff_deflate"))
    return tuple(seeds)


# Random bodies behind each accepted signature reach every parser, not just "unrecognised".
SIGNATURES = (
    b"",
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"\x00\x00\x00\x1cftypheic",
    b"\x00\x00\x00\x1cftypavif",
)


def decodes_or_refuses(data: bytes) -> None:
    """The property: a DecodedImage or one of the three decode errors, nothing else."""
    try:
        image = decode_image(data, max_pixels=4_000_000, long_side_px=100)
    except DECODE_ERRORS as exc:
        assert "Traceback" not in exc.message
        return
    assert_well_formed(image)


# Pillow warns about the damaged EXIF and TIFF tags it skips, and about headers claiming 90-180 MP before
# the budget refuses them; both are the behaviour under test.
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 63), data=st.data())
def test_damaged_photos_decode_or_fail_cleanly(seed: int, data: st.DataObject) -> None:
    seeds = fuzz_seeds()
    photo = bytearray(seeds[seed % len(seeds)])
    damage = data.draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if damage == "truncate":
        photo = photo[: data.draw(st.integers(0, len(photo) - 1))]
    elif damage == "flip":
        for position in data.draw(st.lists(st.integers(0, len(photo) - 1), min_size=1, max_size=16)):
            photo[position] ^= 1 << data.draw(st.integers(0, 7))
    else:
        start = data.draw(st.integers(0, len(photo) - 1))
        photo[start : start + 32] = data.draw(st.binary(min_size=1, max_size=32))
    decodes_or_refuses(bytes(photo))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
@settings(max_examples=150, deadline=None)
@given(prefix=st.sampled_from(SIGNATURES), body=st.binary(max_size=2048))
def test_random_bytes_decode_or_fail_cleanly(prefix: bytes, body: bytes) -> None:
    decodes_or_refuses(prefix + body)


def test_fuzz_seeds_are_decodable() -> None:
    """The mutations start from photos that decode, so the property explores real decoder paths."""
    for photo in fuzz_seeds():
        assert_well_formed(decode_image(photo, max_pixels=4_000_000, long_side_px=100))
