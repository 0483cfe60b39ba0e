"""The ages data set (`data/ages`: official portraits with each person's age) and its fixed split into a
training part, on which the concern measures and cut-offs are chosen, and a held-out validation part.

The split is stratified by age band and decided by a hash of the bioguide id, never by anything
measured: each person's key is SHA-256 of "shine-ages:" + id (first 8 hex digits as a fraction of 2^32);
within each band of AGE_BANDS the people are ordered by key and the first round(VALIDATION_SHARE x n)
are held out. Without the bands a plain key threshold held out only 3 of the 24 people under 45, too few
for the under-45 target. Nothing may be chosen on the validation part; only
`python -m export concerns-report` reads it.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "validation")
# About a third of each band held out: enough people (~110) for a Spearman interval of about +-0.15,
# while the training part keeps ~200 to choose zones and cut-offs on.
VALIDATION_SHARE = 0.35
_SALT = "shine-ages:"
# Age bands the split's balance is reported over (ages 31-97 in the data).
AGE_BANDS: tuple[tuple[int, int], ...] = ((0, 44), (45, 59), (60, 74), (75, 200))


@dataclass(frozen=True)
class Portrait:
    """One row of ages.csv."""

    path: Path
    bioguide: str
    age: int
    sex: str


def split_key(bioguide: str) -> float:
    """A person's place in the split order, in [0, 1): a hash of the bioguide id."""
    digest = hashlib.sha256((_SALT + bioguide).encode("ascii")).hexdigest()
    return int(digest[:8], 16) / 2**32


def assign_splits(portraits: list[Portrait]) -> dict[str, str]:
    """bioguide id -> 'train' or 'validation': within each age band, the round(VALIDATION_SHARE x n)
    people with the lowest split_key are held out."""
    splits: dict[str, str] = {}
    for low, high in AGE_BANDS:
        band = sorted((p for p in portraits if low <= p.age <= high), key=lambda p: split_key(p.bioguide))
        held = round(VALIDATION_SHARE * len(band))
        for rank, portrait in enumerate(band):
            splits[portrait.bioguide] = "validation" if rank < held else "train"
    return splits


def age_band(age: int) -> str:
    """The band an age falls in, e.g. '45-59'."""
    for low, high in AGE_BANDS:
        if low <= age <= high:
            return f"{low}-{high}" if high < 200 else f"{low}+"
    raise ValueError(f"age {age} is outside every band")


def read_portraits(folder: Path, split: str | None = None) -> list[Portrait]:
    """The portraits listed in `folder`/ages.csv, optionally only one split; raises FileNotFoundError."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    with (folder / "ages.csv").open(newline="") as handle:
        rows = [
            Portrait(folder / row["file"], row["bioguide"], int(row["age_2014"]), row["gender"])
            for row in csv.DictReader(handle)
        ]
    splits = assign_splits(rows)
    return [row for row in rows if split is None or splits[row.bioguide] == split]
