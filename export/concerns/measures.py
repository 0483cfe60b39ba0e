"""Concern measures on one fixed-scale skin patch (orchestrator/face/patches.py), as fixed TensorFlow ops
so they can join the served graph: every filter is a Gaussian or Gaussian derivative whose width is set
in millimetres and turned into pixels by the concern's fixed pixels per millimetre.

Inputs are a batch of patches' sRGB [B, H, W, 3] (0-255, float32) and their skin masks [B, H, W] (0/1,
float32), each patch filled out to its square as serving/contract.py says; every measure answers one
value per patch [B]. A statistic is read only where the filter's neighbourhood is skin ("sure skin"), so
an eye, a brow or a glasses frame cut out beside the zone never reads as a line or a spot at its edge.
The served model (export/model.py) and the design runs (zones.py) call these same functions.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from export.colour import srgb_to_lab
from export.filters import gaussian_kernel
from serving import contract

# Wrinkle responses are read at these Gaussian scales (mm): a line's width is about 2.5 sigma at the
# Hessian's best response (Lindeberg 1998), so 0.8-2.5 mm covers lines and folds about 2-6 mm wide.
WRINKLE_SIGMAS_MM: tuple[float, ...] = (0.8, 1.2, 1.8, 2.5)
# The responses each scale gives (see wrinkle_responses); the design run picks one on the training part.
WRINKLE_KINDS: tuple[str, ...] = ("line", "across", "hxx", "hyy")
# Responses over all scales at once: "acrossmax" takes each pixel's strongest scale (Frangi-style
# scale selection), "acrossdeep" the mean of the strongest quarter of the pixels' acrossmax (the deepest
# lines of the zone, not diluted by its smooth skin).
WRINKLE_MULTISCALE: tuple[str, ...] = ("acrossmax", "acrossdeep")
DEEP_SHARE = 0.25
# Statistics are read where the neighbourhood at this scale (mm) is skin.
WRINKLE_SURE_SKIN_MM = 1.2
# A pixel is sure skin when this share of its Gaussian neighbourhood (at the filter's scale) is skin.
SURE_SKIN_SHARE = 0.9
# Dark spots: L* at SPOT_SIGMA_MM against the skin-weighted surround at SURROUND_SIGMA_MM; a pixel is
# in a spot by how far it is darker than its surround (0 at SPOT_MIN_DARKER_L, fully at
# SPOT_FULL_DARKER_L) when it is not redder by more than SPOT_MAX_REDDER_A (a red papule is not a
# pigment spot). SPOT_SIGMA_MM matches a spot about 4 mm across (a Gaussian answers best to a disc of
# about 2.8 sigma), the middle of lentigines' 2-6 mm; finer smoothing follows JPEG blocks and
# resampling (on the training part's 90% re-sends 1.0 mm kept 86% of severities, 1.5 mm 94%).
SPOT_SIGMA_MM, SURROUND_SIGMA_MM = 1.5, 5.0
SPOT_MIN_DARKER_L, SPOT_FULL_DARKER_L, SPOT_MAX_REDDER_A = 2.0, 8.0, 3.0
# Shine: brighter than the patch's median skin L* by this much and less saturated (a specular
# reflection is whiter than skin).
SHINE_MIN_BRIGHTER_L = 10.0
# Pores: dark blobs at this scale (a Gaussian of sigma s answers best to a disc of diameter 2.8 s,
# so 0.1 mm picks pores about 0.3 mm across), deeper than PORE_MIN_DEPTH_L.
PORE_SIGMA_MM, PORE_MIN_DEPTH_L = 0.1, 2.0


def to_lab(rgb: tf.Tensor) -> tf.Tensor:
    """sRGB [..., 3] -> CIELAB [..., 3]."""
    shape = tf.shape(rgb)
    planes = tf.transpose(tf.reshape(rgb, [-1, 3]))
    return tf.reshape(tf.transpose(srgb_to_lab(planes)), shape)


def _conv(plane: tf.Tensor, kernel_y: np.ndarray, kernel_x: np.ndarray) -> tf.Tensor:
    """Separable correlation of [B, H, W] with mirrored borders (the patch edge is not a dark frame)."""
    ry, rx = len(kernel_y) // 2, len(kernel_x) // 2
    x = tf.pad(plane[..., None], [[0, 0], [ry, ry], [rx, rx], [0, 0]], mode="SYMMETRIC")
    x = tf.nn.conv2d(x, kernel_y.astype(np.float32).reshape(-1, 1, 1, 1), 1, "VALID")
    x = tf.nn.conv2d(x, kernel_x.astype(np.float32).reshape(1, -1, 1, 1), 1, "VALID")
    return x[..., 0]


def gaussian(plane: tf.Tensor, sigma_px: float) -> tf.Tensor:
    g = gaussian_kernel(sigma_px, 0)
    return _conv(plane, g, g)


def sure_skin(skin: tf.Tensor, sigma_px: float) -> tf.Tensor:
    """1 where at least SURE_SKIN_SHARE of the Gaussian neighbourhood is skin, else 0."""
    return tf.cast((gaussian(skin, sigma_px) >= SURE_SKIN_SHARE) & (skin > 0.5), tf.float32)


def hessian(lightness: tf.Tensor, sigma_px: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Scale-normalised second derivatives (xx, yy, xy) of planes at sigma_px, in their own units."""
    g0, g1, g2 = (gaussian_kernel(sigma_px, order) for order in (0, 1, 2))
    return _conv(lightness, g0, g2), _conv(lightness, g2, g0), _conv(lightness, g1, g1)


