"""The upload formats Shine accepts: recognising them from their bytes and opening them lazily with Pillow.

Opening reads headers only; no pixel data is decoded here, so the pixel budget can be checked first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import struct
import zlib
from collections.abc import Iterator

import pillow_heif
from PIL import Image, UnidentifiedImageError

from orchestrator.errors import ImageTooLargePixels, InvalidImage, UnsupportedFormat

logger = logging.getLogger(__name__)

# The formats a decoded image can report (Pillow's names).
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "AVIF", "HEIF", "GIF", "BMP", "TIFF")
# Pillow openers tried, in this order. AVIF precedes HEIF because both live in an ISO-BMFF `ftyp` box:
# Pillow's libavif plugin claims AV1-coded files and pillow-heif (built without an AV1 decoder) the
# HEVC-coded rest. MPO has no opener of its own: the JPEG opener returns multi-picture files as MPO.
_OPENERS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "GIF", "BMP", "TIFF")

# Exceptions Pillow and its plugins raise on malformed input. Decoders of untrusted bytes fail in many
# ways (Pillow's TIFF reader raises TypeError for missing dimensions, pillow-heif RuntimeError for
# libheif's "other" errors), so inside a call into them each of these means "this file is broken".
# Caught around those calls only (`reading`), never around Shine's own code: a bug there must surface
# as itself, a logged 500 INTERNAL that the fuzz tests see, not as a corrupt upload.
DECODER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,
    EOFError,
    LookupError,
    ArithmeticError,
    TypeError,
    RuntimeError,
    struct.error,
    zlib.error,
)

# Signatures of formats Shine recognises but does not accept, beyond those Pillow has plugins for.
_FOREIGN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"<?xml", "XML/SVG"),
    (b"<svg", "SVG"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
)

# Progressive JPEGs decode once per scan, so thousands of tiny scans make a small file cost seconds.
# Encoders write about 10 (mozjpeg up to ~20); 0xFFDA cannot occur inside entropy-coded data.
_MAX_JPEG_SCANS = 100


@functools.cache
def _register_heif_opener() -> None:
    """Teach Pillow to open HEIF once per process; registering is global, so never per call."""
    # Depth maps and auxiliary images are never used; thumbnails stay on so draft() can pick one.
    pillow_heif.register_heif_opener(depth_images=False, aux_images=False, thumbnails=True)


def configure_decoders(max_pixels: int) -> None:
    """Register the HEIF opener and tie Pillow's decompression-bomb guard to `max_pixels`; call at start-up.

    Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; with both tied to Shine's budget
    its guard and `open_image`'s check agree on what is too large.
    """
    _register_heif_opener()
    Image.MAX_IMAGE_PIXELS = max_pixels


@contextlib.contextmanager
def reading(format_name: str) -> Iterator[None]:
    """Wrap a call into the image libraries that reads the file's bytes: what they raise on malformed
    input becomes InvalidImage. Raises InvalidImage."""
    try:
        yield
    except DECODER_ERRORS as exc:
        raise InvalidImage(f"The {format_name} data is truncated or corrupt.") from exc


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Identify `data` from its bytes and open it lazily (headers only), refusing more than `max_pixels`.

    Raises InvalidImage, UnsupportedFormat, ImageTooLargePixels.
    """
    _register_heif_opener()
    if not data:
        raise InvalidImage("The upload is empty.")
    try:
        image = Image.open(io.BytesIO(data), formats=_OPENERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired while reading the header (e.g. a 44-byte GIF declaring 4 gigapixels).
        raise ImageTooLargePixels(f"The image has more pixels than the limit of {max_pixels:,}.") from exc
    except UnidentifiedImageError as exc:
        foreign = _foreign_format(data)
        if foreign is not None:
            raise UnsupportedFormat(
                f"{foreign} files are not supported; send JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF, BMP or TIFF."
            ) from exc
        raise InvalidImage(_corrupt_message(data)) from exc
    except DECODER_ERRORS as exc:
        raise InvalidImage(_corrupt_message(data)) from exc
    try:
        _check_header(image, data, max_pixels)
    except Exception:
        image.close()
        raise
    return image


def _check_header(image: Image.Image, data: bytes, max_pixels: int) -> None:
    """Refuse, before any pixel is decoded, what is too large or too costly to decode."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(_corrupt_message(data))
    if width * height > max_pixels:
        raise ImageTooLargePixels(
            f"The image is {width}x{height} ({width * height:,} pixels); the limit is {max_pixels:,} pixels."
        )
    if image.format in ("JPEG", "MPO") and data.count(b"\xff\xda") > _MAX_JPEG_SCANS:
        raise InvalidImage(f"The JPEG has more than {_MAX_JPEG_SCANS} scans; re-save it as a plain JPEG.")


def _claimed_format(data: bytes) -> str | None:
    """Name the accepted format `data` claims to be by its signature, or None; used to word errors."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brands = {head[i : i + 4] for i in range(8, len(head) - 3, 4)}
        if brands & {b"avif", b"avis"}:
            return "AVIF"
        if brands & {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}:
            return "HEIF"
    return None


def _foreign_format(data: bytes) -> str | None:
    """Name a recognised but unaccepted format (PSD, ICO, PDF...), or None when `data` is no known image."""
    if _claimed_format(data) is not None:
        return None  # claims to be an accepted format, so it is a broken one, not a foreign one
    for signature, name in _FOREIGN_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp":
        # ISO media that is not HEIF or AVIF: MP4 and MOV video, Canon CR3 raw, JPEG XL...
        brand = "".join(c if c.isascii() and c.isalnum() else "?" for c in data[8:12].decode("latin-1"))
        return f"ISO media ({brand})"
    prefix = data[:16]
    Image.init()
    for name in Image.ID:
        if name in _OPENERS:
            continue
        _, accept = Image.OPEN[name]
        # Only plugins with a signature test count: the rest would claim any bytes at all.
        if accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except DECODER_ERRORS:
            continue
    return None


def _corrupt_message(data: bytes) -> str:
    """Word an InvalidImage message from the claimed format, never from the decoder's own text."""
    claimed = _claimed_format(data)
    if claimed is None:
        return "The file is not a recognisable image."
    return f"The {claimed} data is truncated or corrupt."
