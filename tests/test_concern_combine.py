"""From zone readings to one value per concern: the chosen wrinkle sites, and unscored reasons."""

from __future__ import annotations

import pytest

from export.concerns.combine import Design, concern_values, wrinkle_group_values
from export.concerns.zones import Reading, zone_key
from orchestrator.face.patches import NEEDED_SCALES

W = NEEDED_SCALES["wrinkles"].px_per_mm
C = NEEDED_SCALES["redness"].px_per_mm
DESIGN = Design(
    wrinkle_response="across1.2",
    wrinkle_groups=("forehead", "crows_feet"),
    centre={"forehead": 1.0, "glabella": 1.0, "crows_feet": 2.0, "under_eye": 1.0, "nasolabial": 1.0},
    spread={"forehead": 0.5, "glabella": 1.0, "crows_feet": 1.0, "under_eye": 1.0, "nasolabial": 1.0},
)


def _wrinkle(value: float, pixels: float = 200.0) -> dict[str, float]:
    return {"across1.2": value, "pixels": pixels}


def _colour(a: float, median_l: float, shine: float = 0.0, skin: float = 400.0) -> dict[str, float]:
    return {"l": median_l, "a": a, "b": 15.0, "median_l": median_l, "shine": shine, "skin": skin}


def test_wrinkles_are_the_mean_robust_z_of_the_chosen_sites() -> None:
    reading = Reading(
        "p.jpg",
        "original",
        zones={
            zone_key("forehead", W): _wrinkle(2.0),
            zone_key("right_crows_feet", W): _wrinkle(2.0),
            zone_key("left_crows_feet", W): _wrinkle(4.0),
            zone_key("glabella", W): _wrinkle(100.0),  # not a chosen site
        },
    )
    sites = wrinkle_group_values(reading, "across1.2")
    assert sites["crows_feet"] == 3.0 and sites["under_eye"] is None
    values, _ = concern_values(reading, DESIGN)
    assert values["wrinkles"] == pytest.approx(((2.0 - 1.0) / 0.5 + (3.0 - 2.0) / 1.0) / 2)


def test_a_site_with_too_little_skin_does_not_count() -> None:
    reading = Reading("p.jpg", "original", zones={zone_key("forehead", W): _wrinkle(2.0, pixels=5.0)})
    values, reasons = concern_values(reading, DESIGN)
    assert "wrinkles" not in values
    assert reasons["wrinkles"] == "zones_not_skin"


def test_colour_concerns_and_reasons() -> None:
    reading = Reading(
        "p.jpg",
        "original",
        zones={
            zone_key("right_cheek", C): _colour(18.0, 60.0, shine=8.0),
            zone_key("left_cheek", C): _colour(14.0, 62.0),
            zone_key("nose", C): _colour(16.0, 65.0, shine=12.0),
            zone_key("right_under_eye", C): _colour(12.0, 54.0, skin=100.0),
            zone_key("forehead", C): _colour(12.0, 66.0),
        },
        unavailable={zone_key("forehead", W): "photo_too_small"},
    )
    values, reasons = concern_values(reading, DESIGN)
    assert values["redness"] == pytest.approx(16.0)
    assert values["dark_circles"] == pytest.approx(6.0)  # right side only: cheek 60 - under-eye 54
    assert values["oiliness"] == pytest.approx(20.0 / 1600.0)
    assert reasons["wrinkles"] == "photo_too_small"
    assert "dark_spots" in reasons


def test_no_face_is_said() -> None:
    _, reasons = concern_values(Reading("p.jpg", "original", face_found=False), DESIGN)
    assert set(reasons.values()) == {"no_face"}
