"""Routine suggestions from configs/recommendations.json, chosen by concern severity and skin type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.concerns import registry

# The concerns that earn suggestions, worst first, and how many to give at most.
SEVERITY_RANK = {"very_severe": 4, "severe": 3, "moderate": 2, "mild": 1}
MAX_CONCERNS = 3


class Recommender:
    """Picks suggestions for the worst concerns and the skin type."""

    def __init__(self, table: dict[str, Any]) -> None:
        if not isinstance(table.get("concerns"), dict) or not isinstance(table.get("skin_type"), dict):
            raise ValueError("recommendations table needs 'concerns' and 'skin_type' objects")
        keys = {record.recommendation_key for record in registry()}
        unknown = sorted(set(table["concerns"]) - keys)
        if unknown:
            raise ValueError(f"recommendations table names concerns the registry lacks: {', '.join(unknown)}")
        self.table = table
        self._keys = {record.name: record.recommendation_key for record in registry()}

    @classmethod
    def from_file(cls, path: Path) -> Recommender:
        """Load the table; raises OSError or ValueError (at start-up, never per request)."""
        return cls(json.loads(path.read_text()))

    def recommend(self, concerns: dict[str, Any], skin_type: dict[str, Any]) -> list[dict[str, Any]]:
        """Suggestions for the (at most three) most severe concerns, the skin type, and the basics."""
        ranked = sorted(
            (
                (SEVERITY_RANK.get(str(c.get("severity")), 0), -(c.get("score") or 0.0), name)
                for name, c in concerns.items()
            ),
            reverse=True,
        )
        suggestions = []
        for rank, _, name in ranked[:MAX_CONCERNS]:
            if rank == 0:
                break
            level = concerns[name]["severity"]
            texts = self.table["concerns"].get(self._keys.get(name, name), {}).get(level, [])
            if texts:
                suggestions.append({"concern": name, "severity": level, "tips": list(texts)})
        label = skin_type.get("label")
        if label and self.table["skin_type"].get(label):
            suggestions.append({"skin_type": label, "tips": list(self.table["skin_type"][label])})
        if self.table.get("always"):
            suggestions.append({"tips": list(self.table["always"])})
        return suggestions
