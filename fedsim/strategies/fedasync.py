"""FedAsync (Xie et al. 2019, "Asynchronous Federated Optimization").

Every arrival is applied at once: hospital i, which started from version tau (the model then)
and sends its trained model w_i, moves the current model w (version t) by

    w <- (1 - alpha_t) * w + alpha_t * w_i,    alpha_t = alpha * s(t - tau)

with the paper's polynomial staleness s_a(x) = (x + 1)^(-a) or the constant s = 1
(fedsim.strategies.asynchronous), for every float array the hospital shares.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedsim.params import Params, is_trainable_float
from fedsim.protocol import Instruction, LocalResult
from fedsim.strategies.asynchronous import Arrival, AsynchronousConfig, AsynchronousStrategy, StalenessConfig


class FedAsyncConfig(AsynchronousConfig):
    """FedAsync: mixing weight `alpha` (the paper's experiments use 0.6 with a = 0.5)."""

    name: Literal["fedasync"] = "fedasync"
    alpha: float = Field(0.6, gt=0, le=1)

    def build(self, config, task) -> "FedAsync":
        return FedAsync(self.alpha, self.staleness)


class FedAsync(AsynchronousStrategy):
    name = "fedasync"

    def __init__(self, alpha: float, staleness: StalenessConfig) -> None:
        super().__init__(staleness)
        self.alpha = alpha

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return {name: array.astype(np.float64) for name, array in result.params.items() if is_trainable_float(array)}

    def step(self, broadcast: Params, arrivals: list[Arrival]) -> tuple[Params, dict[str, float]]:
        (arrival,) = arrivals
        alpha_t = self.alpha * self.staleness.weight(arrival.staleness)
        updated = dict(broadcast)
        for name, trained in arrival.update.items():
            updated[name] = ((1 - alpha_t) * broadcast[name].astype(np.float64) + alpha_t * trained).astype(broadcast[name].dtype)
        return updated, {"alpha": alpha_t}
