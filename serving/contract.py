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

# One row of the batch per face. The face is sent aligned (upright, at a fixed scale, see
# orchestrator/face/alignment.py) as a square image, with a mask of the same size that labels every
# pixel: 0 = not skin (eyes, brows, lips, nostrils, hair, background, outside the photo), 1..7 = the
# regions below in this order, 8 = other visible skin (jaw, temples, neck, or all of a close-up's
# skin). No region is resized on its own, so none is stretched. "left" and "right" are the subject's
# own (the subject's left cheek appears on the right of an unmirrored photo).
CONTRACT_VERSION = 4
# Contracts whose versions this service still reads (see SIGNAL_AXIS for 2's one difference, and
# PATCH_INPUTS for what 4 adds).
READABLE_CONTRACTS: tuple[int, ...] = (2, 3, 4)
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


@dataclass(frozen=True)
class Signal:
    """One raw measurement the model makes of each mask label's pixels alone; post-scoring (per version,
    in assets.extra/) turns signals into scores."""

    name: str
    about: str  # what it measures, and its unit


# What the model measures, per mask label. A new measurement is one record here and one measure in
# export/measures.py; export writes it as its own output, and versions without it still serve.
SIGNALS: tuple[Signal, ...] = (
    Signal(
        "lab_l", "median CIELAB L* (D65) of the label's well-lit skin (50th-90th percentile of L*), 0..100"
    ),
    Signal("lab_a", "same, a*"),
    Signal("lab_b", "same, b*"),
    Signal("ita_deg", "individual typology angle from lab_l and lab_b, degrees"),
    Signal("erythema", "mean over skin of max(a*, median a*): the median a* plus red patches, a* units"),
    Signal("pigment_spots", "share of skin area darker than its surroundings (dark spots), 0..1"),
    Signal("pigment_unevenness", "spread of L* after removing slow shading, L* units"),
    Signal("wrinkles", "mean dark-ridge (line) response, L* units"),
    Signal("pores", "density of small dark blobs, L* units"),
    Signal("texture", "fine-scale roughness of L*, L* units"),
    Signal("specular", "share of skin area that is a specular highlight (shine), 0..1"),
    Signal("skin_fraction", "share of the label's pixels the model reads as skin, 0..1"),
)


def signal_names() -> tuple[str, ...]:
    """The names of SIGNALS, in order (read at call time, so a record added to SIGNALS counts)."""
    return tuple(signal.name for signal in SIGNALS)


# Without these no answer can be made (which regions count, the skin tone): a version lacking one is
# refused; any other signal a version lacks only leaves the concerns that read it unscored.
REQUIRED_SIGNALS: tuple[str, ...] = ("lab_l", "lab_a", "lab_b", "skin_fraction")


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


@dataclass(frozen=True)
class PatchGroup:
    """Skin patches cut from the photo's own pixels at one physical scale (orchestrator/face/patches.py),
    one per zone, and measured together by the model."""

    name: str
    px_per_mm: float
    zones: tuple[str, ...]


# Contract 4: beside the aligned face, every face carries fixed-scale patches, one slot per (group, zone)
# below, each an upright PATCH_SIZE_PX square: the zone's patch at its top left, the rest of the square
# filled by mirroring it (so filters read no edge), and `patch_skin` 1 on the zone's skin, 0 elsewhere
# (an empty slot, where the photo could not give the patch, is all 0). A patch larger than the square
# keeps its centre. The scales and why each concern needs its own: orchestrator/face/patches.py.
PATCH_GROUPS: tuple[PatchGroup, ...] = (
    PatchGroup(
        "wrinkles",
        1.2,
        (
            "forehead",
            "glabella",
            "right_crows_feet",
            "left_crows_feet",
            "right_under_eye",
            "left_under_eye",
            "right_nasolabial",
            "left_nasolabial",
        ),
    ),
    PatchGroup(
        "colour",
        0.8,
        ("forehead", "nose", "right_cheek", "left_cheek", "right_infraorbital", "left_infraorbital"),
    ),
    PatchGroup("dark_spots", 1.0, ("right_cheek", "left_cheek", "forehead")),
    PatchGroup("pores", 8.0, ("right_cheek", "left_cheek", "nose")),
)
PATCH_SLOTS: tuple[tuple[str, str], ...] = tuple((g.name, z) for g in PATCH_GROUPS for z in g.zones)
# The largest zone, the forehead at 1.2 px/mm, is 140-175 px with its margin on adult faces.
PATCH_SIZE_PX = 176
PATCH_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("patches", "uint8", (None, len(PATCH_SLOTS), PATCH_SIZE_PX, PATCH_SIZE_PX, 3)),  # RGB
    TensorSpec("patch_skin", "uint8", (None, len(PATCH_SLOTS), PATCH_SIZE_PX, PATCH_SIZE_PX)),  # 0/1
)


