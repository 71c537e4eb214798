"""FedOpt (Reddi et al., 2021, Algorithm 2): the server treats the mean local update as a
pseudo-gradient and steps an adaptive optimiser with it; FedAdam and FedYogi differ only in the
second moment (fedsim.strategies.fedadam, fedsim.strategies.fedyogi).

    Delta_t = sum_k p_k (w_k - w_t)                                 (sample-weighted mean update)
    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
    v_t = second_moment(v_{t-1}, Delta_t)
    w_{t+1} = w_t + server_lr * m_t / (sqrt(v_t) + tau)

with m_{-1} = 0 and v_{-1} = tau^2, no bias correction, as in the paper. BatchNorm running
statistics are averaged directly (they are not trained by gradients).
"""

from __future__ import annotations

from abc import abstractmethod
import numpy as np
from pydantic import Field

from fedsim.params import Params, is_statistic, is_trained
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalResult
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, step_trained, weighted_instructions


class FedOptConfig(StrategyConfig):
    """Server optimiser settings; defaults from the paper's experiments."""

    server_lr: float = Field(0.01, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)


def mean_update_contribution(result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
    """p_k (w_k - w_t) for trained parameters, p_k * statistic for normalisation statistics."""
    shares: dict[str, np.ndarray] = {}
    for name, local in result.params.items():
        if is_trained(name, local):
            shares[name] = instruction.weight * (local.astype(np.float64) - broadcast[name])
        elif is_statistic(name):
            shares[name] = instruction.weight * local.astype(np.float64)
    return shares


class FedOpt(Strategy):
    sums_updates = True
    def __init__(self, spec: FedOptConfig) -> None:
        self.server_lr, self.beta1, self.beta2, self.tau = spec.server_lr, spec.beta1, spec.beta2, spec.tau
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    @abstractmethod
    def second_moment(self, v_prev: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """v_t from v_{t-1} and the pseudo-gradient."""

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return mean_update_contribution(result, instruction, broadcast)

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        step_sq = 0.0

        def adaptive_step(name: str, w: np.ndarray, delta: np.ndarray) -> np.ndarray:
            nonlocal step_sq
            m = self.beta1 * self.m.get(name, 0.0) + (1 - self.beta1) * delta
            v = self.second_moment(self.v.get(name, np.full_like(delta, self.tau**2)), delta)
            self.m[name], self.v[name] = m, v
            step = self.server_lr * m / (np.sqrt(v) + self.tau)
            step_sq += float(np.sum(step**2))
            return w.astype(np.float64) + step

        updated = step_trained(broadcast, aggregate.total, adaptive_step)
        return updated, {"server_step_norm": float(np.sqrt(step_sq))}
