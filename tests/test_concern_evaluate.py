"""The evaluation's statistics: Spearman with ties, bootstrap intervals, re-send agreement."""

from __future__ import annotations

import numpy as np
import pytest

from export.concerns.evaluate import Scored, bootstrap, ranks, resend_agreement, spearman


def test_ranks_share_ties() -> None:
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_of_known_orders() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert np.isnan(spearman([1, 2], [1, 2]))


def test_bootstrap_interval_holds_the_statistic() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(5.0, 1.0, 200)
    low, high = bootstrap(lambda pick: float(np.mean(data[pick])), len(data), 500, 0)
    assert low < float(np.mean(data)) < high
    assert high - low < 0.5


def test_resend_agreement_counts_pairs_scored_twice() -> None:
    sent = {
        "a": Scored("a", 40, {}, {}, {"wrinkles": 60.0, "redness": 5.0}),
        "b": Scored("b", 70, {}, {}, {"wrinkles": 8.0}),
    }
    resent = {
        "a": Scored("a", 40, {}, {}, {"wrinkles": 58.0, "redness": 12.0}),
        "b": Scored("b", 70, {}, {"wrinkles": "photo_too_small"}, {}),
    }
    table = resend_agreement(sent, resent, 100, 0)
    assert table["wrinkles"]["pairs"] == 1
    assert table["wrinkles"]["kept"]["value"] == 1.0  # type: ignore[index]
    assert table["redness"]["kept"]["value"] == 0.0  # type: ignore[index]
    assert table["redness"]["median_change"]["value"] == pytest.approx(7.0)  # type: ignore[index]
