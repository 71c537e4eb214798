"""How many local epochs each sampled hospital runs this round (system heterogeneity)."""

from __future__ import annotations

import numpy as np

from fedsim.config import TrainConfig
from fedsim.seeding import Stream, rng_for


def local_epochs(train: TrainConfig, all_sizes: np.ndarray, hospitals: np.ndarray, run_seed: int, round_index: int) -> np.ndarray:
    """Epochs per sampled hospital, following `train.epochs_mode` (see TrainConfig)."""
    if train.epochs_mode == "fixed":
        return np.full(len(hospitals), train.epochs, dtype=np.int64)
    assert train.max_epochs is not None  # guaranteed by TrainConfig validation
    if train.epochs_mode == "proportional":
        scaled = np.rint(train.max_epochs * all_sizes[hospitals] / max(1, int(all_sizes.max())))
        return np.clip(scaled, train.epochs, train.max_epochs).astype(np.int64)
    return np.array(
        [rng_for(run_seed, Stream.LOCAL_WORK, round_index, int(h)).integers(train.epochs, train.max_epochs + 1) for h in hospitals],
        dtype=np.int64,
    )
