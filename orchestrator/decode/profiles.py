"""ICC profiles: converting pixels described by an embedded profile to sRGB, cheaply and safely.

lcms (through Pillow's ImageCms) decides every conversion; matrix-shaper RGB profiles, which is what
phones and cameras embed (Display P3, Adobe RGB), then run on OpenCV's vector code, checked against lcms.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import struct
import threading
from collections import OrderedDict

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms

logger = logging.getLogger(__name__)

# Profiles larger than this are ignored: real ones stay far below it (a 500 KB LUT profile is already
# rare), and lcms parses whatever it is handed.
MAX_ICC_BYTES = 2 * 1024 * 1024
_CACHE_SIZE = 32
# A transform that moves no probe colour by more than this many levels is treated as sRGB already.
_IDENTITY_TOLERANCE = 1
# The OpenCV path must agree with lcms within this many levels on every probe colour, or lcms is used.
_FAST_PATH_TOLERANCE = 2
_MAX_TAGS = 256
_STRIPE_ROWS = 32

# sqrt-coded linear light (0..255) to sRGB-coded 8-bit. One step of square-root coding moves the sRGB
# result by at most ~1.3 levels, so rounding to it costs at most ~0.7 of a level: exact to +-1 level
# without a 16-bit gather.
_LINEAR_AT_SQRT_STEPS = (np.arange(256) / 255.0) ** 2
_SQRT_TO_SRGB: NDArray[np.uint8] = (
    np.round(
        255.0
        * np.where(
            _LINEAR_AT_SQRT_STEPS <= 0.0031308,
            12.92 * _LINEAR_AT_SQRT_STEPS,
            1.055 * np.power(_LINEAR_AT_SQRT_STEPS, 1 / 2.4) - 0.055,
        )
    )
    .clip(0, 255)
    .astype(np.uint8)
)


class MatrixShaper:
    """Per-channel tone curves, then a 3x3 matrix in linear light, then sRGB encoding."""

    def __init__(self, decode: NDArray[np.float32], matrix: NDArray[np.float32]) -> None:
        self._decode = decode  # 1 x 256 x 3: 8-bit code value to linear light, per channel
        self._matrix = matrix  # source linear RGB to linear sRGB (both through D50 XYZ)

    def apply(self, rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Convert H x W x 3 source RGB to sRGB; out-of-gamut colours clip as lcms clips them."""
        out = np.empty_like(rgb)
        # Stripes keep the float32 intermediates in cache: whole-image passes are memory-bound and ~2x slower.
        for top in range(0, rgb.shape[0], _STRIPE_ROWS):
            linear = cv2.LUT(rgb[top : top + _STRIPE_ROWS], self._decode)
            mixed = cv2.transform(linear, self._matrix)
            np.maximum(mixed, 0.0, out=mixed)
            cv2.sqrt(mixed, dst=mixed)
            coded = cv2.convertScaleAbs(mixed, alpha=255.0)  # rounds and saturates at 255
            cv2.LUT(coded, _SQRT_TO_SRGB, dst=out[top : top + _STRIPE_ROWS])
        return out


Conversion = ImageCms.ImageCmsTransform | MatrixShaper


def to_srgb(pixels: NDArray[np.uint8], icc_profile: bytes) -> NDArray[np.uint8] | None:
    """Convert RGB (H x W x 3) or grey (H x W) pixels described by `icc_profile` to sRGB (H x W x 3).

    Returns None when there is nothing to do: the profile is sRGB already, unusable, or for another mode.
    """
    mode = "L" if pixels.ndim == 2 else "RGB"
    conversion = _CONVERSIONS.get(icc_profile, mode)
    if conversion is None:
        return None
    if isinstance(conversion, MatrixShaper):
        return conversion.apply(pixels)
    return np.asarray(conversion.apply(Image.fromarray(pixels)), dtype=np.uint8)


def cmyk_to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert a CMYK Pillow image to RGB through its profile when it has a usable one."""
    conversion = _CONVERSIONS.get(icc_profile, "CMYK") if icc_profile else None
    if isinstance(conversion, ImageCms.ImageCmsTransform):
        return conversion.apply(image)
    # Without a profile, Pillow's naive inversion; press profiles vary too much to guess one.
    return image.convert("RGB")


def lab_to_srgb(image: Image.Image) -> Image.Image:
    """Convert a Pillow LAB image (CIELab TIFFs) to sRGB; Pillow's plain convert() does not."""
    return _lab_transform().apply(image)


@functools.cache
def _lab_transform() -> ImageCms.ImageCmsTransform:
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
    return ImageCms.buildTransform(
        lab, _srgb(), "LAB", "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
    )


