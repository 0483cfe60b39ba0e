"""export/concerns/report.py: the design report's tables, written from the committed JSON report."""

from __future__ import annotations

import json

from export.concerns.combine import WRINKLE_GROUPS
from export.concerns.report import design_markdown
from tests.conftest import ROOT


def _tables(text: str) -> list[list[str]]:
    tables: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    return tables


def test_every_table_has_a_rule_and_rows_as_wide_as_its_header() -> None:
    report = json.loads((ROOT / "reports" / "concerns_design.json").read_text())
    tables = _tables(design_markdown(report))
    # Scales, wrinkle responses, the training part, then one re-send table per variant.
    assert len(tables) == 3 + len(report["resend"])
    for header, rule, *rows in tables:
        width = header.count("|")
        assert rule == "|" + "---|" * (width - 1)
        assert rows and all(row.count("|") == width for row in rows)
    scales, wrinkles, train, *resend = tables
    assert [row.split(" | ")[0][2:] for row in scales[2:]] == list(report["needed_scales"])
    assert wrinkles[0] == "| response | " + " | ".join(WRINKLE_GROUPS) + " | kept sites | combined vs age |"
    assert [row.split(" | ")[0][2:] for row in wrinkles[2:]] == list(report["wrinkle_candidates"])
    assert [row.split(" | ")[0][2:] for row in train[2:]] == list(report["train"])
    for table, variant in zip(resend, report["resend"].values(), strict=True):
        assert [row.split(" | ")[0][2:] for row in table[2:]] == list(variant)
