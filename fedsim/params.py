"""Model parameters as plain numpy: the currency between server, workers and strategies.

A `Params` is an ordered name -> array mapping (a torch state_dict without torch), so strategies,
the server and the engine stay framework-free (the server actor never imports torch) and
everything pickles cheaply through Ray's object store.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

Params = dict[str, np.ndarray]


def is_trainable_float(array: np.ndarray) -> bool:
    """Float arrays are aggregated; integer buffers (BatchNorm's num_batches_tracked) are not."""
    return np.issubdtype(array.dtype, np.floating)


def is_statistic(name: str) -> bool:
    """Normalisation running statistics: averaged like weights, but not gradient-trained."""
    return name.endswith(("running_mean", "running_var"))


def is_trained(name: str, array: np.ndarray) -> bool:
    """Parameters that local SGD updates (the ones update-based strategies normalise or step)."""
    return is_trainable_float(array) and not is_statistic(name)


def params_nbytes(params: Mapping[str, np.ndarray]) -> int:
    return int(sum(array.nbytes for array in params.values()))
