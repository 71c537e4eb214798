"""FedProx (Li et al., 2020): FedAvg whose local objective adds a proximal term.

    h_k(w) = F_k(w) + (mu / 2) * ||w - w_t||^2     (so grad h_k = grad F_k + mu * (w - w_t))

The task applies the term from the per-hospital setting "mu", so another strategy (FedMRL) can
choose mu per hospital per round. Aggregation is FedAvg's; mu = 0 is FedAvg exactly.
"""

from __future__ import annotations

from fedsim.protocol import Cohort, Instruction, LocalResult
from fedsim.strategies.base import sample_shares, weighted_instructions
from fedsim.strategies.fedavg import FedAvg
from fedsim.params import Params


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float) -> None:
        self.mu = mu

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort), mu=self.mu)

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: object) -> tuple[None, dict[str, float]]:
        return None, {"mu": float(instruction.settings["mu"])}
