"""FedRep (Collins et al., 2021): FedPer's split, trained by the alternating rule.

Each round a hospital first trains its own head with the body frozen for `head_epochs` epochs
(the paper's tau_h; it uses 10), then the body with the head frozen for the round's
`train.epochs` (tau_b):

    h_k <- GD_{tau_h}(F_k(body_t, .), h_k),   body_k <- GD_{tau_b}(F_k(., h_k), body_t),
    body_{t+1} = sum_k (n_k / n) * body_k.

Only the body is sent; the head stays at the hospital (engine-held), which is scored with it.
Needs a task that trains in phases (classification; the scheduling DQN's Adam learner does not).
"""

from __future__ import annotations

from typing import Literal, Mapping

from pydantic import Field

from fedsim.protocol import HEAD_FIRST, Cohort, Instruction
from fedsim.strategies.base import sample_shares, weighted_instructions
from fedsim.strategies.fedper import FedPer, FedPerConfig, head_keys


class FedRepConfig(FedPerConfig):
    """FedRep: local head trained first (body frozen), then the shared body (head frozen); the
    head is chosen as FedPer's (`head`)."""

    name: Literal["fedrep"] = "fedrep"  # type: ignore[assignment]
    head_epochs: int = Field(10, ge=0)

    def build(self, config, task) -> "FedRep":
        return FedRep(head_keys(task.new_module(), self.head), self.head_epochs)

    def requirements(self) -> Mapping[str, str]:
        return {HEAD_FIRST: "it trains the head with the body frozen, then the body"}

    def check(self, config) -> None:
        if config.privacy is not None and config.privacy.mechanism == "dp_sgd":
            raise ValueError("strategy.name: fedrep trains in two phases with two optimisers, which one Opacus "
                             "DP-SGD optimiser (privacy.mechanism dp_sgd) does not cover")


class FedRep(FedPer):
    name = "fedrep"

    def __init__(self, head: frozenset[str], head_epochs: int) -> None:
        super().__init__(head)
        self.head_epochs = head_epochs

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort), head_keys=self.local_keys, head_epochs=self.head_epochs)
