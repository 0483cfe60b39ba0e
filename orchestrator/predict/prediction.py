"""The model's raw answer for one face, as post-scoring consumes it (no gRPC types, so export/ can use it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from serving import contract


@dataclass(frozen=True)
class Prediction:
    """The model's raw outputs for one face, and the version that produced them. `signals` holds the
    signals this version measures (contract.SIGNALS names), each one value per mask label
    (contract.LABEL_NAMES order); `acne_peaks` is None for a version without an acne head."""

    model_name: str
    version: int
    signals: Mapping[str, NDArray[np.float32]]
    acne_peaks: NDArray[np.float32] | None  # [MAX_LESIONS, 3] (y, x relative to the face image, score)
    # Contract 4: each zone measure's value per patch slot (contract.PATCH_SLOTS order), by measure name.
    zones: Mapping[str, NDArray[np.float32]] | None = None


def signal_columns(matrix: NDArray[np.float32], names: tuple[str, ...]) -> dict[str, NDArray[np.float32]]:
    """Named signals from a [labels, signals] matrix whose columns are `names` (contract 2's axis)."""
    return {name: np.ascontiguousarray(matrix[:, index]) for index, name in enumerate(names)}


def batch_signals(outputs: Mapping[str, NDArray[np.float32]]) -> dict[str, NDArray[np.float32]]:
    """Named signals [faces, labels] from one batch of a version's outputs (NumPy arrays by output name):
    contract 3's one output per signal, or contract 2's "signals" output and its named axis."""
    if contract.SIGNAL_AXIS.name in outputs:
        matrix = np.asarray(outputs[contract.SIGNAL_AXIS.name])
        return {name: matrix[..., index] for index, name in enumerate(contract.SIGNAL_AXIS_NAMES)}
    known = contract.signal_names()
    prefix = contract.SIGNAL_PREFIX
    return {
        name[len(prefix) :]: np.asarray(value)
        for name, value in outputs.items()
        if name.startswith(prefix) and name[len(prefix) :] in known
    }
