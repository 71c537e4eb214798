"""The Task interface: how one hospital trains and evaluates.

A task owns its hospitals' data (or environments) and knows nothing about Ray or strategies
beyond the Instruction it receives. The engine puts one task object in Ray's object store and
every worker runs any hospital through it, so a task must be picklable and must draw all its
randomness from the seed it is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa

from fedsim.params import Params
from fedsim.protocol import LocalPlan, LocalResult


@dataclass(frozen=True)
class TrainJob:
    """One hospital's local training, as `Task.train` takes it."""

    hospital: int
    params: Params
    plan: LocalPlan
    state: Any
    seed: int


class Task(ABC):
    #: True when train() returns per-hospital state that must survive until the hospital's next round.
    keeps_hospital_state: ClassVar[bool] = False
    #: Names of global_metrics(), each logged as global_<name> in rounds.parquet (a class
    #: attribute, or a property where they depend on the data: classification's per-class scores).
    global_metric_names: tuple[str, ...]
    #: The global metric the progress bar shows and compare tables lead with.
    headline_metric: ClassVar[str]
    #: The evaluate_hospital() metric summarised across hospitals (mean, std, worst 10%).
    hospital_metric: ClassVar[str]
    #: Direction of hospital_metric, so "worst 10%" means the right tail.
    higher_is_better: ClassVar[bool] = True
    #: train() metrics measured on the hospital's own test split: logged, never shown to a strategy.
    test_report_metrics: ClassVar[frozenset[str]] = frozenset()

    @property
    @abstractmethod
    def num_hospitals(self) -> int: ...

    @abstractmethod
    def hospital_sizes(self) -> np.ndarray:
        """Training samples per hospital: FedAvg weights and the cost estimate for load balancing."""

    def step_samples(self) -> np.ndarray:
        """Training samples one local step processes, per hospital: what a partial-work budget
        (LocalPlan.max_steps) is counted in. Tasks that honour max_steps offer PARTIAL_WORK."""
        raise NotImplementedError(f"{type(self).__name__} has no local step budget")

    @abstractmethod
    def initial_params(self, seed: int) -> Params:
        """The round-0 global model."""

    def normalization_keys(self) -> frozenset[str]:
        """Names of normalisation-layer parameters and statistics (what FedBN keeps local)."""
        return frozenset()

    def use_device(self, device: str) -> None:
        """Called once on each worker before any work (e.g. "cpu" or "cuda")."""

    def warm_up(self) -> None:
        """Do, on each worker before its first round, the one-off work that round would otherwise
        wait for (building the model, first-call kernel set-up); changes no result."""

    def new_module(self) -> Any:
        """A fresh torch module of the task's model (what `model.pt`, a state_dict, loads into)."""
        raise NotImplementedError(f"{type(self).__name__} has no torch model")

    @abstractmethod
    def train(self, hospital: int, params: Params, plan: LocalPlan, state: Any, seed: int) -> LocalResult:
        """Train hospital `hospital` from `params` as `plan` says; all randomness from `seed`.

        A task honours `plan.epochs` and the terms its spec declares among its capabilities
        (fedsim.tasks.registry); config validation refuses strategies that need others.
        """

    #: How many of a worker's hospitals `train_group` trains at once (engine.vectorized_hospitals);
    #: 0: one at a time, through `train`.
    vectorized_hospitals: int = 0

    def train_group(self, jobs: Sequence[TrainJob]) -> list[LocalResult]:
        """Train several hospitals at once, each exactly as `train` would (to the tolerance the
        task documents), for tasks that offer vectorised training."""
        raise NotImplementedError(f"{type(self).__name__} trains one hospital at a time")
    def fine_tune(self, hospital: int, params: Params, steps: int, state: Any, seed: int) -> Params:
        """A copy of `params` trained `steps` local steps on the hospital's own training data
        (evaluation's personalisation); `params` and `state` stay as they are. Offered where the
        spec lists fedsim.protocol.FINE_TUNING."""
        raise NotImplementedError(f"{type(self).__name__} cannot fine-tune")

    def train_loss(self, hospital: int, params: Params, state: Any) -> float:
        """The loss of `params` on the hospital's own training data (IFCA's cluster choice; never
        test data). Offered where the spec lists fedsim.protocol.TRAINING_LOSS."""
        raise NotImplementedError(f"{type(self).__name__} has no training loss")

    @abstractmethod
    def evaluate_hospital(self, hospital: int, params: Params, state: Any, batch_statistics: bool = False) -> dict[str, float]:
        """Metrics of `params` on the hospital's own held-out split (including `hospital_metric`);
        `batch_statistics` as in `evaluate_unit` (FedBN's hospitals that never trained)."""

    @abstractmethod
    def global_eval_units(self) -> int:
        """Number of independent pieces the global evaluation is cut into (spread over workers)."""

    @abstractmethod
    def evaluate_unit(self, unit: int, params: Params, batch_statistics: bool = False) -> Any:
        """Raw outputs of one global evaluation piece (e.g. class probabilities of a test chunk);
        `batch_statistics`: normalise with the piece's own statistics (for FedBN's global model)."""

    @abstractmethod
    def global_metrics(self, outputs: list[Any]) -> dict[str, float]:
        """Global metrics from all units' outputs, in unit order (keys: `global_metric_names`)."""

    def global_tables(self, outputs: list[Any]) -> dict[str, list[dict[str, Any]]]:
        """Rows of per-round tables of the global evaluation beyond its metrics (classification:
        confusion matrices), by table name; each must be in fedsim.results.PER_ROUND, so that a
        resume rewrites it. The driver adds each row's `round`."""
        return {}

    def partition_table(self) -> pa.Table | None:
        """Per-hospital data statistics to save with the run, if the task has any."""
        return None
