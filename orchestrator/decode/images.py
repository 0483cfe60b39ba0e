"""Uploaded bytes to an upright sRGB array: the decode stage of the pipeline.

Owns reduced-size decoding, EXIF orientation and the output contract; format recognition and the pixel
budget live in `formats`, colour modes and alpha in `colours`, ICC profiles in `profiles`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from orchestrator.decode import colours, formats

logger = logging.getLogger(__name__)

# JPEG's DCT scaling can decode at 1/2, 1/4 or 1/8 size for almost no extra cost.
_JPEG_REDUCTIONS = (8, 4, 2)
_EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded to an upright RGB array, with what the decoder learned about it."""

    rgb: NDArray[np.uint8]  # H x W x 3, C-contiguous, read-only, sRGB, upright (EXIF orientation applied)
    format: str  # Pillow's name: "JPEG", "PNG", "WEBP", "HEIF", "AVIF", "BMP", "TIFF", "MPO", "GIF"
    width_px: int  # full size of the upright image as stored (before any reduced decode)
    height_px: int
    scale: float  # decoded pixels per full-size pixel: 1.0; 1/2, 1/4, 1/8 for reduced JPEG; else the resize
    exif_orientation: int  # 1..8 as the file declared it (1 when absent)
    grayscale: bool  # the source carried no colour (L, LA, 1, I, grey palette, grayscale JPEG)
    had_alpha: bool  # transparent pixels were composited onto the neutral background


def decode_image(data: bytes, *, max_pixels: int, long_side_px: int) -> DecodedImage:
    """Decode an upload to an upright sRGB array whose long side is about `long_side_px` at most.

    JPEGs are decoded at the largest 1/2, 1/4 or 1/8 reduction that keeps the long side at least
    `long_side_px` (so up to twice it); other formats are decoded in full and resized to `long_side_px`.
    Raises InvalidImage, UnsupportedFormat, ImageTooLargePixels.
    """
    image = formats.open_image(data, max_pixels=max_pixels)
    with image:
        image_format = str(image.format)
        stored_width, stored_height = image.size
        reduction = _reduce_on_decode(image, long_side_px)
        orientation = _declared_orientation(image)
        # Only the calls that read the file are guarded; after load() the pixels are in memory, and what
        # fails from here on is Shine's own code, which must fail as itself.
        with formats.reading(image_format):
            image.load()
        # Some loaders turn the picture upright themselves and drop the tag (HEIF always, Pillow's TIFF
        # loader too); applying the orientation again would turn it twice.
        upright = image_format == "HEIF" or _exif_orientation(image) != orientation
        reduced, factor = _box_reduce(image, long_side_px)
        reduction *= factor
        flat = colours.flatten(reduced)
        pixels: NDArray[np.uint8] = np.asarray(flat.image, dtype=np.uint8)
    if image_format not in ("JPEG", "MPO") or max(pixels.shape[:2]) > 2 * long_side_px:
        # A JPEG's DCT reduction already lands within 2x of the target; anything else is resized.
        pixels = _shrink(pixels, long_side_px)
    rgb = colours.to_srgb(pixels, flat.icc_profile)
    if not upright:
        rgb = _make_upright(rgb, orientation)
    rgb = np.ascontiguousarray(rgb)
    # One decoded array feeds every later stage; read-only keeps one stage from altering it for the rest.
    rgb.flags.writeable = False
    scale = _scale(max(rgb.shape[:2]), max(stored_width, stored_height), reduction)
    # Openers whose loader turns the picture upright report the upright size already.
    sideways = orientation >= 5 and not upright
    width_px, height_px = (stored_height, stored_width) if sideways else (stored_width, stored_height)
    logger.debug("decoded %s %dx%d at scale %.3f", image_format, width_px, height_px, scale)
    return DecodedImage(
        rgb=rgb,
        format=image_format,
        width_px=width_px,
        height_px=height_px,
        scale=scale,
        exif_orientation=orientation,
        grayscale=flat.grayscale,
        had_alpha=flat.had_alpha,
    )


