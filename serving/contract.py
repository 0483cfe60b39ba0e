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

# Contract 2: one row of the batch per face. The face is sent aligned (upright, at a fixed scale, see
# orchestrator/face/alignment.py) as a square image, with a mask of the same size that labels every
# pixel: 0 = not skin (eyes, brows, lips, nostrils, hair, background, outside the photo), 1..7 = the
# regions below in this order, 8 = other visible skin (jaw, temples, neck, or all of a close-up's
# skin). No region is resized on its own, so none is stretched. "left" and "right" are the subject's
# own (the subject's left cheek appears on the right of an unmirrored photo).
CONTRACT_VERSION = 2
REGION_NAMES: tuple[str, ...] = (
    "forehead",
    "left_cheek",
    "right_cheek",
    "nose",
    "chin",
    "left_under_eye",
    "right_under_eye",
)
OTHER_SKIN = "other_skin"
# Mask labels 1..len(LABEL_NAMES); label 0 is "not skin".
LABEL_NAMES: tuple[str, ...] = (*REGION_NAMES, OTHER_SKIN)
NOT_SKIN = 0

# Side of the aligned face image and its mask, pixels.
FACE_SIZE_PX = 384

# The acne head reports at most this many lesion candidates per face (ACNE04's most severe photos
# carry about 100 labelled lesions).
MAX_LESIONS = 128

# Columns of the "signals" output: one row per mask label, each a raw measurement of that label's
# pixels alone; post-scoring (per version, in assets.extra/) turns them into scores.
SIGNAL_NAMES: tuple[str, ...] = (
    "lab_l",  # median CIELAB L* (D65) of the label's well-lit skin (50th-90th percentile of L*), 0..100
    "lab_a",  # same, a*
    "lab_b",  # same, b*
    "ita_deg",  # individual typology angle from lab_l and lab_b, degrees
    "erythema",  # mean over skin of max(a*, median a*): the median a* plus red patches, a* units
    "pigment_spots",  # share of skin area darker than its surroundings (dark spots), 0..1
    "pigment_unevenness",  # spread of L* after removing slow shading, L* units
    "wrinkles",  # mean dark-ridge (line) response, L* units
    "pores",  # density of small dark blobs, L* units
    "texture",  # fine-scale roughness of L*, L* units
    "specular",  # share of skin area that is a specular highlight (shine), 0..1
    "skin_fraction",  # share of the label's pixels the model reads as skin, 0..1
)


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype (a NumPy dtype name) and shape of one signature tensor; None is a free dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


# Faces, batch dimension first. TF Serving's batching concatenates requests along that dimension, so
# every output row must depend on its own input row alone.
INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("face", "uint8", (None, FACE_SIZE_PX, FACE_SIZE_PX, 3)),  # RGB
    TensorSpec("mask", "uint8", (None, FACE_SIZE_PX, FACE_SIZE_PX)),  # labels 0..len(LABEL_NAMES)
)
INPUT_NAMES: tuple[str, ...] = tuple(spec.name for spec in INPUTS)

OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("signals", "float32", (None, len(LABEL_NAMES), len(SIGNAL_NAMES))),
    # Lesion candidates on skin (mask label > 0) as (y, x, score): y and x relative to the face image
    # in [0, 1], score in [0, 1], sorted by score, zero rows where there are fewer candidates.
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


def input_spec(name: str) -> TensorSpec:
    """Return the spec of the input called `name`; raises KeyError for a name the contract lacks."""
    for spec in INPUTS:
        if spec.name == name:
            return spec
    raise KeyError(name)


# A served signature as {"inputs"|"outputs": {tensor name: (NumPy dtype name, shape)}}, None a free dim.
Signature = dict[str, dict[str, tuple[str, tuple[int | None, ...]]]]


def signature_problem(signature: Signature) -> str | None:
    """Why a served signature is not the contract's (names, dtypes, shapes), or None when it is."""
    for kind, specs in (("inputs", INPUTS), ("outputs", OUTPUTS)):
        want = {spec.name: (spec.dtype, spec.shape) for spec in specs}
        have = signature.get(kind, {})
        if set(have) != set(want):
            return f"signature {kind} {sorted(have)}, the contract's are {sorted(want)}"
        for name, (dtype, shape) in want.items():
            if have[name] != (dtype, shape):
                got = f"{have[name][0]}{have[name][1]}"
                return f"signature {kind[:-1]} {name} is {got}, the contract says {dtype}{shape}"
    return None
