"""FedBN (Li et al., 2021): batch normalisation stays at each hospital.

Every BatchNorm parameter and running statistic is local: a hospital trains from the global
shared layers plus its own BN (kept by the engine between its rounds; the initial BN on its first
round) and sends only the non-BN layers, which are averaged as in FedAvg. A hospital is evaluated
with its own BN. The global model's BN never trains, so the global test normalises each test batch
with that batch's own statistics (`global_eval_batch_statistics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.params import Params
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalResult
from fedsim.strategies.base import Strategy, sample_shares, weighted_instructions
from fedsim.strategies.fedavg import replace_with_totals, weighted_params


class FedBN(Strategy):
    name = "fedbn"
    keeps_hospital_state = True
    global_eval_batch_statistics = True

    def __init__(self, local_keys: frozenset[str]) -> None:
        if not local_keys:
            raise ValueError("strategy fedbn: the model has no BatchNorm layers to keep local")
        self.local_keys = local_keys

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def model_params(self, broadcast: Params, state: Any = None) -> Params:
        return broadcast if state is None else {**broadcast, **state}

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return weighted_params(result, instruction, skip=self.local_keys)

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: Any) -> tuple[Params, dict[str, float]]:
        return {name: result.params[name] for name in self.local_keys}, {}

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        return replace_with_totals(broadcast, aggregate.total), {}
