"""FedAvgM (Hsu et al., 2019): FedAvg with server momentum, which damps the oscillation that
non-IID cohorts cause from round to round.

    Delta_t = sum_k p_k (w_k - w_t)             (sample-weighted mean update, p_k = n_k / n)
    v_t = beta * v_{t-1} + Delta_t               (v_0 = 0)
    w_{t+1} = w_t + server_lr * v_t

beta = 0 and server_lr = 1 is FedAvg. BatchNorm running statistics are averaged directly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedsim.params import Params
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalResult
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, step_trained, weighted_instructions
from fedsim.strategies.fedopt import mean_update_contribution


class FedAvgMConfig(StrategyConfig):
    name: Literal["fedavgm"] = "fedavgm"
    server_lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="beta, the server momentum")

    def build(self, config, task) -> "FedAvgM":
        return FedAvgM(self.server_lr, self.momentum)


class FedAvgM(Strategy):
    name = "fedavgm"
    sums_updates = True

    def __init__(self, server_lr: float, momentum: float) -> None:
        self.server_lr, self.momentum = server_lr, momentum
        self.velocity: dict[str, np.ndarray] = {}

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return mean_update_contribution(result, instruction, broadcast)

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        def momentum_step(name: str, w: np.ndarray, delta: np.ndarray) -> np.ndarray:
            self.velocity[name] = self.momentum * self.velocity.get(name, 0.0) + delta
            return w.astype(np.float64) + self.server_lr * self.velocity[name]

        updated = step_trained(broadcast, aggregate.total, momentum_step)
        norm = float(np.sqrt(sum(float(np.sum(v**2)) for v in self.velocity.values())))
        return updated, {"server_velocity_norm": norm}