def _reduce_on_decode(image: Image.Image, long_side_px: int) -> int:
    """Ask the decoder for a smaller picture where the format allows it; returns the JPEG reduction."""
    width, height = image.size
    long_side = max(width, height)
    if long_side <= long_side_px:
        return 1
    if image.format in ("JPEG", "MPO"):
        for reduction in _JPEG_REDUCTIONS:
            if -(-long_side // reduction) >= long_side_px:
                # Pillow picks min(width // w, height // h) as the DCT scale, so ask for floor sizes.
                with formats.reading(str(image.format)):
                    result = image.draft(None, (max(1, width // reduction), max(1, height // reduction)))
                if result is None:
                    return 1
                return max(1, round(width / result[1][2]))
        return 1
    if image.format == "HEIF":
        # pillow-heif decodes an embedded thumbnail instead when one is at least this large.
        target = max(1, width * long_side_px // long_side), max(1, height * long_side_px // long_side)
        with formats.reading("HEIF"):
            image.draft(None, target)
    return 1


def _scale(decoded_long_side: int, stored_long_side: int, reduction: int) -> float:
    """Decoded pixels per full-size pixel: exactly 1/reduction when only integer reductions happened."""
    # Both the JPEG DCT scaling and Pillow's reduce() round partial blocks up.
    if reduction > 1 and decoded_long_side == -(-stored_long_side // reduction):
        return 1.0 / reduction
    return decoded_long_side / stored_long_side


def _box_reduce(image: Image.Image, long_side_px: int) -> tuple[Image.Image, int]:
    """Average whole blocks of a large decoded image so later copies (alpha, colour) cost a fraction.

    The largest integer factor that keeps the long side at least `long_side_px`; an integer box average
    is what INTER_AREA does for such factors, and Pillow premultiplies alpha when it reduces RGBA.
    """
    factor = max(image.size) // long_side_px
    # Palette indices and colour-key transparency cannot be averaged; those images are converted first.
    if factor < 2 or image.mode not in ("RGB", "RGBA", "L", "LA", "CMYK") or "transparency" in image.info:
        return image, 1
    return image.reduce(factor), factor


def _declared_orientation(image: Image.Image) -> int:
    """The EXIF orientation the file declares, 1..8; 1 when absent, unreadable or out of range."""
    if image.format == "HEIF":
        # libheif applies the irot/imir boxes and pillow-heif resets the EXIF tag to 1, keeping the
        # file's value here.
        value = image.info.get("original_orientation")
        return value if isinstance(value, int) and 1 <= value <= 8 else 1
    return _exif_orientation(image)


def _exif_orientation(image: Image.Image) -> int:
    """The orientation tag of the image's EXIF as Pillow holds it now, 1..8; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except formats.DECODER_ERRORS:
        # Broken EXIF is common from phone editors; the pixels are still good.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _shrink(pixels: NDArray[np.uint8], long_side_px: int) -> NDArray[np.uint8]:
    """Resize to a long side of `long_side_px`, averaging areas (no aliasing); smaller ones pass through."""
    height, width = pixels.shape[:2]
    long_side = max(height, width)
    if long_side <= long_side_px:
        return pixels
    size = (max(1, round(width * long_side_px / long_side)), max(1, round(height * long_side_px / long_side)))
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _make_upright(rgb: NDArray[np.uint8], orientation: int) -> NDArray[np.uint8]:
    """Apply EXIF orientation 2..8 (the same transposes as Pillow's exif_transpose); 1 passes through."""
    if orientation == 2:
        out = cv2.flip(rgb, 1)
    elif orientation == 3:
        out = cv2.rotate(rgb, cv2.ROTATE_180)
    elif orientation == 4:
        out = cv2.flip(rgb, 0)
    elif orientation == 5:
        out = cv2.transpose(rgb)
    elif orientation == 6:
        out = cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        out = cv2.flip(cv2.transpose(rgb), -1)
    elif orientation == 8:
        out = cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    else:
        return rgb
    return np.asarray(out, dtype=np.uint8)
