"""The model's raw answer for one face, as post-scoring consumes it (no gRPC types, so export/ can use it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Prediction:
    """The model's raw outputs for one face, and the version that produced them."""

    model_name: str
    version: int
    signals: NDArray[np.float32]  # [len(LABEL_NAMES), len(SIGNAL_NAMES)]
    acne_peaks: NDArray[np.float32]  # [MAX_LESIONS, 3] (y, x relative to the face image, score)
