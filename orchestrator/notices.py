"""What an answer can tell a client beside scores: the warnings about the photo and the reasons a region
was not read, each a code with the words a page shows for it (like errors.ERROR_TABLE). The OpenAPI
enums, the demo page and the command line read them from here."""

from __future__ import annotations

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


def region_reason(code: str) -> str:
    """`code`, checked against REGION_REASON_TABLE; raises KeyError for a reason the table lacks."""
    if code not in REGION_REASON_TABLE:
        raise KeyError(code)
    return code
