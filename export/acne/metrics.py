"""Lesion-level matching, counting and grading metrics for ACNE04: point-in-box matching, F1, MAE,
count-to-grade bands, score-threshold choice and bootstrap confidence intervals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

GRADES = 4


def match_peaks(points: NDArray[np.float32], boxes: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Mark which predicted points are true positives, one-to-one, greedy in the given order.

    `points` [K, 2] are (y, x) pixel centres sorted by score descending, `boxes` [N, 4] are (xmin,
    ymin, xmax, ymax). A point is a true positive when it falls inside a box not matched yet; if
    several qualify it takes the one whose centre is nearest. No IoU is involved: the detector
    predicts centres only.
    """
    return match_points(points, boxes)[0]


def match_points(
    points: NDArray[np.float32], boxes: NDArray[np.float32]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """`match_peaks`, also saying which boxes were matched: (hits per point, matched per box)."""
    hits = np.zeros(len(points), dtype=bool)
    free = np.ones(len(boxes), dtype=bool)
    if len(boxes) == 0:
        return hits, ~free
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    for i, (y, x) in enumerate(points):
        inside = free & (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
        if not inside.any():
            continue
        distance = np.where(inside, (centre_x - x) ** 2 + (centre_y - y) ** 2, np.inf)
        j = int(np.argmin(distance))
        free[j] = False
        hits[i] = True
    return hits, ~free


@dataclass(frozen=True)
class ImageMatches:
    """Scores of one image's candidate peaks, which are true positives, and its labelled count."""

    scores: NDArray[np.float32]
    hits: NDArray[np.bool_]
    true_count: int

    def at(self, threshold: float) -> tuple[int, int, int]:
        """Return (true positives, predictions, labelled lesions) at a score threshold."""
        keep = self.scores >= threshold
        return int(np.sum(self.hits & keep)), int(np.sum(keep)), self.true_count


def match_image(peaks: NDArray[np.float32], boxes: NDArray[np.float32], image_px: int) -> ImageMatches:
    """Match one image's decoded peaks [K, 3] (relative y, x, score; zero rows ignored) to its boxes."""
    valid = peaks[:, 2] > 0
    peaks = peaks[valid]
    order = np.argsort(-peaks[:, 2], kind="stable")
    peaks = peaks[order]
    hits = match_peaks(peaks[:, :2] * image_px, boxes)
    return ImageMatches(scores=peaks[:, 2].astype(np.float32), hits=hits, true_count=len(boxes))


def lesion_scores(table: NDArray[np.int64]) -> tuple[float, float, float]:
    """Micro precision, recall and F1 over images from rows of (tp, predicted, labelled)."""
    tp, predicted, labelled = (float(v) for v in table.sum(axis=0))
    precision = tp / predicted if predicted else 0.0
    recall = tp / labelled if labelled else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def count_table(matches: list[ImageMatches], threshold: float) -> NDArray[np.int64]:
    """Rows of (tp, predicted, labelled), one per image, at a threshold."""
    return np.array([m.at(threshold) for m in matches], dtype=np.int64).reshape(-1, 3)


def choose_threshold(matches: list[ImageMatches], candidates: NDArray[np.float64]) -> float:
    """Return the candidate threshold with the best lesion F1 (ties: the lower count MAE)."""
    best, best_key = float(candidates[0]), (-1.0, 0.0)
    for threshold in candidates:
        table = count_table(matches, float(threshold))
        key = (round(lesion_scores(table)[2], 4), -float(np.mean(np.abs(table[:, 1] - table[:, 2]))))
        if key > best_key:
            best, best_key = float(threshold), key
    return best


def fit_bands(counts: NDArray[np.int64], grades: NDArray[np.int64]) -> tuple[float, float, float]:
    """Fit count edges (e1 <= e2 <= e3) maximising grading accuracy; grade = #edges <= count.

    Exhaustive over integer edges; among equally accurate edges each is moved to the middle of its
    run of optimal values, so the bands do not hug one sample. Edges are half-integers.
    """
    top = int(max(counts.max(initial=0), 1)) + 2
    below = np.stack(
        [np.searchsorted(np.sort(counts[grades == g]), np.arange(top + 1)) for g in range(GRADES)]
    )
    totals = below[:, -1]
    e = np.arange(top + 1)
    # correct(e1, e2, e3) = below0[e1] + below1[e2] - below1[e1] + below2[e3] - below2[e2] + n3 - below3[e3]
    first = (below[0] - below[1])[:, None, None]
    second = (below[1] - below[2])[None, :, None]
    third = (below[2] - below[3])[None, None, :]
    correct = first + second + third + totals[3]
    ordered = (e[:, None, None] <= e[None, :, None]) & (e[None, :, None] <= e[None, None, :])
    correct = np.where(ordered, correct, -1)
    best = correct.max()
    edges = [int(v) for v in np.unravel_index(int(np.argmax(correct)), correct.shape)]
    for axis in range(3):
        index: list[slice | int] = list(edges)
        index[axis] = slice(None)
        line = correct[tuple(index)] == best
        low = high = edges[axis]
        while low > 0 and line[low - 1]:
            low -= 1
        while high < len(line) - 1 and line[high + 1]:
            high += 1
        edges[axis] = (low + high) // 2
    return (edges[0] - 0.5, edges[1] - 0.5, edges[2] - 0.5)


def apply_bands(counts: NDArray[np.int64], edges: tuple[float, float, float]) -> NDArray[np.int64]:
    """Map lesion counts to grades 0-3 with band edges from `fit_bands`."""
    return np.sum(counts[:, None] >= np.asarray(edges)[None, :], axis=1).astype(np.int64)


def confusion(true: NDArray[np.int64], predicted: NDArray[np.int64]) -> NDArray[np.int64]:
    """4x4 confusion matrix, rows the labelled grade, columns the predicted grade."""
    matrix = np.zeros((GRADES, GRADES), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def bootstrap_intervals(
    table: NDArray[np.int64],
    grades: NDArray[np.int64],
    predicted_grades: NDArray[np.int64],
    seed: int,
    rounds: int,
    calibrated_counts: NDArray[np.float64] | None = None,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of lesion F1, count MAE (raw, and calibrated when given) and grading
    accuracy, resampling images."""
    rng = np.random.default_rng(seed)
    n = len(table)
    stats: dict[str, list[float]] = {"f1": [], "mae": [], "grading_accuracy": []}
    if calibrated_counts is not None:
        stats["mae_calibrated"] = []
    for _ in range(rounds):
        pick = rng.integers(0, n, size=n)
        stats["f1"].append(lesion_scores(table[pick])[2])
        stats["mae"].append(float(np.mean(np.abs(table[pick, 1] - table[pick, 2]))))
        if calibrated_counts is not None:
            stats["mae_calibrated"].append(float(np.mean(np.abs(calibrated_counts[pick] - table[pick, 2]))))
        stats["grading_accuracy"].append(float(np.mean(grades[pick] == predicted_grades[pick])))
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in stats.items()}
