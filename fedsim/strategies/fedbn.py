"""FedBN (Li et al., 2021): batch normalisation stays at each hospital.

Every BatchNorm parameter and running statistic is local: a hospital trains from the global
shared layers plus its own BN (kept by the engine between its rounds; the initial BN on its first
round) and sends only the non-BN layers, which are averaged as in FedAvg. A hospital is evaluated
with its own BN. The global model's BN never trains, so the global test normalises each test batch
with that batch's own statistics (`global_eval_batch_statistics`).
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from fedsim.errors import ConfigError
from fedsim.params import Params
from fedsim.protocol import NORMALIZATION_LAYERS, Instruction, LocalResult
from fedsim.strategies.base import StrategyConfig
from fedsim.strategies.fedavg import FedAvg


class FedBNConfig(StrategyConfig):
    name: Literal["fedbn"] = "fedbn"

    def build(self, config, task) -> "FedBN":
        return FedBN(task.normalization_keys())

    def requirements(self) -> Mapping[str, str]:
        return {NORMALIZATION_LAYERS: "they are what FedBN keeps at each hospital"}


class FedBN(FedAvg):
    name = "fedbn"
    keeps_hospital_state = True
    global_eval_batch_statistics = True

    def __init__(self, local_keys: frozenset[str]) -> None:
        if not local_keys:
            raise ConfigError("strategy.name: fedbn needs normalisation layers to keep local; the model has none")
        self.local_keys = local_keys

    def model_params(self, broadcast: Params, state: Any = None) -> Params:
        return broadcast if state is None else {**broadcast, **state}

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: Any) -> tuple[Params, dict[str, float]]:
        return {name: result.params[name] for name in self.local_keys}, {}
