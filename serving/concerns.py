"""The registry of skin concerns: one record per concern, and the lists every other part derives from it.

Pure Python (the orchestrator, export and the model card read it). A record says where a concern is read,
which of the model's signals it reads, how its raw value is computed from them (`raw`, one of RAW_RULES,
computed in orchestrator/scoring/concerns.py), whether a close-up or a greyscale photo can show it, how
its score is cut into severities, what the model card says of it, and which recommendations it earns.
Adding a measured concern is one record here, one measure in export/measures.py and one metamorphic test.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving import contract

FACE_REGIONS: tuple[str, ...] = ("forehead", "left_cheek", "right_cheek", "nose", "chin")
UNDER_EYES: tuple[str, ...] = ("left_under_eye", "right_under_eye")
CHEEKS: tuple[str, ...] = ("left_cheek", "right_cheek")
T_ZONE: tuple[str, ...] = ("forehead", "nose", "chin")

# How a concern's raw value (higher = more of the concern) is read from its signals in each region:
RAW_RULES: dict[str, str] = {
    "lesions": "lesion candidates counted per region, summed over the face",
    "mean": "the first signal in each region, averaged over the usable regions",
    "above_face": "the first signal minus the face's median of the second over the usable regions",
    "below_cheeks": "the cheeks' mean of the first signal minus the region's",
}
# Score bands for severity: a score at or above the bound earns the label. A score is the share of the
# version's reference population worse than the face, so "severe" is its worst tenth, "moderate" the
# next 15%, "mild" the rest of the worse half, "none" the better half.
SEVERITY_BANDS: tuple[tuple[float, str], ...] = ((50, "none"), (25, "mild"), (10, "moderate"), (0, "severe"))
# ACNE04's grades (Wu et al., ICCV 2019, after Hayashi's lesion-count bands).
ACNE_GRADES: tuple[str, ...] = ("mild", "moderate", "severe", "very_severe")


@dataclass(frozen=True)
class Concern:
    """Everything Shine knows about one concern."""

    name: str
    label: str  # as people read it
    regions: tuple[str, ...]  # mask labels it is read on (contract.LABEL_NAMES)
    signals: tuple[str, ...]  # contract.SIGNAL_NAMES it reads; a version without one does not score it
    raw: str  # a key of RAW_RULES
    measures: str  # model card: what the raw value is
    limits: str  # model card: what misleads it
    closeup: bool = True  # read on a skin close-up's skin as one region
    needs_colour: bool = False  # a greyscale photo cannot show it
    severities: tuple[tuple[float, str], ...] = SEVERITY_BANDS
    # The keys of configs/recommendations.json's "concerns" it earns suggestions from (its own name).
    recommendations: str = ""
    # Model card, for versions that read it on fixed-scale patches (contract 4; the scale, its zones and
    # why: orchestrator/face/patches.py NEEDED_SCALES, the combination: orchestrator/scoring/zones.py).
    scaled_measures: str = ""
    scaled_limits: str = ""

    @property
    def measured(self) -> bool:
        """Scored from a percentile among reference faces (acne is counted and graded instead)."""
        return self.raw != "lesions"

    @property
    def severity_labels(self) -> tuple[str, ...]:
        return (
            ("none", *ACNE_GRADES) if self.raw == "lesions" else tuple(label for _, label in self.severities)
        )

    @property
    def recommendation_key(self) -> str:
        return self.recommendations or self.name


CONCERN_TABLE: tuple[Concern, ...] = (
    Concern(
        "acne",
        "Acne",
        contract.LABEL_NAMES,
        (),
        "lesions",
        "Lesion centres from this version's acne head (see the description) over all visible skin of the "
        "aligned face (the five named regions, and the jaw, temples and neck as other skin); the count is "
        "mapped to the ACNE04 severity grade by a logistic model fitted on ACNE04 valid faces.",
        "Trained on clinical photos of mostly East-Asian patients; fewer examples of dark skin. Skin the "
        "photo does not show (a cheek turned away) is not counted. Makeup hides lesions.",
        closeup=False,
    ),
    Concern(
        "redness",
        "Redness",
        FACE_REGIONS,
        ("erythema", "lab_a"),
        "above_face",
        "Erythema (CIELAB a* of skin and its red patches) of each region minus the face's median a*, "
        "percentile among reference faces.",
        "Relative to the face itself: an even flush over the whole face does not count; coloured "
        "light falling on one side does.",
        needs_colour=True,
        scaled_measures="Mean CIELAB a* of cheek and nose skin (weighted by skin area), percentile among "
        "adults of every age.",
        scaled_limits="An absolute colour: the photo's white balance and light move it, and an even "
        "flush counts.",
    ),
    Concern(
        "dark_spots",
        "Dark spots",
        FACE_REGIONS,
        ("pigment_spots",),
        "mean",
        "Share of skin markedly darker than its surroundings at spot scale (not lines).",
        "Moles and freckles count as spots; shadows from hair or glasses can too.",
        scaled_measures="Share of cheek and forehead skin darker than the skin 5 mm around it by 2-8 L* "
        "(weighted by how much), red bumps left out; percentile among adults of every age.",
        scaled_limits="Moles and freckles count as spots; shadows from hair or glasses can too; spots "
        "under 2 mm are not resolved.",
    ),
    Concern(
        # Forehead lines, and the lines under the eyes and on the cheeks (the nasolabial side).
        "wrinkles",
        "Wrinkles",
        ("forehead", *UNDER_EYES, *CHEEKS),
        ("wrinkles",),
        "mean",
        "Hessian ridge response (Frangi et al. 1998) for dark lines on forehead, under-eye and cheeks.",
        "Expression lines (smiling, raised brows) and strong side light raise it; blur lowers it.",
        scaled_measures="Dark-line strength of L* (the Hessian's larger eigenvalue at 1.2 mm, Lindeberg's "
        "normalisation) on the skin of the forehead, the glabella and the crow's-feet zones, each site "
        "a robust z-score against the training portraits, averaged; percentile among adults of every "
        "age.",
        scaled_limits="Expression lines (raised brows, a squint) and side light raise it; lines finer "
        "than about 1 mm are not read at portrait scale; under-eye and nasolabial lines are not counted "
        "(they did not follow age on the training portraits).",
    ),
    Concern(
        # Where pores are large enough to see.
        "pores",
        "Pores",
        ("forehead", "nose", *CHEEKS),
        ("pores",),
        "mean",
        "Small dark blobs (difference of Gaussians at pore scale) on forehead, nose and cheeks.",
        "Needs resolution: faces under ~300 px wide and JPEG smoothing hide pores.",
        scaled_measures="Share of cheek and nose skin on a dark pit about 0.3 mm across.",
        scaled_limits="Needs 8 pixels per millimetre (a face about 1,200 px wide); the adult reference "
        "holds no face at that scale yet, so it is not scored.",
    ),
    Concern(
        "oiliness",
        "Oiliness",
        FACE_REGIONS,
        ("specular",),
        "mean",
        "Share of skin that is a specular highlight (shine), T-zone against cheeks for skin type.",
        "Flash and glossy makeup read as oil; matte powder hides it.",
        scaled_measures="Share of forehead, nose and cheek skin that is a specular highlight (10 L* above "
        "the zone's median, of lower chroma); percentile among adults of every age.",
        scaled_limits="Flash and glossy makeup read as oil; matte powder hides it.",
    ),
    Concern(
        "dark_circles",
        "Dark circles",
        UNDER_EYES,
        ("lab_l",),
        "below_cheeks",
        "Cheek L* minus under-eye L*.",
        "Shadows from deep-set eyes or overhead light read as dark circles.",
        scaled_measures="Cheek median ITA (lightness and tint together) minus that of the band 5-15 mm "
        "below the lower lid, mean of both sides; percentile among adults of every age.",
        scaled_limits="Shadows from deep-set eyes or overhead light read as dark circles; the reference "
        "portraits are mostly studio-lit, so soft daylight photos read a little darker under the eyes.",
        closeup=False,
    ),
)


def concern(name: str) -> Concern:
    """The record of `name`; raises KeyError for a concern the registry lacks."""
    for record in registry():
        if record.name == name:
            return record
    raise KeyError(name)


def registry() -> tuple[Concern, ...]:
    """Every concern, in the order answers list them (read at call time, so a record added counts)."""
    return CONCERN_TABLE


def concern_names() -> tuple[str, ...]:
    return tuple(record.name for record in registry())


def measured() -> tuple[Concern, ...]:
    """The concerns scored by percentile, in registry order (calibration's face columns)."""
    return tuple(record for record in registry() if record.measured)


def region_columns() -> tuple[tuple[str, str], ...]:
    """(concern, region) of every measured concern's regions, in registry order (calibration's columns)."""
    return tuple((record.name, region) for record in measured() for region in record.regions)


def severity_labels() -> tuple[str, ...]:
    """Every severity any concern can have, mildest first."""
    labels: list[str] = []
    for record in registry():
        labels += [label for label in record.severity_labels if label not in labels]
    return tuple(labels)
