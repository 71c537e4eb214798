"""The Task interface: how one hospital trains and evaluates.

A task owns its hospitals' data (or environments) and knows nothing about Ray or strategies
beyond the Instruction it receives. The engine puts one task object in Ray's object store and
every worker runs any hospital through it, so a task must be picklable and must draw all its
randomness from the seed it is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pyarrow as pa

from fedsim.params import Params
from fedsim.protocol import Instruction, LocalResult


class Task(ABC):
    #: True when train() returns per-hospital state that must survive until the hospital's next round.
    keeps_hospital_state: bool = False

    @property
    @abstractmethod
    def num_hospitals(self) -> int: ...

    @abstractmethod
    def hospital_sizes(self) -> np.ndarray:
        """Training samples per hospital: FedAvg weights and the cost estimate for load balancing."""

    @abstractmethod
    def initial_params(self, seed: int) -> Params:
        """The round-0 global model."""

    def use_device(self, device: str) -> None:
        """Called once on each worker before any work (e.g. "cpu" or "cuda")."""

    @abstractmethod
    def train(self, hospital: int, params: Params, instruction: Instruction, state: Any, seed: int) -> LocalResult:
        """Train hospital `hospital` from the global `params`; all randomness from `seed`."""

    @abstractmethod
    def evaluate_hospital(self, hospital: int, params: Params, state: Any) -> dict[str, float]:
        """Metrics of `params` on the hospital's own held-out split (must include "accuracy")."""

    @abstractmethod
    def global_eval_units(self) -> int:
        """Number of independent pieces the global evaluation is cut into (spread over workers)."""

    @abstractmethod
    def evaluate_unit(self, unit: int, params: Params) -> Any:
        """Raw outputs of one global evaluation piece (e.g. class probabilities of a test chunk)."""

    @abstractmethod
    def global_metrics(self, outputs: list[Any]) -> dict[str, float]:
        """Global metrics from all units' outputs, in unit order (must include "accuracy")."""

    def partition_table(self) -> pa.Table | None:
        """Per-hospital data statistics to save with the run, if the task has any."""
        return None
