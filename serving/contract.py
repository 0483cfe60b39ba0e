"""The model contract: the one statement of the served model's name, signature, tensors and regions.

Export writes the signature from it, the local model server and the orchestrator build and check
requests from it, and a test checks every published version against it. Pure Python: the orchestrator
imports it, so nothing here may import TensorFlow or NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAME = "skin_analyzer"
SIGNATURE_NAME = "serving_default"
METHOD_NAME = "tensorflow/serving/predict"

# One row of the input batch per face region, in this order. "left" and "right" are the subject's own
# (the subject's left cheek appears on the right of an unmirrored photo).
REGION_NAMES: tuple[str, ...] = (
    "forehead",
    "left_cheek",
    "right_cheek",
    "nose",
    "chin",
    "left_under_eye",
    "right_under_eye",
)

# Every region is resized to a square of this side before it is sent.
REGION_SIZE_PX = 160

# The acne head reports at most this many lesion candidates per region crop.
MAX_LESIONS = 32

# Columns of the "signals" output, one row per region crop. Each is a raw measurement of that crop
# alone; post-scoring (per version, in assets.extra/) turns them into scores.
SIGNAL_NAMES: tuple[str, ...] = (
    "lab_l",  # median CIELAB L* of skin pixels (D65), 0..100
    "lab_a",  # median CIELAB a* of skin pixels
    "lab_b",  # median CIELAB b* of skin pixels
    "ita_deg",  # individual typology angle from lab_l and lab_b, degrees
    "erythema",  # mean over skin of max(a*, median a*): the median a* plus red patches, a* units
    "pigment_spots",  # share of skin area darker than its surroundings (dark spots), 0..1
    "pigment_unevenness",  # spread of L* after removing slow shading, L* units
    "wrinkles",  # mean dark-ridge (line) response, L* units
    "pores",  # density of small dark blobs, L* units
    "texture",  # fine-scale roughness of L*, L* units
    "specular",  # share of skin area that is a specular highlight (shine), 0..1
    "skin_fraction",  # share of the crop that looks like skin, 0..1
)


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype (a NumPy dtype name) and shape of one signature tensor; None is a free dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


# The crops of one face, RGB, uint8, batch dimension first. TF Serving's batching concatenates
# requests along that dimension, so every output row must depend on its input row alone.
INPUT = TensorSpec("regions", "uint8", (None, REGION_SIZE_PX, REGION_SIZE_PX, 3))

OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("signals", "float32", (None, len(SIGNAL_NAMES))),
    # Lesion candidates per crop as (y, x, score): y and x relative to the crop in [0, 1], score in
    # [0, 1], sorted by score, zero rows where there are fewer candidates.
    TensorSpec("acne_peaks", "float32", (None, MAX_LESIONS, 3)),
)

OUTPUT_NAMES: tuple[str, ...] = tuple(spec.name for spec in OUTPUTS)

# TensorFlow's DataType enum values (tensorflow/core/framework/types.proto) for the dtypes used here.
DATA_TYPE_ENUM: dict[str, int] = {"float32": 1, "int32": 3, "uint8": 4, "int64": 9}

# Files every published version carries in assets.extra/.
WARMUP_FILE = "tf_serving_warmup_requests"
CALIBRATION_FILE = "calibration.skops"
MODEL_CARD_FILE = "model_card.md"
MODEL_CARD_JSON = "model_card.json"


def output_spec(name: str) -> TensorSpec:
    """Return the spec of the output called `name`; raises KeyError for a name the contract lacks."""
    for spec in OUTPUTS:
        if spec.name == name:
            return spec
    raise KeyError(name)