def patch_group(name: str) -> PatchGroup:
    for group in PATCH_GROUPS:
        if group.name == name:
            return group
    raise KeyError(name)


@dataclass(frozen=True)
class ZoneMeasure:
    """One measurement of each patch slot of one group; other groups' slots read 0."""

    name: str
    group: str  # the PatchGroup whose slots it reads
    about: str


# Contract 4's zone outputs, each [faces, len(PATCH_SLOTS)], named ZONE_PREFIX + its name.
ZONE_PREFIX = "zone_"
ZONE_MEASURES: tuple[ZoneMeasure, ...] = (
    ZoneMeasure(
        "lines", "wrinkles", "mean dark-valley strength of L* across lines about 3 mm wide, L* units"
    ),
    ZoneMeasure("line_pixels", "wrinkles", "skin pixels the line strength is read on"),
    ZoneMeasure("lab_a", "colour", "mean CIELAB a* of the skin"),
    ZoneMeasure("median_l", "colour", "median CIELAB L* of the skin"),
    ZoneMeasure("median_ita", "colour", "median individual typology angle of the skin's pixels, degrees"),
    ZoneMeasure("shine", "colour", "skin pixels that are a specular highlight"),
    ZoneMeasure("skin", "colour", "skin pixels"),
    ZoneMeasure("spots", "dark_spots", "skin pixels in a dark spot (weighted by how dark, 0..1 each)"),
    ZoneMeasure("spot_pixels", "dark_spots", "skin pixels the spots are read on"),
    ZoneMeasure("pores", "pores", "share of skin on a dark pit about 0.3 mm across, 0..1"),
)


def zone_output(name: str) -> TensorSpec:
    """The contract-4 output of one zone measure."""
    return TensorSpec(ZONE_PREFIX + name, "float32", (None, len(PATCH_SLOTS)))


def zone_measure_names() -> tuple[str, ...]:
    return tuple(m.name for m in ZONE_MEASURES)


# Contract 3: every signal is its own output, [faces, labels], named SIGNAL_PREFIX + its name, so a
# version's signature lists what it measures and the orchestrator reads outputs by name.
SIGNAL_PREFIX = "signal_"
# Lesion candidates on skin (mask label > 0) as (y, x, score): y and x relative to the face image in
# [0, 1], score in [0, 1], sorted by score, zero rows where there are fewer candidates.
ACNE_PEAKS = TensorSpec("acne_peaks", "float32", (None, MAX_LESIONS, 3))
# Contract 2 (versions 5 and 6): all signals in one output whose last axis is these names, in order.
# Frozen: those versions keep serving through it.
SIGNAL_AXIS_NAMES: tuple[str, ...] = (
    "lab_l",
    "lab_a",
    "lab_b",
    "ita_deg",
    "erythema",
    "pigment_spots",
    "pigment_unevenness",
    "wrinkles",
    "pores",
    "texture",
    "specular",
    "skin_fraction",
)
SIGNAL_AXIS = TensorSpec("signals", "float32", (None, len(LABEL_NAMES), len(SIGNAL_AXIS_NAMES)))


def signal_output(name: str) -> TensorSpec:
    """The contract-3 output of one signal."""
    return TensorSpec(SIGNAL_PREFIX + name, "float32", (None, len(LABEL_NAMES)))


