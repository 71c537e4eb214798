"""FedAvg (McMahan et al., 2017): the global model is the sample-weighted mean of local models.

    w_{t+1} = sum_k (n_k / n) * w_k,   n = sum of n_k over the sampled hospitals k.

Integer buffers (BatchNorm's num_batches_tracked) are bookkeeping, not weights: they keep the
global model's value.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedsim.params import Params, is_trainable_float
from fedsim.protocol import Aggregate, Instruction, LocalResult
from fedsim.strategies.base import Strategy


class FedAvg(Strategy):
    name = "fedavg"

    def configure(self, round_index: int, hospitals: Sequence[int], sizes: np.ndarray) -> list[Instruction]:
        total = float(np.sum(sizes))
        return [Instruction(int(h), float(n) / total) for h, n in zip(hospitals, sizes)]

    def contribution(self, result: LocalResult, instruction: Instruction, global_params: Params) -> dict[str, np.ndarray]:
        return {
            name: instruction.weight * array.astype(np.float64)
            for name, array in result.params.items()
            if is_trainable_float(array)
        }

    def aggregate(self, round_index: int, global_params: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        total = aggregate.total
        if total is None:
            raise ValueError("FedAvg aggregates on workers and expects a summed total")
        updated = {
            name: total[name].astype(array.dtype) if name in total else array
            for name, array in global_params.items()
        }
        return updated, {}
