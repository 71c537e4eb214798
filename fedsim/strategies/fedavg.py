"""FedAvg (McMahan et al., 2017): the global model is the sample-weighted mean of local models.

    w_{t+1} = sum_k (n_k / n) * w_k,   n = sum of n_k over the sampled hospitals k.

Integer buffers (BatchNorm's num_batches_tracked) are bookkeeping, not weights: they keep the
global model's value.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedsim.params import Params, is_trainable_float
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalResult
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, weighted_instructions


class FedAvgConfig(StrategyConfig):
    name: Literal["fedavg"] = "fedavg"

    def build(self, config, task) -> "FedAvg":
        return FedAvg()


def weighted_params(result: LocalResult, instruction: Instruction, skip: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """weight * w_k for every float array the hospital shares."""
    return {
        name: instruction.weight * array.astype(np.float64)
        for name, array in result.params.items()
        if is_trainable_float(array) and name not in skip
    }


def replace_with_totals(broadcast: Params, total: dict[str, np.ndarray]) -> Params:
    """The broadcast with every summed array replaced (cast back to its dtype)."""
    return {name: total[name].astype(array.dtype) if name in total else array for name, array in broadcast.items()}


class FedAvg(Strategy):
    name = "fedavg"

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return weighted_params(result, instruction, skip=self.local_keys)

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        return replace_with_totals(broadcast, aggregate.total), {}
