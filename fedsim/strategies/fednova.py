"""FedNova (Wang et al., 2020): normalised averaging, so hospitals doing more local steps do not
dominate (and bias) the global update.

With hospital k running tau_k local SGD steps with momentum rho, its cumulative update is
normalised by the number of effective steps

    a_k = [tau_k - rho * (1 - rho^tau_k) / (1 - rho)] / (1 - rho)     (a_k = tau_k when rho = 0)

    d_k = (w_t - w_k) / a_k,       tau_eff = sum_k p_k a_k,       p_k = n_k / n
    w_{t+1} = w_t - tau_eff * sum_k p_k d_k

(the paper's eq. (6)-(7) with FedAvg's p_k; server learning rate 1). With equal a_k this is
FedAvg. BatchNorm running statistics are not gradient steps: they are sample-weighted means.
A hospital that took no optimiser step (a_k = 0) moved nothing: it adds nothing to d or tau_eff.
"""

from __future__ import annotations

from typing import Literal, Mapping

import numpy as np

from fedsim.params import Params, is_statistic, is_trained
from fedsim.protocol import PLAIN_SGD, Aggregate, Cohort, Instruction, LocalResult
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, step_trained, weighted_instructions

_TAU_EFF = "fednova.tau_eff"


class FedNovaConfig(StrategyConfig):
    name: Literal["fednova"] = "fednova"

    def build(self, config, task) -> "FedNova":
        return FedNova(config.train.momentum)

    def requirements(self) -> Mapping[str, str]:
        return {PLAIN_SGD: "a_k counts SGD steps with momentum train.momentum"}


def effective_steps(steps: int, momentum: float) -> float:
    """a_k: the norm of FedNova's local aggregation vector for SGD with momentum."""
    if momentum == 0:
        return float(steps)
    return (steps - momentum * (1 - momentum**steps) / (1 - momentum)) / (1 - momentum)


class FedNova(Strategy):
    name = "fednova"

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        a_k = effective_steps(result.steps, self.momentum)
        p_k = instruction.weight
        shares: dict[str, np.ndarray] = {_TAU_EFF: np.array(p_k * a_k)}
        for name, local in result.params.items():
            if is_trained(name, local):
                moved = broadcast[name].astype(np.float64) - local
                shares[name] = p_k * moved / a_k if a_k > 0 else np.zeros_like(moved)
            elif is_statistic(name):
                shares[name] = p_k * local.astype(np.float64)
        return shares

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: object) -> tuple[None, dict[str, float]]:
        return None, {"fednova_a": effective_steps(result.steps, self.momentum)}

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        total = aggregate.total
        tau_eff = float(total[_TAU_EFF])
        updated = step_trained(broadcast, total, lambda name, w, d: w.astype(np.float64) - tau_eff * d)
        return updated, {"tau_eff": tau_eff}
