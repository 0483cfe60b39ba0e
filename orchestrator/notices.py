"""What an answer can tell a client beside scores: the warnings about the photo, the reasons a region was
not read and the views, each a code with the words a page shows for it (like errors.ERROR_TABLE). The
OpenAPI enums and the demo page's words (GET /api/v2/vocabulary, with the concern registry) come from here.
"""

from __future__ import annotations

from typing import Any

from serving.concerns import registry, severity_labels

# View code -> words (answer.view): how the face stage read the photo.
VIEW_TABLE: dict[str, str] = {
    "frontal": "frontal",
    "three_quarter": "three-quarter",
    "profile": "profile",
    "closeup": "skin close-up",
}

# Warning code -> what it means to the person who took the photo (answer.quality.warnings).
WARNING_TABLE: dict[str, str] = {
    "MULTIPLE_FACES": "More than one face in the photo: one of them was analysed.",
    "GRAYSCALE_IMAGE": "A black-and-white photo: redness and skin tone cannot be read.",
    "FACE_PARTLY_OUTSIDE": "Part of the face is outside the photo.",
    "REGIONS_NOT_VISIBLE": "Some regions could not be read (listed below).",
    "FACE_SMALL": "The face is small in the photo: move closer for finer detail.",
    "BLURRY": "The photo is blurred: hold the camera still, in good light.",
    "UNDEREXPOSED": "The photo is dark: face a window or a lamp.",
    "OVEREXPOSED": "The photo is over-exposed: avoid direct flash or sun.",
    "HEAD_TILTED": "The head is tilted to one side: hold it level.",
    "HEAD_PITCHED": "The head is tilted up or down: look straight at the camera.",
    "PHOTO_TOO_SMALL": "Some concerns need more detail than this photo gives (see their reasons): move "
    "closer, or send the photo at its full resolution.",
}

# Why a concern has no score (answer.concerns.<name>.reason_code; `reason` words it for this answer).
CONCERN_REASON_TABLE: dict[str, str] = {
    "not_measured": "the model version that answered does not measure it",
    "not_calibrated": "the model version that answered has no reference values for it",
    "photo_too_small": "the photo gives fewer pixels per millimetre on the face than it is read at",
    "no_scale": "the face's size in millimetres could not be read (no iris or eye corners found)",
    "outside_photo": "the zones it is read on are outside the photo or hidden",
    "zones_not_skin": "too little skin could be read in its zones (hair, glasses or shadow over them)",
}

# Region reason code -> words (answer.regions.<name>.reason, null when the region was read).
REGION_REASON_TABLE: dict[str, str] = {
    "outside_photo": "outside the photo",
    "turned_away": "turned away from the camera",
    "not_placed": "not placed",
    "too_little_skin": "too little skin to read",
}


def warning(code: str) -> str:
    """`code`, checked against WARNING_TABLE; raises KeyError for a warning the table lacks."""
    if code not in WARNING_TABLE:
        raise KeyError(code)
    return code


def concern_reason(code: str) -> str:
    """`code`, checked against CONCERN_REASON_TABLE; raises KeyError for a reason the table lacks."""
    if code not in CONCERN_REASON_TABLE:
        raise KeyError(code)
    return code


def region_reason(code: str) -> str:
    """`code`, checked against REGION_REASON_TABLE; raises KeyError for a reason the table lacks."""
    if code not in REGION_REASON_TABLE:
        raise KeyError(code)
    return code


def vocabulary() -> dict[str, Any]:
    """Every code an answer can hold, with its words: the concerns (from the registry), severities,
    warnings, region reasons and views. Served to the demo page, so it holds no copy of them."""
    return {
        "concerns": [
            {
                "name": c.name,
                "label": c.label,
                "regions": list(c.regions),
                "severities": list(c.severity_labels),
                "needs_colour": c.needs_colour,
                "closeup": c.closeup,
            }
            for c in registry()
        ],
        "severities": {label: label.replace("_", " ") for label in severity_labels()},
        "warnings": dict(WARNING_TABLE),
        "region_reasons": dict(REGION_REASON_TABLE),
        "concern_reasons": dict(CONCERN_REASON_TABLE),
        "views": dict(VIEW_TABLE),
    }
