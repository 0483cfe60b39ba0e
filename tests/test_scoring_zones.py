"""From zone measures to one raw value per concern: the chosen wrinkle sites, the colour concerns, the
regions' own values and the reasons a concern is not scored."""

from __future__ import annotations

import numpy as np
import pytest

from export.concerns.combine import concern_values as reading_values
from export.concerns.zones import Reading
from orchestrator.face.patches import NEEDED_SCALES
from orchestrator.scoring.zones import Design, concern_values, region_values, served_zones, zone_key
from serving import contract

W = NEEDED_SCALES["wrinkles"].px_per_mm
C = NEEDED_SCALES["redness"].px_per_mm
DESIGN = Design(
    wrinkle_response="across1.2",
    wrinkle_groups=("forehead", "crows_feet"),
    centre={"forehead": 1.0, "glabella": 1.0, "crows_feet": 2.0, "under_eye": 1.0, "nasolabial": 1.0},
    spread={"forehead": 0.5, "glabella": 1.0, "crows_feet": 1.0, "under_eye": 1.0, "nasolabial": 1.0},
)


def _wrinkle(value: float, pixels: float = 200.0) -> dict[str, float]:
    return {"lines": value, "line_pixels": pixels}


def _colour(a: float, ita: float, shine: float = 0.0, skin: float = 400.0) -> dict[str, float]:
    return {"lab_a": a, "median_l": 60.0, "median_ita": ita, "shine": shine, "skin": skin}


def test_wrinkles_are_the_mean_robust_z_of_the_chosen_sites() -> None:
    zones = {
        zone_key("forehead", W): _wrinkle(2.0),
        zone_key("right_crows_feet", W): _wrinkle(2.0),
        zone_key("left_crows_feet", W): _wrinkle(4.0),
        zone_key("glabella", W): _wrinkle(100.0),  # not a chosen site
    }
    values, _ = concern_values(zones, {}, DESIGN)
    assert values["wrinkles"] == pytest.approx(((2.0 - 1.0) / 0.5 + (3.0 - 2.0) / 1.0) / 2)
    assert region_values(zones)["wrinkles"] == {"forehead": 2.0}


def test_a_site_with_too_little_skin_does_not_count() -> None:
    values, reasons = concern_values({zone_key("forehead", W): _wrinkle(2.0, pixels=5.0)}, {}, DESIGN)
    assert "wrinkles" not in values
    assert reasons["wrinkles"] == "zones_not_skin"


def test_colour_concerns_regions_and_reasons() -> None:
    zones = {
        zone_key("right_cheek", C): _colour(18.0, 40.0, shine=8.0),
        zone_key("left_cheek", C): _colour(14.0, 42.0),
        zone_key("nose", C): _colour(16.0, 45.0, shine=12.0),
        zone_key("right_infraorbital", C): _colour(12.0, 34.0, skin=100.0),
        zone_key("forehead", C): _colour(12.0, 46.0),
    }
    values, reasons = concern_values(zones, {zone_key("forehead", W): "photo_too_small"}, DESIGN)
    assert values["redness"] == pytest.approx(16.0)
    assert values["dark_circles"] == pytest.approx(6.0)  # right side only: cheek ITA 40 - band 34
    assert values["oiliness"] == pytest.approx(20.0 / 1600.0)
    assert reasons["wrinkles"] == "photo_too_small"
    assert "dark_spots" in reasons and "pores" in reasons
    regions = region_values(zones)
    assert regions["dark_circles"] == {"right_under_eye": pytest.approx(6.0)}
    assert regions["redness"]["nose"] == 16.0 and "forehead" not in regions["redness"]
    assert regions["oiliness"]["right_cheek"] == pytest.approx(8.0 / 400.0)


def test_served_outputs_become_zones_and_empty_slots_reasons() -> None:
    slots = len(contract.PATCH_SLOTS)
    outputs = {m.name: np.arange(slots, dtype=np.float32) for m in contract.ZONE_MEASURES}
    empty = ("wrinkles", "glabella")
    zones, reasons = served_zones(outputs, {empty: "outside_photo"})
    assert reasons == {zone_key("glabella", W): "outside_photo"}
    forehead = contract.PATCH_SLOTS.index(("wrinkles", "forehead"))
    assert zones[zone_key("forehead", W)] == {"lines": forehead, "line_pixels": forehead}
    cheek = contract.PATCH_SLOTS.index(("colour", "right_cheek"))
    assert zones[zone_key("right_cheek", C)]["median_ita"] == cheek


def test_a_design_reading_is_read_by_its_candidate_and_no_face_is_said() -> None:
    reading = Reading(
        "p.jpg", "original", zones={zone_key("forehead", W): {"across1.2": 2.0, "line_pixels": 50.0}}
    )
    design = Design("across1.2", ("forehead",), {"forehead": 1.0}, {"forehead": 1.0})
    assert reading_values(reading, design)[0]["wrinkles"] == pytest.approx(1.0)
    _, reasons = reading_values(Reading("p.jpg", "original", face_found=False), DESIGN)
    assert set(reasons.values()) == {"no_face"}
