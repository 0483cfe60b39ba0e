"""The learned acne lesion detector (CenterNet-style, trained on ACNE04) and its evaluation.

Served use: `build_detector()` then `load_weights("build/acne/detector.weights.h5")`; the model gives
heatmap logits, `decode_peaks(tf.sigmoid(logits), max_peaks)` gives (y, x, score) rows.
"""

from __future__ import annotations

from export.acne.network import build_detector, decode_peaks, fold_batch_norm

__all__ = ["build_detector", "decode_peaks", "fold_batch_norm"]
