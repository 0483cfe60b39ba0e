"""From one photo reading to one raw value per concern (or the reason it is not scored): the served
combination (orchestrator/scoring/zones.py) applied to a design run's reading, whose wrinkle zones carry
every candidate response under its own name.
"""

from __future__ import annotations

from export.concerns.zones import Reading
from orchestrator.face.patches import NEEDED_SCALES
from orchestrator.scoring import zones
from orchestrator.scoring.zones import WRINKLE_GROUPS, Design

CONCERNS: tuple[str, ...] = tuple(NEEDED_SCALES)
__all__ = ["CONCERNS", "WRINKLE_GROUPS", "Design", "concern_values", "wrinkle_group_values"]


def wrinkle_group_values(reading: Reading, response: str) -> dict[str, float | None]:
    """Each wrinkle site's `response` (mean over its available sides), None where none is read."""
    return zones.wrinkle_group_values(reading.zones, response)


def concern_values(reading: Reading, design: Design) -> tuple[dict[str, float], dict[str, str]]:
    """(raw value per scored concern, reason per unscored concern) of one photo reading."""
    if not reading.face_found:
        return {}, dict.fromkeys(CONCERNS, "no_face")
    return zones.concern_values(reading.zones, reading.unavailable, design, design.wrinkle_response)
