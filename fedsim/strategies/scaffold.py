"""SCAFFOLD (Karimireddy et al., 2020), option II control variates.

The server broadcasts the model x and its control variate c; hospital i keeps c_i (zero at
first). Local steps use the corrected gradient  y <- y - lr * (g(y) - c_i + c), then

    c_i+ = c_i - c + (x - y_i) / (a_K * lr)                      (option II, K local steps)
    x   <- x + lr_g * (1/|S|) sum_i (y_i - x)
    c   <- c + (|S| / N) * (1/|S|) sum_i (c_i+ - c_i),  where c_i+ - c_i = (x - y_i)/(a_K lr) - c

The paper's option II divides by K lr, which assumes plain SGD. With heavy-ball momentum rho
(train.momentum), K steps on a constant gradient g move the model by lr * a_K * g with FedNova's
a_K = [K - rho (1 - rho^K) / (1 - rho)] / (1 - rho) (fedsim.strategies.fednova.effective_steps),
so dividing by a_K lr keeps c_i+ the hospital's gradient estimate; dividing by K lr would inflate
it by a_K / K (7.6x for 37 steps at 0.9). a_K = K without momentum, the paper's formula. Tasks
whose local optimiser is not SGD at train.lr (the DQN's Adam) are refused by config validation
(the PLAIN_SGD capability).

Hospitals are weighted uniformly (1/|S|) as in the paper's algorithm. BatchNorm running
statistics are not gradient-trained: they are averaged directly. A hospital that took no local
step (K = 0) keeps c_i (its c_i+ - c_i is taken as 0) and its y_i - x is 0.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field

from fedsim.params import Params, is_statistic, is_trained
from fedsim.protocol import GRADIENT_CORRECTION, PLAIN_SGD, Aggregate, Cohort, Instruction, LocalPlan, LocalResult
from fedsim.strategies.base import Strategy, StrategyConfig, weighted_instructions
from fedsim.strategies.fednova import effective_steps

_C = "scaffold.c:"
_DY = "scaffold.dy:"
_DC = "scaffold.dc:"


class ScaffoldConfig(StrategyConfig):
    name: Literal["scaffold"] = "scaffold"
    server_lr: float = Field(1.0, gt=0)

    def build(self, config, task) -> "Scaffold":
        return Scaffold(config.train.lr, self.server_lr, task.num_hospitals, config.train.momentum)

    def requirements(self) -> Mapping[str, str]:
        return {GRADIENT_CORRECTION: "it corrects every local gradient by c - c_i",
                PLAIN_SGD: "option-II control variates divide the local update by a_K * train.lr (SGD steps)"}


class Scaffold(Strategy):
    name = "scaffold"
    keeps_hospital_state = True

    def __init__(self, local_lr: float, server_lr: float, num_hospitals: int, momentum: float = 0.0) -> None:
        self.local_lr = local_lr
        self.server_lr = server_lr
        self.num_hospitals = num_hospitals
        self.momentum = momentum

    def initial_broadcast(self, params: Params) -> Params:
        controls = {_C + name: np.zeros_like(array) for name, array in params.items() if is_trained(name, array)}
        return {**params, **controls}

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        uniform = np.full(len(cohort.hospitals), 1.0 / len(cohort.hospitals))
        return weighted_instructions(cohort, uniform)

    def model_params(self, broadcast: Params, state: Any = None) -> Params:
        return {name: array for name, array in broadcast.items() if not name.startswith(_C)}

    def local_plan(self, instruction: Instruction, broadcast: Params, state: Any) -> LocalPlan:
        correction = {
            name[len(_C):]: c if state is None else c - state[name[len(_C):]]
            for name, c in broadcast.items()
            if name.startswith(_C)
        }
        return replace(instruction.plan, gradient_correction=correction)

    def _control_step(self, result: LocalResult, broadcast: Params, name: str) -> np.ndarray:
        """(x - y_i) / (a_K lr): option II's estimate of the hospital's gradient."""
        moved = broadcast[name].astype(np.float64) - result.params[name]
        return moved / (effective_steps(result.steps, self.momentum) * self.local_lr)

    def _control_change(self, result: LocalResult, broadcast: Params, name: str) -> np.ndarray:
        """c_i+ - c_i = (x - y_i) / (a_K lr) - c; zero for a hospital that took no step."""
        if result.steps == 0:
            return np.zeros(broadcast[name].shape, dtype=np.float64)
        return self._control_step(result, broadcast, name) - broadcast[_C + name]

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        weight = instruction.weight
        shares: dict[str, np.ndarray] = {}
        for name, local in result.params.items():
            if is_trained(name, local):
                shares[_DY + name] = weight * (local.astype(np.float64) - broadcast[name])
                shares[_DC + name] = weight * self._control_change(result, broadcast, name)
            elif is_statistic(name):
                shares[name] = weight * local.astype(np.float64)
        return shares

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: Any) -> tuple[Params, dict[str, float]]:
        new_state: Params = {}
        for name, local in result.params.items():
            if is_trained(name, local):
                previous = 0.0 if state is None else state[name]
                new_state[name] = (previous + self._control_change(result, broadcast, name)).astype(local.dtype)
        norm = float(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in new_state.values())))
        return new_state, {"control_variate_norm": norm}

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        total = aggregate.total
        share = len(aggregate.instructions) / self.num_hospitals
        updated: Params = {}
        for name, array in broadcast.items():
            if name.startswith(_C):
                updated[name] = (array + share * total[_DC + name[len(_C):]]).astype(array.dtype)
            elif _DY + name in total:
                updated[name] = (array + self.server_lr * total[_DY + name]).astype(array.dtype)
            elif name in total:
                updated[name] = total[name].astype(array.dtype)
            else:
                updated[name] = array
        norm = float(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for k, v in updated.items() if k.startswith(_C))))
        return updated, {"control_variate_norm": norm}
