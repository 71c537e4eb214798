"""Ditto (Li et al., 2021): FedAvg's global model, and a personal model at every hospital.

The global model w trains exactly as FedAvg. Each sampled hospital k also trains its personal
model v_k (engine-held; w the first time) for the round's local epochs on

    min_v  F_k(v) + (lambda / 2) * ||v - w_t||^2,     w_t: the global model of the round's start,

so lambda -> infinity keeps v_k at w_t and lambda = 0 is local training (from w_t the first
time). Only w's update is sent. A hospital is scored with v_k (with w before its first round);
the global_* columns score w. Its second training has its own seeds (Stream.PERSONAL_TRAINING).
Needs a task whose proximal term can pull towards another model than the start
(classification): the scheduling DQN's learner state belongs to one Q-network.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import Field

from fedsim.params import Params
from fedsim.protocol import PROXIMAL, PROXIMAL_ANCHOR, Instruction, LocalPlan
from fedsim.strategies.base import StrategyConfig
from fedsim.strategies.fedavg import FedAvg


class DittoConfig(StrategyConfig):
    """Ditto: FedAvg plus a personal model per hospital, pulled towards the global by lam."""

    name: Literal["ditto"] = "ditto"
    lam: float = Field(0.1, ge=0, description="lambda: the personal model's pull towards the global model")

    def build(self, config, task) -> "Ditto":
        return Ditto(self.lam)

    def requirements(self) -> Mapping[str, str]:
        needs = {PROXIMAL_ANCHOR: "a personal model v_k trains beside the global one, pulled towards it"}
        return {**needs, PROXIMAL: "lam > 0"} if self.lam > 0 else needs


class Ditto(FedAvg):
    name = "ditto"
    keeps_hospital_state = True

    def __init__(self, lam: float) -> None:
        self.lam = lam

    def evaluation_params(self, broadcast: Params, state: Any = None) -> Params:
        return broadcast if state is None else state

    def personal_training(self, instruction: Instruction, broadcast: Params, state: Any) -> tuple[Params, LocalPlan]:
        start = broadcast if state is None else state
        if self.lam == 0:
            return start, LocalPlan(instruction.plan.epochs)
        return start, LocalPlan(instruction.plan.epochs, mu=self.lam, proximal_anchor=broadcast)