def outputs() -> tuple[TensorSpec, ...]:
    """The outputs export writes (contract 4): one per signal, the acne candidates, one per zone measure."""
    return (
        *(signal_output(name) for name in signal_names()),
        ACNE_PEAKS,
        *(zone_output(name) for name in zone_measure_names()),
    )


Signature = dict[str, dict[str, tuple[str, tuple[int | None, ...]]]]


@dataclass(frozen=True)
class Layout:
    """How one version's answer is read: the outputs to ask for (`output_filter`), the signals it
    measures, and whether they come in contract 2's single "signals" output."""

    outputs: tuple[str, ...]
    signals: tuple[str, ...]
    signal_axis: bool
    acne: bool
    patches: bool = False  # contract 4: send PATCH_INPUTS
    zone_measures: tuple[str, ...] = ()


def signature_problem(signature: Signature) -> str | None:
    """Why a version with this serving signature would answer wrongly (None when it would not): an input
    the orchestrator cannot send, a known output of another dtype or shape, or a required signal
    missing. Outputs this service does not know are ignored; known ones a version lacks only leave
    the concerns that read them unscored. `signature` is {"inputs"|"outputs": {name: (dtype, shape)}}."""
    inputs = signature.get("inputs", {})
    specs = (*INPUTS, *PATCH_INPUTS) if PATCH_INPUTS[0].name in inputs else INPUTS
    want = {spec.name: (spec.dtype, spec.shape) for spec in specs}
    if set(inputs) != set(want):
        return f"signature inputs {sorted(inputs)}, the contract's are {sorted(want)}"
    for name, (dtype, shape) in want.items():
        if inputs[name] != (dtype, shape):
            got = f"{inputs[name][0]}{inputs[name][1]}"
            return f"signature input {name} is {got}, the contract says {dtype}{shape}"
    given = signature.get("outputs", {})
    known = {spec.name: spec for spec in (*outputs(), SIGNAL_AXIS)}
    for name, (dtype, shape) in given.items():
        spec = known.get(name)
        if spec is not None and (dtype, shape) != (spec.dtype, spec.shape):
            return f"signature output {name} is {dtype}{shape}, the contract says {spec.dtype}{spec.shape}"
    layout = read_layout(signature)
    missing = [name for name in REQUIRED_SIGNALS if name not in layout.signals]
    if missing:
        return f"signature outputs {sorted(given)} lack the signals {', '.join(missing)}"
    return None


def read_layout(signature: Signature) -> Layout:
    """The outputs of a signature this service reads (assumes signature_problem found none)."""
    given = signature.get("outputs", {})
    if SIGNAL_AXIS.name in given:
        signals = tuple(name for name in SIGNAL_AXIS_NAMES if name in signal_names())
        wanted = [SIGNAL_AXIS.name]
        axis = True
    else:
        signals = tuple(name for name in signal_names() if SIGNAL_PREFIX + name in given)
        wanted = [SIGNAL_PREFIX + name for name in signals]
        axis = False
    acne = ACNE_PEAKS.name in given
    if acne:
        wanted.append(ACNE_PEAKS.name)
    patches = PATCH_INPUTS[0].name in signature.get("inputs", {})
    zones = tuple(name for name in zone_measure_names() if patches and ZONE_PREFIX + name in given)
    wanted += [ZONE_PREFIX + name for name in zones]
    return Layout(
        outputs=tuple(wanted),
        signals=signals,
        signal_axis=axis,
        acne=acne,
        patches=patches,
        zone_measures=zones,
    )


# gRPC message limit of every Shine client and of the local model server (gRPC's default, 4 MiB, is less
# than a contract-4 request for two faces; TF Serving itself accepts up to 2 GiB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# TensorFlow's DataType enum values (tensorflow/core/framework/types.proto) for the dtypes used here.
DATA_TYPE_ENUM: dict[str, int] = {"float32": 1, "int32": 3, "uint8": 4, "int64": 9}

# Files every published version carries in assets.extra/.
WARMUP_FILE = "tf_serving_warmup_requests"
CALIBRATION_FILE = "calibration.skops"
MODEL_CARD_FILE = "model_card.md"
MODEL_CARD_JSON = "model_card.json"
