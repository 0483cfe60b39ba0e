"""The answer's shape, written once: typed models that post-scoring and the pipeline fill, and from which
the OpenAPI document's schemas are generated (`answer_schemas`).

Codes (concerns, severities, warnings, region reasons, views) are enumerated from the registry
(serving/concerns.py) and the tables (orchestrator/notices.py) when the schema is made, so a record added
there is in the document. A field that is left unset is left out of the answer (`dump`): the overlay
unless asked for, a concern's `reason` unless the version cannot score it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.face.scale import SOURCES as SCALE_SOURCES
from orchestrator.notices import CONCERN_REASON_TABLE, REGION_REASON_TABLE, VIEW_TABLE, WARNING_TABLE
from serving import contract
from serving.concerns import Concern, registry

REF = "#/components/schemas/{model}"

# ITA categories (del Bino & Bernerd, Br J Dermatol 169 Suppl 3, 2013): lower bound in degrees.
ITA_CATEGORIES: tuple[tuple[float, str], ...] = (
    (55, "very_light"),
    (41, "light"),
    (28, "intermediate"),
    (10, "tan"),
    (-30, "brown"),
    (-math.inf, "dark"),
)
# Skin types, from T-zone and cheek shine (PostScorer._skin_type).
SKIN_TYPES: tuple[str, ...] = ("oily", "dry", "normal", "combination")


class Part(BaseModel):
    """A part of the answer: no field outside its model, unset fields left out when dumped."""

    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The part as JSON-ready data, without the fields left unset."""
        return self.model_dump(mode="json", exclude_unset=True)


class ModelInfo(Part):
    """The model version that produced this answer; its calibration scored it."""

    name: str
    version: int
    label: str | None = Field(
        description="The version label the request was routed by: `canary` for the canary share "
        "(SHINE_CANARY_SHARE), the configured SHINE_MODEL_VERSION_LABEL, or null when it went to the "
        "newest usable version."
    )


class Box(Part):
    x: int
    y: int
    width: int
    height: int


class FaceInfo(Part):
    box: Box
    confidence: float = Field(ge=0, le=1)


class ImageInfo(Part):
    format: str
    width_px: int
    height_px: int
    exif_orientation: int | None


class Region(Part):
    """A named region: read or not (and why not), and its outline in photo pixels when visible."""

    visible: bool
    reason: str | None = Field(json_schema_extra=lambda s: s.update(enum=[*REGION_REASON_TABLE, None]))
    polygon: list[list[int]] | None


class Blur(Part):
    sharpness: float
    threshold: float


class Exposure(Part):
    brightness: float
    crushed_share: float
    clipped_share: float


class Pose(Part):
    """Head pose from the landmarks, degrees: yaw > 0 turned towards the image's right, pitch > 0 chin
    raised, roll > 0 leaning clockwise."""

    yaw_deg: float
    pitch_deg: float
    roll_deg: float


class Quality(Part):
    face_size_px: int
    blur: Blur
    exposure: Exposure
    tilt_deg: float | None
    pose: Pose | None
    px_per_mm: float | None = Field(
        default=None,
        description="photo pixels per millimetre on the face (from the iris, 11.7 mm across; else the "
        "distance between the pupils, 63 mm), as analysed; null where it could not be read",
    )
    scale_source: str | None = Field(
        default=None, json_schema_extra=lambda s: s.update(enum=[*SCALE_SOURCES, None])
    )
    warnings: list[str] = Field(json_schema_extra=lambda s: s.update(items={"enum": list(WARNING_TABLE)}))


class Lab(Part):
    l: float  # noqa: E741 - CIELAB's own name
    a: float
    b: float


class SkinTone(Part):
    ita_deg: float | None
    category: str | None = Field(
        json_schema_extra=lambda s: s.update(enum=[label for _, label in ITA_CATEGORIES] + [None])
    )
    lab: Lab | None


class SkinType(Part):
    label: str | None = Field(json_schema_extra=lambda s: s.update(enum=[*SKIN_TYPES, None]))
    probabilities: dict[str, float] | None


class Lesion(Part):
    """One lesion: its region, its position in the aligned face (relative) and in the photo (pixels)."""

    region: str = Field(json_schema_extra=lambda s: s.update(enum=list(contract.LABEL_NAMES)))
    y_rel: float
    x_rel: float
    confidence: float = Field(ge=0, le=1)
    x: int | None = None
    y: int | None = None


