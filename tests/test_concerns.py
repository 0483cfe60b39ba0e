"""The concern registry holds together: every record names regions the mask has, signals the contract
lists and the model measures, a raw rule post-scoring knows, and severity bands that cover 0-100."""

from __future__ import annotations

import pytest

from orchestrator.scoring.concerns import RULES
from serving import contract
from serving.concerns import (
    ACNE_GRADES,
    RAW_RULES,
    Concern,
    concern_names,
    measured,
    region_columns,
    registry,
)


@pytest.mark.parametrize("record", registry(), ids=concern_names())
def test_each_record_is_readable(record: Concern) -> None:
    assert set(record.regions) <= set(contract.LABEL_NAMES)
    assert set(record.signals) <= set(contract.signal_names())
    assert record.raw in RAW_RULES
    assert record.raw == "lesions" or record.raw in RULES
    bounds = [bound for bound, _ in record.severities]
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] == 0
    assert record.label and record.measures and record.limits


def test_names_are_unique_and_the_lists_follow_the_table() -> None:
    assert len(set(concern_names())) == len(registry())
    assert [c.name for c in measured()] == [c.name for c in registry() if c.raw != "lesions"]
    assert region_columns() == tuple((c.name, r) for c in measured() for r in c.regions)
    assert [c.severity_labels for c in registry() if c.raw == "lesions"] == [("none", *ACNE_GRADES)]


def test_every_signal_has_a_measure() -> None:
    measures = pytest.importorskip("export.measures")
    assert set(measures.SIGNAL_MEASURES) == set(contract.signal_names())
    assert set(contract.SIGNAL_AXIS_NAMES) <= set(contract.signal_names()), "versions 5 and 6 stay readable"
