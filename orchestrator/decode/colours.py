"""Colour modes of decoded uploads: any Pillow mode to 8-bit sRGB RGB, compositing alpha, flagging grey.

Skin tone, redness and exposure are measured on sRGB values, so every source is brought there first;
embedded ICC profiles are handled by `profiles`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from orchestrator.decode import profiles
from orchestrator.errors import UnsupportedFormat

logger = logging.getLogger(__name__)

# Transparent pixels become this neutral mid-grey. It has no chroma (a* = b* = 0; YCrCb Cr = 128, well
# below the ~133-173 band skin occupies), so it can neither pass for skin nor tint colour statistics,
# and at mid luminance it pushes exposure towards neither black nor white, as a black or white fill would.
NEUTRAL_BACKGROUND: tuple[int, int, int] = (128, 128, 128)

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


@dataclass(frozen=True)
class FlatImage:
    """A decoded picture flattened to RGB or L (alpha composited, CMYK converted), not yet in sRGB."""

    image: Image.Image  # mode "RGB" or "L", stored orientation
    icc_profile: bytes | None  # the RGB or grey profile still to apply by `to_srgb`
    grayscale: bool  # the source carried no colour
    had_alpha: bool  # some pixel was transparent and now shows NEUTRAL_BACKGROUND


def flatten(image: Image.Image) -> FlatImage:
    """Bring a loaded Pillow image of any mode to RGB or L, compositing alpha onto NEUTRAL_BACKGROUND.

    CMYK is converted here (through its profile when it has one); RGB and grey profiles are left for
    `to_srgb`, which runs after any resize, where it costs a fraction as much.
    Raises UnsupportedFormat for colour modes with no RGB meaning; Pillow's decoder errors pass through.
    """
    grayscale = image.mode in _GREY_MODES or (image.mode in ("P", "PA") and _palette_is_grey(image))
    icc_profile = image.info.get("icc_profile")
    if not isinstance(icc_profile, bytes) or not icc_profile:
        icc_profile = None
    image = _normalise_mode(image)
    had_alpha = False
    if image.mode in ("RGBA", "LA"):
        image, had_alpha = _composite(image)
    if image.mode == "CMYK":
        image = profiles.cmyk_to_srgb(image, icc_profile)
        icc_profile = None
    return FlatImage(image=image, icc_profile=icc_profile, grayscale=grayscale, had_alpha=had_alpha)


def to_srgb(pixels: NDArray[np.uint8], icc_profile: bytes | None) -> NDArray[np.uint8]:
    """Convert flattened RGB (H x W x 3) or grey (H x W) pixels to sRGB RGB (H x W x 3).

    Pixels without a profile are taken as sRGB already, as browsers and phones take them.
    """
    if icc_profile is not None:
        converted = profiles.to_srgb(pixels, icc_profile)
        if converted is not None:
            return converted
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, np.newaxis], 3, axis=2)
    return pixels


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Reduce Pillow's many modes to RGB, RGBA, L, LA or CMYK, keeping any transparency as alpha."""
    mode = image.mode
    if mode in ("RGB", "L") and "transparency" in image.info:
        return image.convert(mode + "A")  # a tRNS colour key is transparency too
    if mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return image
    if mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode in ("PA", "RGBa"):
        return image.convert("RGBA")
    if mode == "La":
        return image.convert("LA")
    if mode == "1":
        return image.convert("L")
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit greys keep their high byte; Pillow's own conversion clips everything above 255 to white.
        wide = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8))
    if mode == "F":
        return image.convert("L")
    if mode == "LAB":
        return profiles.lab_to_srgb(image)
    try:
        return image.convert("RGB")  # RGBX, YCbCr, HSV
    except ValueError as exc:
        raise UnsupportedFormat(f"Images in colour mode {mode} are not supported.") from exc


def _composite(image: Image.Image) -> tuple[Image.Image, bool]:
    """Flatten RGBA/LA onto the neutral background; says whether any pixel was actually transparent."""
    base_mode = image.mode[:-1]
    alpha = image.getchannel("A")
    opaque = image.convert(base_mode)
    lowest_alpha = alpha.getextrema()[0]
    if not isinstance(lowest_alpha, int) or lowest_alpha >= 255:
        return opaque, False
    fill = NEUTRAL_BACKGROUND if base_mode == "RGB" else NEUTRAL_BACKGROUND[0]
    background = Image.new(base_mode, image.size, fill)
    background.paste(opaque, mask=alpha)
    return background, True


def _palette_is_grey(image: Image.Image) -> bool:
    """True when every palette entry is a grey (r == g == b)."""
    palette = image.getpalette()
    if not palette:
        return False
    entries = np.asarray(palette[: len(palette) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
    return bool(np.all(entries == entries[:, :1]))