class ConcernScore(Part):
    """One measured concern: 0-100, higher is healthier; per region; the raw value it was scored from."""

    score: float | None = Field(ge=0, le=100)
    severity: str | None
    regions: dict[str, float | None]
    raw: float | None
    reason: str | None = Field(
        default=None, description="only when the version that answered does not score this concern: why"
    )
    reason_code: str | None = Field(
        default=None,
        description="with `reason`: its code",
        json_schema_extra=lambda s: s.update(enum=[*CONCERN_REASON_TABLE, None]),
    )


class AcneScore(Part):
    """Acne: lesions counted over the visible skin, graded as ACNE04 grades."""

    score: float | None = Field(ge=0, le=100)
    severity: str | None
    regions: dict[str, int | None]
    count: int | None
    grade_probabilities: dict[str, float] | None = None
    lesions: list[Lesion]
    reason: str | None = Field(
        default=None, description="only when the version that answered does not score this concern: why"
    )
    reason_code: str | None = Field(
        default=None,
        description="with `reason`: its code",
        json_schema_extra=lambda s: s.update(enum=[*CONCERN_REASON_TABLE, None]),
    )


class Overall(Part):
    score: float | None = Field(ge=0, le=100)


class Recommendation(Part):
    """Tips for a concern at a severity, for a skin type, or for every day."""

    concern: str | None = None
    severity: str | None = None
    skin_type: str | None = None
    tips: list[str]


class Overlay(Part):
    png_base64: str = Field(
        min_length=1, json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/png"}
    )


class Scored(Part):
    """What post-scoring adds: concerns, skin tone and type, the overall score."""

    concerns: dict[str, ConcernScore | AcneScore]
    skin_tone: SkinTone
    skin_type: SkinType
    overall: Overall


class Analysis(Scored):
    """The answer for one photo, as the pipeline makes it."""

    model: ModelInfo
    view: str = Field(json_schema_extra=lambda s: s.update(enum=list(VIEW_TABLE)))
    faces_detected: int = Field(ge=0)
    face: FaceInfo
    image: ImageInfo
    regions: dict[str, Region]
    quality: Quality
    recommendations: list[Recommendation]
    overlay: Overlay | None = Field(
        default=None,
        description="only when asked for with overlay=true: the photo drawn with each visible region "
        "outlined in the colour of its worst concern's severity, acne lesions ringed and a legend below",
    )


class Report(Analysis):
    """The answer of POST /api/v2/analyze/guest."""

    request_id: str
    timing_ms: dict[str, float]


def answer_schemas() -> dict[str, Any]:
    """The OpenAPI component schemas of the answer ("Report" and its parts), generated from the models;
    the concerns' and regions' properties come from the registry and the contract."""
    schema = Report.model_json_schema(ref_template=REF, mode="serialization")
    parts: dict[str, Any] = schema.pop("$defs")
    properties = schema["properties"]
    # Open-ended maps in the models; closed, named objects in the document.
    properties["regions"] = {
        "type": "object",
        "required": list(contract.REGION_NAMES),
        "properties": {name: {"$ref": REF.format(model="Region")} for name in contract.REGION_NAMES},
        "additionalProperties": False,
    }
    properties["concerns"] = {
        "type": "object",
        "required": [record.name for record in registry()],
        "properties": {record.name: _concern(record, parts) for record in registry()},
        "additionalProperties": False,
    }
    # Absent unless asked for; never null.
    properties["overlay"] = {
        "$ref": REF.format(model="Overlay"),
        "description": Analysis.model_fields["overlay"].description,
    }
    return {**parts, "Report": schema}


def _concern(record: Concern, parts: dict[str, Any]) -> dict[str, Any]:
    """One concern's schema: its model's, with its own regions and severities."""
    lesions = record.raw == "lesions"
    base = parts["AcneScore" if lesions else "ConcernScore"]
    value = {"type": ["integer", "null"]} if lesions else {"type": ["number", "null"]}
    properties = {
        **base["properties"],
        "severity": {"enum": [*record.severity_labels, None]},
        "regions": {
            "type": "object",
            "properties": dict.fromkeys(record.regions, value),
            "additionalProperties": False,
        },
    }
    return {**base, "title": record.name, "description": record.label, "properties": properties}
