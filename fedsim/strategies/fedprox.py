"""FedProx (Li et al., 2020): FedAvg whose local objective adds a proximal term.

    h_k(w) = F_k(w) + (mu / 2) * ||w - w_t||^2     (so grad h_k = grad F_k + mu * (w - w_t))

The task applies the term from the plan's `mu`, so another strategy (FedMRL) can choose mu per
hospital per round. Aggregation is FedAvg's; mu = 0 is FedAvg exactly.
"""

from __future__ import annotations

from typing import Literal, Mapping

from pydantic import Field

from fedsim.params import Params
from fedsim.protocol import PROXIMAL, Cohort, Instruction, LocalResult
from fedsim.strategies.base import StrategyConfig, sample_shares, weighted_instructions
from fedsim.strategies.fedavg import FedAvg


class FedProxConfig(StrategyConfig):
    """FedProx: local objective + (mu/2)||w - w_global||^2."""

    name: Literal["fedprox"] = "fedprox"
    mu: float = Field(0.01, ge=0)

    def build(self, config, task) -> "FedProx":
        return FedProx(self.mu)

    def requirements(self) -> Mapping[str, str]:
        return {PROXIMAL: "mu > 0"} if self.mu > 0 else {}


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float) -> None:
        self.mu = mu

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort), mu=self.mu)

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: object) -> tuple[None, dict[str, float]]:
        return None, {"mu": instruction.plan.mu}
