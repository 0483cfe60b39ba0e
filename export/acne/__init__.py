"""The learned acne lesion detectors (CenterNet-style heatmaps, trained on ACNE04) and their evaluation.

Two networks: "plain" (`network.build_detector`) and "lite" (the EfficientNet-Lite one in
`lite_detector.py`, the head of the published version 6); `export.model.DetectorHead` names which one a
trained folder holds and loads it. The model gives heatmap logits; `network.decode_peaks` turns
probabilities into (y, x, score) rows.
"""

from __future__ import annotations

from export.acne.network import build_detector, decode_peaks, fold_batch_norm

__all__ = ["build_detector", "decode_peaks", "fold_batch_norm"]