class _ConversionCache:
    """Conversions keyed by a digest of the profile and the pixel mode, least recently used dropped first.

    Building one costs milliseconds (about 66 ms for the 500 KB test profile) and phones reuse a handful
    of profiles, so each is built once per worker. Keys are digests, so no profile bytes are kept.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[bytes, str], Conversion | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, icc_profile: bytes, mode: str) -> Conversion | None:
        """The conversion from `icc_profile` in `mode` to sRGB, or None when there is nothing to do."""
        if len(icc_profile) > MAX_ICC_BYTES:
            logger.debug("ignoring an ICC profile of %d bytes", len(icc_profile))
            return None
        key = (hashlib.blake2b(icc_profile, digest_size=16).digest(), mode)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        conversion = _build(icc_profile, mode)
        with self._lock:
            self._entries[key] = conversion
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return conversion


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _build(icc_profile: bytes, mode: str) -> Conversion | None:
    """lcms's transform, replaced by None when it changes nothing or by MatrixShaper when that matches it."""
    probe = _probe(mode) if mode != "CMYK" else None
    # Only the calls into lcms, which parses the untrusted profile, are guarded: a fault in Shine's own
    # code below must surface, not quietly drop the photo's profile.
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        # Relative colorimetric keeps in-gamut colours (all skin tones) exact; perceptual may shift them.
        transform = ImageCms.buildTransform(
            source, _srgb(), mode, "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
        if probe is None:
            return transform
        converted = transform.apply(Image.fromarray(probe))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile (say, a CMYK profile on an RGB image) must not lose a good photo.
        logger.debug("ignoring an unusable ICC profile")
        return None
    reference = np.asarray(converted, dtype=np.int16)
    identity = probe if mode == "RGB" else np.repeat(probe[:, :, np.newaxis], 3, axis=2)
    if np.abs(reference - identity.astype(np.int16)).max() <= _IDENTITY_TOLERANCE:
        return None  # an sRGB profile: converting would cost time and change nothing
    if mode == "RGB":
        fast = _matrix_shaper(icc_profile, source)
        if fast is not None and np.abs(fast.apply(probe) - reference).max() <= _FAST_PATH_TOLERANCE:
            return fast
    return transform


@functools.cache
def _probe(mode: str) -> NDArray[np.uint8]:
    """Colours to compare conversions on: a 17-step RGB cube, or all 256 greys."""
    if mode == "L":
        return np.arange(256, dtype=np.uint8).reshape(1, 256)
    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1)
    return np.ascontiguousarray(cube.reshape(1, -1, 3))


def _matrix_shaper(icc_profile: bytes, source: ImageCms.ImageCmsProfile) -> MatrixShaper | None:
    """Read an RGB matrix-shaper profile's tone curves and colorants; None for any other kind."""
    core = source.profile
    if not core.is_matrix_shaper or core.xcolor_space.strip() != "RGB":
        return None
    colorants = (core.red_colorant, core.green_colorant, core.blue_colorant)
    srgb = _srgb().profile
    srgb_colorants = (srgb.red_colorant, srgb.green_colorant, srgb.blue_colorant)
    if any(c is None for c in colorants + srgb_colorants):
        return None
    to_xyz = np.array([c[0] for c in colorants], dtype=np.float64).T  # type: ignore[index]
    srgb_to_xyz = np.array([c[0] for c in srgb_colorants], dtype=np.float64).T  # type: ignore[index]
    tags = _tag_table(icc_profile)
    curves = [_tone_curve(tags.get(name, b"")) for name in (b"rTRC", b"gTRC", b"bTRC")]
    if any(curve is None for curve in curves):
        return None
    decode = np.stack([c for c in curves if c is not None], axis=-1).reshape(1, 256, 3).astype(np.float32)
    matrix = (np.linalg.inv(srgb_to_xyz) @ to_xyz).astype(np.float32)
    return MatrixShaper(decode, matrix)


def _tag_table(icc_profile: bytes) -> dict[bytes, bytes]:
    """The profile's tags by signature (ICC.1 section 7.3); empty when the table is malformed."""
    try:
        (count,) = struct.unpack_from(">I", icc_profile, 128)
        tags = {}
        for index in range(min(count, _MAX_TAGS)):
            signature, offset, size = struct.unpack_from(">4sII", icc_profile, 132 + 12 * index)
            tags[signature] = icc_profile[offset : offset + size]
        return tags
    except struct.error:
        return {}


def _tone_curve(tag: bytes) -> NDArray[np.float64] | None:
    """Evaluate a `curv` or `para` tone curve (ICC.1 10.6, 10.18) at the 256 8-bit code values."""
    x = np.arange(256, dtype=np.float64) / 255.0
    try:
        if tag[:4] == b"curv":
            (count,) = struct.unpack_from(">I", tag, 8)
            if count == 0:
                return x
            if count == 1:
                return np.power(x, struct.unpack_from(">H", tag, 12)[0] / 256.0)
            table = np.frombuffer(tag, dtype=">u2", count=count, offset=12) / 65535.0
            return np.interp(x * (count - 1), np.arange(count), table)
        if tag[:4] == b"para":
            (function,) = struct.unpack_from(">H", tag, 8)
            arity = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(function)
            if arity is None:
                return None
            params = [value / 65536.0 for value in struct.unpack_from(f">{arity}i", tag, 12)]
            return _parametric(x, function, params + [0.0] * (7 - arity))
    except (struct.error, ValueError):
        return None
    return None


def _parametric(x: NDArray[np.float64], function: int, params: list[float]) -> NDArray[np.float64]:
    """ICC parametric curve types 0-4 from parameters g, a, b, c, d, e, f; clipped to 0..1 as lcms does."""
    g, a, b, c, d, e, f = params
    if function == 0:
        return np.clip(np.power(x, g), 0.0, 1.0)
    base = np.power(np.clip(a * x + b, 0.0, None), g)
    threshold = -b / a if a else -np.inf
    if function == 1:
        y = np.where(x >= threshold, base, 0.0)
    elif function == 2:
        y = np.where(x >= threshold, base + c, c)
    elif function == 3:
        y = np.where(x >= d, base, c * x)
    else:
        y = np.where(x >= d, base + e, c * x + f)
    return np.clip(y, 0.0, 1.0)


_CONVERSIONS = _ConversionCache(_CACHE_SIZE)
