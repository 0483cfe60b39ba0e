"""The ages data set's split: fixed by the bioguide id and the age band, about a third held out."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from export.ages import AGE_BANDS, VALIDATION_SHARE, age_band, assign_splits, read_portraits, split_key
from tests.conftest import data_dir


@pytest.fixture(scope="module")
def ages() -> Path:
    return data_dir("ages")


def test_split_is_a_fixed_rule_on_the_id() -> None:
    assert split_key("A000022") == split_key("A000022")
    assert 0.0 <= split_key("A000022") < 1.0
    assert split_key("A000022") != split_key("A000109")


def test_every_band_holds_out_about_a_third(ages: Path) -> None:
    portraits = read_portraits(ages)
    splits = assign_splits(portraits)
    counts = Counter((age_band(p.age), splits[p.bioguide]) for p in portraits)
    for low, _high in AGE_BANDS:
        band = age_band(low)
        total = counts[(band, "train")] + counts[(band, "validation")]
        assert abs(counts[(band, "validation")] - VALIDATION_SHARE * total) <= 0.5, band
    train, validation = read_portraits(ages, "train"), read_portraits(ages, "validation")
    assert len(train) + len(validation) == len(portraits)
    assert not {p.bioguide for p in train} & {p.bioguide for p in validation}
    assert sum(p.age < 45 for p in validation) >= 6


def test_split_does_not_depend_on_row_order_or_on_other_bands(ages: Path) -> None:
    portraits = read_portraits(ages)
    splits = assign_splits(portraits)
    assert assign_splits(portraits[::-1]) == splits
    older = [p for p in portraits if p.age >= 45]
    older_splits = assign_splits(older)
    assert all(older_splits[p.bioguide] == splits[p.bioguide] for p in older)
    # A person's age is what places them: moving one person across bands changes their band only.
    moved = [replace(p, age=30) if p is portraits[0] else p for p in portraits]
    assert sum(assign_splits(moved)[p.bioguide] != splits[p.bioguide] for p in portraits) <= 3


def test_unknown_split_is_refused(ages: Path) -> None:
    with pytest.raises(ValueError):
        read_portraits(ages, "test")
