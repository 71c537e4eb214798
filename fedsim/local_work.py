"""Who works in a round and how much: the sampled cohort, and how many local epochs each
hospital runs (system heterogeneity)."""

from __future__ import annotations

import numpy as np

from fedsim.config import Config, TrainConfig
from fedsim.engine.sampling import sample_hospitals
from fedsim.protocol import Cohort
from fedsim.seeding import Stream, rng_for
from fedsim.tasks.base import Task


def round_cohort(config: Config, task: Task, sizes: np.ndarray, run_seed: int, round_index: int) -> Cohort:
    """The round's sampled hospitals with their sizes (`sizes`: the task's hospital_sizes()),
    local epochs and local steps."""
    hospitals = sample_hospitals(run_seed, round_index, task.num_hospitals, config.clients_per_round())
    epochs = local_epochs(config.train, sizes, hospitals, run_seed, round_index)
    steps = np.array([task.local_steps(int(h), int(e)) for h, e in zip(hospitals, epochs)], dtype=np.int64)
    return Cohort(hospitals, sizes[hospitals], epochs, steps)


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