def _sum(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(values, axis=[1, 2])


def _masked_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(_sum(values * weights), _sum(weights))


def _valley_kinds(lightness: tf.Tensor, sigma_px: float) -> dict[str, tf.Tensor]:
    """Dark-valley responses at one scale, from the Hessian's eigenvalues (across >= along):
    line: across - |along|, floored at 0 (a valley curves one way, a pit both);
    across: the larger eigenvalue, floored at 0 (valleys of any shape);
    hxx: the second derivative along the face's horizontal axis, floored at 0 (valleys running within
    45 degrees of the face's vertical, and pits); hyy: the same along its vertical axis.
    The face frame is levelled on the eyes, so the axes are the face's own."""
    hxx, hyy, hxy = hessian(lightness, sigma_px)
    mean = 0.5 * (hxx + hyy)
    spread = tf.sqrt(0.25 * (hxx - hyy) ** 2 + hxy * hxy)
    across, along = mean + spread, mean - spread
    return {
        "line": tf.nn.relu(across - tf.abs(along)),
        "across": tf.nn.relu(across),
        "hxx": tf.nn.relu(hxx),
        "hyy": tf.nn.relu(hyy),
    }


def line_strength(
    rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float, response: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """(mean of one valley response over each patch's sure skin, sure-skin pixels): `response` is a kind
    and a scale in mm, as the design run chose it ("across1.2")."""
    kind = response.rstrip("0123456789.")
    sigma = float(response[len(kind) :])
    weights = sure_skin(skin, WRINKLE_SURE_SKIN_MM * px_per_mm)
    values = _valley_kinds(to_lab(rgb)[..., 0], sigma * px_per_mm)[kind]
    return _masked_mean(values, weights), _sum(weights)


def wrinkle_responses(rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float) -> dict[str, tf.Tensor]:
    """Every candidate response of the design run, per patch: each kind (see _valley_kinds) at each of
    WRINKLE_SIGMAS_MM ("hxx1.2"...), the multiscale ones (WRINKLE_MULTISCALE), and "pixels", the
    sure-skin count."""
    lightness = to_lab(rgb)[..., 0]
    weights = sure_skin(skin, WRINKLE_SURE_SKIN_MM * px_per_mm)
    out = {"pixels": _sum(weights)}
    strongest = tf.zeros_like(lightness)
    for sigma in WRINKLE_SIGMAS_MM:
        kinds = _valley_kinds(lightness, sigma * px_per_mm)
        for kind in WRINKLE_KINDS:
            out[f"{kind}{sigma:g}"] = _masked_mean(kinds[kind], weights)
        strongest = tf.maximum(strongest, kinds["across"])
    out["acrossmax"] = _masked_mean(strongest, weights)
    out["acrossdeep"] = tf.map_fn(
        lambda pair: _top_mean(pair[0], pair[1], DEEP_SHARE),
        (strongest, weights),
        fn_output_signature=tf.float32,
    )
    return out


def _top_mean(values: tf.Tensor, weights: tf.Tensor, share: float) -> tf.Tensor:
    """Mean of the largest `share` of one patch's `values` where `weights` > 0.5 (0 when there are none)."""
    chosen = tf.sort(tf.boolean_mask(values, weights > 0.5), direction="DESCENDING")
    count = tf.maximum(tf.cast(tf.math.ceil(share * tf.cast(tf.size(chosen), tf.float32)), tf.int32), 1)
    top = chosen[:count]
    return tf.cond(tf.size(chosen) > 0, lambda: tf.reduce_mean(top), lambda: tf.constant(0.0))


def masked_median(values: tf.Tensor, skin: tf.Tensor) -> tf.Tensor:
    """Median of each plane [B, H, W] over its skin pixels (the upper middle of an even count; 0 for an
    empty mask)."""
    flat = tf.reshape(values, [tf.shape(values)[0], -1])
    flat_skin = tf.reshape(skin, [tf.shape(skin)[0], -1]) > 0.5
    # Not-skin pixels sort last; the median is the middle of the skin pixels that come first.
    ordered = tf.sort(tf.where(flat_skin, flat, tf.fill(tf.shape(flat), 1e9)), axis=1)
    count = tf.reduce_sum(tf.cast(flat_skin, tf.int32), axis=1)
    middle = tf.gather(ordered, count // 2, axis=1, batch_dims=1)
    return tf.where(count > 0, middle, tf.zeros_like(middle))


def individual_typology_angle(lab: tf.Tensor) -> tf.Tensor:
    """ITA = atan2(L* - 50, b*) in degrees per pixel (Chardon et al., Int J Cosmet Sci 13, 1991): lower
    is darker or browner skin."""
    return tf.atan2(lab[..., 0] - 50.0, lab[..., 2]) * (180.0 / np.pi)


def colour(rgb: tf.Tensor, skin: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per patch: mean a*, median L* and median ITA of the skin, its specular highlight pixels ("shine":
    brighter than the median skin L* by SHINE_MIN_BRIGHTER_L and of lower chroma than its mean) and its
    skin pixels."""
    lab = to_lab(rgb)
    median_l = masked_median(lab[..., 0], skin)
    chroma = tf.sqrt(lab[..., 1] ** 2 + lab[..., 2] ** 2)
    median_chroma = _masked_mean(chroma, skin)
    shine = tf.cast(
        (lab[..., 0] >= (median_l + SHINE_MIN_BRIGHTER_L)[:, None, None])
        & (chroma < median_chroma[:, None, None]),
        tf.float32,
    )
    return {
        "lab_a": _masked_mean(lab[..., 1], skin),
        "median_l": median_l,
        "median_ita": masked_median(individual_typology_angle(lab), skin),
        "shine": _sum(shine * skin),
        "skin": _sum(skin),
    }


def dark_spot_pixels(rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(spot weight, sure-skin pixels) per patch: each sure-skin pixel weighs how far (in L*, past
    SPOT_MIN_DARKER_L, up to SPOT_FULL_DARKER_L) it is darker than the skin around it, unless it is
    redder than that skin by more than SPOT_MAX_REDDER_A. A ramp, not a step, so re-encoding noise
    near the threshold moves the measure a little, not by whole pixels."""
    lab = to_lab(rgb)
    light = gaussian(lab[..., 0], SPOT_SIGMA_MM * px_per_mm)
    red = gaussian(lab[..., 1], SPOT_SIGMA_MM * px_per_mm)
    surround_w = gaussian(skin, SURROUND_SIGMA_MM * px_per_mm)
    surround_l = tf.math.divide_no_nan(
        gaussian(lab[..., 0] * skin, SURROUND_SIGMA_MM * px_per_mm), surround_w
    )
    surround_a = tf.math.divide_no_nan(
        gaussian(lab[..., 1] * skin, SURROUND_SIGMA_MM * px_per_mm), surround_w
    )
    weights = sure_skin(skin, SPOT_SIGMA_MM * px_per_mm * 2.0)
    depth = (surround_l - light - SPOT_MIN_DARKER_L) / (SPOT_FULL_DARKER_L - SPOT_MIN_DARKER_L)
    spot = tf.clip_by_value(depth, 0.0, 1.0) * tf.cast(red - surround_a <= SPOT_MAX_REDDER_A, tf.float32)
    return _sum(spot * weights), _sum(weights)


def pore_share(rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float) -> tf.Tensor:
    """Share of each patch's sure skin on a dark blob of PORE_SIGMA_MM deeper than PORE_MIN_DEPTH_L (the
    scale-normalised Laplacian of L*, positive in a dark pit)."""
    lightness = to_lab(rgb)[..., 0]
    sigma = PORE_SIGMA_MM * px_per_mm
    g0, g2 = gaussian_kernel(sigma, 0), gaussian_kernel(sigma, 2)
    laplacian = _conv(lightness, g0, g2) + _conv(lightness, g2, g0)
    weights = sure_skin(skin, sigma * 3.0)
    return _masked_mean(tf.cast(laplacian >= PORE_MIN_DEPTH_L, tf.float32), weights)


def group_measures(
    group: str, rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float, wrinkle_response: str
) -> dict[str, tf.Tensor]:
    """The contract's zone measures (contract.ZONE_MEASURES) of one patch group's patches, each [B]."""
    if group == "wrinkles":
        lines, pixels = line_strength(rgb, skin, px_per_mm, wrinkle_response)
        return {"lines": lines, "line_pixels": pixels}
    if group == "colour":
        return colour(rgb, skin)
    if group == "dark_spots":
        spots, pixels = dark_spot_pixels(rgb, skin, px_per_mm)
        return {"spots": spots, "spot_pixels": pixels}
    if group == "pores":
        return {"pores": pore_share(rgb, skin, px_per_mm)}
    raise ValueError(f"unknown patch group {group!r}")


# Pixels around its skin a slot's measures read (the widest kernel's radius, gaussian_kernel's 3 sigma, of
# each group at its scale): a slot is measured on its skin's bounding box grown by this much, which
# changes no value read at a skin pixel and spares the mirrored fill beyond it.
def reach_px(group: contract.PatchGroup) -> int:
    sigmas_mm = {
        "wrinkles": [WRINKLE_SURE_SKIN_MM, *WRINKLE_SIGMAS_MM],
        "colour": [0.0],
        "dark_spots": [SPOT_SIGMA_MM, SURROUND_SIGMA_MM, SPOT_SIGMA_MM * 2.0],
        "pores": [PORE_SIGMA_MM, PORE_SIGMA_MM * 3.0],
    }[group.name]
    return int(np.ceil(3.0 * max(sigmas_mm) * group.px_per_mm)) + 1


def _skin_extent(skin: tf.Tensor, axis: list[int], reach: int) -> tf.Tensor:
    """1 + the last index along the remaining axis where any face's slot has skin, grown by `reach`,
    within the slot (at least reach + 1, so mirrored padding always fits)."""
    size = tf.shape(skin)[1]
    present = tf.reduce_any(skin > 0, axis=axis)
    last = tf.reduce_max(tf.where(present, tf.range(size), tf.zeros_like(tf.range(size))))
    return tf.clip_by_value(last + 1 + reach, reach + 1, size)


def zone_measures(patches: tf.Tensor, patch_skin: tf.Tensor, wrinkle_response: str) -> dict[str, tf.Tensor]:
    """Contract 4's zone outputs, each [faces, slots], from patches [faces, slots, P, P, 3] and their skin
    [faces, slots, P, P] (uint8): each group's measures on its own slots, 0 on the other groups'. Each slot
    is measured on its skin's bounding box grown by the group's reach (reach_px), not the whole square."""
    faces = tf.shape(patches)[0]
    columns: dict[str, list[tf.Tensor]] = {name: [] for name in contract.zone_measure_names()}
    for index, (group_name, _) in enumerate(contract.PATCH_SLOTS):
        group = contract.patch_group(group_name)
        skin = patch_skin[:, index]
        reach = reach_px(group)
        height, width = _skin_extent(skin, [0, 2], reach), _skin_extent(skin, [0, 1], reach)
        rgb = tf.cast(patches[:, index, :height, :width], tf.float32)
        values = group_measures(
            group.name, rgb, tf.cast(skin[:, :height, :width], tf.float32), group.px_per_mm, wrinkle_response
        )
        for measure in contract.ZONE_MEASURES:
            column = values[measure.name] if measure.group == group.name else tf.zeros(tf.stack([faces]))
            columns[measure.name].append(column)
    return {name: tf.stack(parts, axis=1) for name, parts in columns.items()}
