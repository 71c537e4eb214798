"""The Strategy interface: what each sampled hospital is told, and how updates combine.

A strategy is plain Python, testable without Ray. The server calls `initial_broadcast`,
`configure` and `aggregate`; the workers call the hospital-side hooks (`model_params`,
`local_plan`, `contribution`, `local_state`), which must be pure functions of their arguments: a
worker's copy of the strategy never sees server state. What the server broadcasts each round is
the global model plus any strategy extras (e.g. SCAFFOLD's control variate).

A strategy is one module: its config model (a `StrategyConfig` subclass, which registers itself
by its `name`) beside its class. `StrategyConfig.build` makes the strategy for a run.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from fedsim.params import Params, is_statistic
from fedsim.protocol import Aggregate, ClientReport, Cohort, Instruction, LocalPlan, LocalResult, Updates
from fedsim.registry import Registry
from fedsim.schema import Pluggable

if TYPE_CHECKING:
    from fedsim.config import Config

STRATEGIES: Registry[type["StrategyConfig"]] = Registry("strategy", "fedsim.strategies")


class StrategyConfig(Pluggable):
    """The `strategy` section. Subclass it with `name: Literal["mine"] = "mine"` and your settings."""

    registry = STRATEGIES
    tag = "name"
    #: True for strategies without rounds, driven by the simulated clock (FedBuff, FedAsync).
    asynchronous: ClassVar[bool] = False
    name: str

    def check(self, config: "Config") -> None:
        """Refuse settings elsewhere in the config that this strategy cannot work with (raise
        ValueError with a one-line message naming the field)."""


class Strategy(ABC):
    name: ClassVar[str]
    #: True when the aggregation weights depend on what the hospitals send (FedMRL's SOM): the
    #: server first sees each hospital's `summary` and decides the weights with `weigh`; the
    #: workers hold the unweighted contributions meanwhile and then sum them with those weights.
    weighs_after_training: ClassVar[bool] = False
    #: True when the aggregation rule is not a weighted sum (coordinate-wise median, trimmed mean,
    #: Krum): each worker sends every hospital's contribution, the server holds the round's updates
    #: (cohort x model bytes) and reduces them with `combine` in place of the exact sum.
    sends_individual_updates: ClassVar[bool] = False
    #: True when the contribution is p_k (w_k - w_t) for trained parameters (FedOpt, FedAvgM), so
    #: the summed total is the mean update, not the mean model (federated dropout rescales updates).
    sums_updates: ClassVar[bool] = False
    #: True when hospitals keep strategy state between their rounds (FedBN's BN, SCAFFOLD's c_i).
    keeps_hospital_state: ClassVar[bool] = False
    #: True when normalisation layers never leave the hospitals (FedBN), so the global test
    #: normalises each test batch with its own statistics instead of never-trained global ones.
    global_eval_batch_statistics: ClassVar[bool] = False
    #: False when there is no global model (local-only): the round scores only the hospitals'
    #: own models, and the global_* columns are NaN rather than the never-trained broadcast's.
    has_global_model: ClassVar[bool] = True
    #: Parameters that never leave a hospital (FedBN's BN): not part of the update it sends.
    local_keys: frozenset[str] = frozenset()

    @property
    def sums_on_workers(self) -> bool:
        """Workers add each hospital's contribution, weighted as instructed, into one exact (or
        masked) sum, or hold it so for the simulated clock to settle: the strategy neither weighs
        after training nor needs the individual updates."""
        return not (self.weighs_after_training or self.sends_individual_updates)

    def initial_broadcast(self, params: Params) -> Params:
        """What the server sends in round 1, from the initial model."""
        return params

    @abstractmethod
    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        """Instructions for the sampled hospitals, in cohort order."""

    def models(self, broadcast: Params) -> list[Params]:
        """The models a hospital may work with: the broadcast itself for most strategies; IFCA's K
        cluster models, of which each hospital takes the one of lowest loss on its own training
        data (the engine sets `Instruction.model`; the hospital-side hooks then receive that
        model as their `broadcast`)."""
        return [broadcast]

    def model_params(self, broadcast: Params, state: Any = None) -> Params:
        """The model a hospital trains from, or is evaluated with (state None: the global model)."""
        return broadcast

    def evaluation_params(self, broadcast: Params, state: Any = None) -> Params:
        """The model a hospital is scored with, where it is not the one it trains from (Ditto's
        personal model v_k)."""
        return self.model_params(broadcast, state)

    def global_params(self, broadcast: Params) -> Params:
        """The global model (the global test, model.pt): by default `model_params(broadcast)`."""
        return self.model_params(broadcast)

    def personal_training(self, instruction: Instruction, broadcast: Params, state: Any) -> tuple[Params, LocalPlan] | None:
        """A second model the hospital trains for itself each round (Ditto's v_k): where it starts
        and its plan, or None. The engine trains it after the shared model (seeds from
        Stream.PERSONAL_TRAINING) and keeps the trained model as the hospital's strategy state in
        place of `local_state`'s."""
        return None

    def local_plan(self, instruction: Instruction, broadcast: Params, state: Any) -> LocalPlan:
        """The plan the hospital trains with, completed from its own state (SCAFFOLD's correction)."""
        return instruction.plan

    @abstractmethod
    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        """The hospital's already-weighted share of the aggregate (summed exactly by the engine);
        unweighted when the strategy weighs after training."""

    def summary(self, contribution: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The small part of a contribution the server weighs by (strategies that weigh after
        training); it is not summed."""
        return {}

    def weigh(self, round_index: int, instructions: list[Instruction], reports: list[ClientReport],
              summaries: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Aggregation weights, in instructions order, for strategies that weigh after training."""
        raise NotImplementedError(f"{self.name} fixes its weights before training")

    def combine(self, updates: Updates) -> dict[str, np.ndarray]:
        """The round's `total` from the (hospital, contribution) pairs of the kept hospitals, in
        hospital order, for strategies that send individual updates."""
        raise NotImplementedError(f"{self.name} aggregates an exact weighted sum")

    def local_state(
        self, result: LocalResult, instruction: Instruction, broadcast: Params, state: Any
    ) -> tuple[Any, dict[str, float]]:
        """State the hospital keeps until its next round, and per-hospital quantities to log."""
        return None, {}

    @abstractmethod
    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        """The next broadcast, and round-level quantities to log in rounds.parquet."""

    def hospital_metrics(self) -> dict[int, dict[str, float]]:
        """Per-hospital quantities decided in the last aggregate (e.g. FedMRL's SOM weights),
        logged beside each hospital's row in clients.parquet."""
        return {}

    def observe(self, round_index: int, validation: dict[str, float]) -> None:
        """The round's new model on the validation split (val_* global metrics; a learning
        strategy's feedback); after aggregate, before the next configure. The engine never passes
        test-set metrics here (fedsim.engine.rounds)."""

    def get_state(self) -> Any:
        """Everything the server side has learned (FedAdam's moments, SCAFFOLD's nothing beyond
        the broadcast, FedMRL's QMIX learner), for checkpoints: by default the attributes."""
        return copy.deepcopy(self.__dict__)

    def set_state(self, state: Any) -> None:
        """Continue exactly from `get_state()`'s result."""
        self.__dict__.update(copy.deepcopy(state))


def sample_shares(cohort: Cohort) -> np.ndarray:
    """n_k / n over the cohort: the usual weights of a weighted average."""
    return cohort.sizes.astype(np.float64) / float(np.sum(cohort.sizes))


def weighted_instructions(cohort: Cohort, weights: np.ndarray, **plan: Any) -> list[Instruction]:
    """One instruction per cohort hospital, with its local epochs and the plan's other fields."""
    return [
        Instruction(int(h), float(w), LocalPlan(epochs=int(e), **plan))
        for h, w, e in zip(cohort.hospitals, weights, cohort.epochs)
    ]


def step_trained(
    broadcast: Params, total: dict[str, np.ndarray], step: Callable[[str, np.ndarray, np.ndarray], np.ndarray]
) -> Params:
    """The next broadcast for update-based strategies: trained parameters move by
    `step(name, current, summed)`, normalisation statistics take their summed (weighted-mean)
    value, and anything not summed stays as it is."""
    updated: Params = {}
    for name, array in broadcast.items():
        if name not in total:
            updated[name] = array
        elif is_statistic(name):
            updated[name] = total[name].astype(array.dtype)
        else:
            updated[name] = step(name, array, total[name]).astype(array.dtype)
    return updated
