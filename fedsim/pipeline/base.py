"""Update stages (pfl-research's postprocessor shape): each has a hospital half and a server half.

- The hospital half runs on the worker, per hospital, after local training and before the
  strategy turns the result into its contribution (and so before the exact fixed-point sum). It
  sees the hospital's *update*: the float64 delta w_k - w_start of every trained parameter the
  hospital shares (what leaves the hospital), and may keep per-hospital state between that
  hospital's rounds (an error-feedback residual), which the engine holds like any hospital state.
- The server half runs once per round on the exact sum, before the strategy's aggregate;
  server halves run in the reverse stage order (central DP's noise goes on the sum before
  federated dropout rescales it: each undoes what its hospital half began, innermost first).
- Server to hospital: a stage's `setting` (from its server state, e.g. adaptive clipping's C)
  goes out with every instruction of the round; `local_plan` may change the plan before training
  (federated dropout's sub-network); `summed` names hospital quantities the server half receives
  only as their exact (or securely masked) sum, never one hospital's.

Stages compose with every strategy: the strategy builds its contribution from the transformed
update (w_start + delta'), while the hospital's own state (FedBN's BN, a local-only model) comes
from what it really trained. All randomness comes from a per-(round, hospital, stage) seed.
A stage is one module of this package: its config model (a `StageConfig` subclass, registered by
its `stage` name) beside its class.
"""

from __future__ import annotations

import copy
from abc import ABC
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from fedsim.params import Params, is_trained
from fedsim.protocol import Instruction, LocalPlan, LocalResult
from fedsim.quarantine import UpdateScreen
from fedsim.registry import Registry
from fedsim.schema import Pluggable
from fedsim.seeding import Stream, seed_for

if TYPE_CHECKING:
    from fedsim.config import Config
    from fedsim.tasks.base import Task

STAGES: Registry[type["StageConfig"]] = Registry("update stage", "fedsim.pipeline")


class StageConfig(Pluggable):
    """One entry of the `pipeline` list, e.g. `{stage: clip, max_norm: 1.0}`."""

    registry = STAGES
    tag = "stage"
    stage: str


@dataclass(frozen=True)
class HospitalContext:
    round_index: int
    hospital: int
    weight: float  # the hospital's aggregation weight, when fixed before training
    seed: int  # this stage's seed for this hospital and round
    setting: Any = None  # what this stage's server half sent for the round (UpdateStage.setting)


@dataclass(frozen=True)
class ServerContext:
    """What a server half knows of the round besides the sum."""

    round_index: int
    instructions: list[Instruction]  # the hospitals the sum holds (quarantined ones left out)
    weight: float  # the weight the sum stands for: that of every instructed hospital (renormalised over the kept)
    sums: Mapping[str, float]  # the stage's `summed` quantities, exactly summed over the kept hospitals
    start: Params  # the round's global model
    sums_updates: bool  # the strategy sums p_k (w_k - w_t) (FedOpt, FedAvgM), not p_k w_k

    def unmoved(self, name: str) -> np.ndarray | float:
        """Entry `name` of the sum had every hospital sent a zero update: 0 for trained entries
        of strategies that sum updates, weight * w_t otherwise (models, normalisation statistics)."""
        start = self.start[name]
        return 0.0 if self.sums_updates and is_trained(name, start) else self.weight * start.astype(np.float64)


class UpdateStage(ABC):
    #: True when the hospital half keeps state between the hospital's rounds.
    keeps_hospital_state: ClassVar[bool] = False
    #: Per-hospital metrics of the hospital half that reach the server half only as their exact
    #: sum over the kept hospitals (`ServerContext.sums`; masked like the update under secure
    #: aggregation), not as clients.parquet columns.
    summed: tuple[str, ...] = ()

    def setting(self) -> Any:
        """What the server half tells every hospital half this round (sent with the instructions,
        `HospitalContext.setting`): e.g. adaptive clipping's current clip norm; None: nothing."""
        return None

    def local_plan(self, plan: LocalPlan, context: HospitalContext) -> LocalPlan:
        """The local plan as this stage changes it before training (federated dropout's sub-network)."""
        return plan

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        """The update as it leaves the hospital, the stage's new state for this hospital, and
        per-hospital quantities for clients.parquet."""
        return update, state, {}

    def wire_bytes(self, update: Params, context: HospitalContext) -> dict[str, int] | None:
        """Bytes each entry of what the hospital sends takes on the wire, when the stage encodes
        it (compression); None: float32 as usual, or as an earlier stage said."""
        return None

    def download_bytes(self, full: int, round_index: int, hospital: int) -> int:
        """Bytes of the broadcast (`full` in all) this hospital really receives."""
        return full

    def server(self, total: dict[str, np.ndarray], context: ServerContext) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The exact sum as the strategy will aggregate it, and round quantities for rounds.parquet."""
        return total, {}

    def get_state(self) -> Any:
        """The server half's learned state (e.g. an adaptive clip norm), for checkpoints."""
        return copy.deepcopy(self.__dict__)

    def set_state(self, state: Any) -> None:
        self.__dict__.update(copy.deepcopy(state))


#: Where a stage's summed quantities travel in a contribution: a name no parameter has.
SUMMED = "pipeline:{index}:{name}"


class Pipeline:
    """The configured stages, in order. Hospital halves run in that order and server halves in
    the reverse one (each undoes or finishes what its hospital half began, innermost first: central
    DP's noise goes on the sum before federated dropout rescales it)."""

    def __init__(self, stages: Sequence[UpdateStage], screen: UpdateScreen = UpdateScreen(), secure_aggregation: Any = None) -> None:
        self.stages = tuple(stages)
        self.screen = screen  # what a worker checks of each update before summing it (quarantine)
        #: fedsim.privacy.secagg.SecureAggregation, or None: how contributions are summed
        self.secure_aggregation = secure_aggregation
        self.keeps_hospital_state = any(stage.keeps_hospital_state for stage in self.stages)

    def settings(self) -> tuple[Any, ...]:
        """Every stage's setting for the round (the server's pipeline; sent with the instructions)."""
        return tuple(stage.setting() for stage in self.stages)

    def _context(self, index: int, instruction: Instruction, round_index: int, run_seed: int) -> HospitalContext:
        seed = seed_for(run_seed, Stream.UPDATE_STAGE, round_index, instruction.hospital, index)
        setting = instruction.stage_settings[index] if instruction.stage_settings else None
        return HospitalContext(round_index, instruction.hospital, instruction.weight, seed, setting)

    def local_plan(self, plan: LocalPlan, instruction: Instruction, round_index: int, run_seed: int) -> LocalPlan:
        for index, stage in enumerate(self.stages):
            plan = stage.local_plan(plan, self._context(index, instruction, round_index, run_seed))
        return plan

    def hospital_side(
        self,
        result: LocalResult,
        start: Params,
        local_keys: frozenset[str],
        instruction: Instruction,
        round_index: int,
        run_seed: int,
        states: tuple[Any, ...],
    ) -> tuple[LocalResult, tuple[Any, ...], dict[str, float], dict[str, int], dict[str, np.ndarray]]:
        """`result` with its shared update passed through every stage's hospital half, the
        stages' new states and metrics, the wire size of each entry a stage encodes, and the
        stages' summed quantities (one-element arrays, to add to the contribution)."""
        if not self.stages:
            return result, states, {}, {}, {}
        shared = [n for n, a in result.params.items() if is_trained(n, a) and n not in local_keys]
        update = {name: result.params[name].astype(np.float64) - start[name] for name in shared}
        states = states or (None,) * len(self.stages)
        new_states, metrics, encoded, summed = [], {}, {}, {}
        for index, (stage, state) in enumerate(zip(self.stages, states)):
            context = self._context(index, instruction, round_index, run_seed)
            update, state, stage_metrics = stage.hospital(update, context, state)
            new_states.append(state)
            for name in stage.summed:
                summed[SUMMED.format(index=index, name=name)] = np.array([stage_metrics.pop(name)], dtype=np.float64)
            metrics.update(stage_metrics)
            encoded = stage.wire_bytes(update, context) or encoded
        params = {**result.params, **{name: start[name].astype(np.float64) + update[name] for name in shared}}
        return replace(result, params=params), tuple(new_states), metrics, encoded, summed

    def download_bytes(self, full: int, round_index: int, hospital: int) -> int:
        for stage in self.stages:
            full = stage.download_bytes(full, round_index, hospital)
        return full

    def get_state(self) -> list[Any]:
        return [stage.get_state() for stage in self.stages]

    def set_state(self, states: list[Any]) -> None:
        for stage, state in zip(self.stages, states):
            stage.set_state(state)

    def split_summed(self, total: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
        """The sum without the stages' summed quantities, and those per stage."""
        sums: list[dict[str, float]] = [{} for _ in self.stages]
        for index, stage in enumerate(self.stages):
            for name in stage.summed:
                key = SUMMED.format(index=index, name=name)
                if key in total:
                    sums[index][name] = float(total[key][0])
        return {name: value for name, value in total.items() if not name.startswith("pipeline:")}, sums

    def server_side(
        self, total: dict[str, np.ndarray], context: ServerContext, sums: Sequence[Mapping[str, float]]
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """`total` through the server halves, last stage first; `sums`: each stage's summed quantities."""
        metrics: dict[str, float] = {}
        for stage, stage_sums in reversed(list(zip(self.stages, sums))):
            total, stage_metrics = stage.server(total, replace(context, sums=stage_sums))
            metrics.update(stage_metrics)
        return total, metrics


def build_pipeline(config: "Config", task: "Task") -> Pipeline:
    """An update attack's stage first (fedsim.attacks, when one is configured), then the
    `pipeline` list's stages, then those the `privacy` and `compression` sections expand to; the
    quarantine screen; and the `secure_aggregation` section's masked summation."""
    from fedsim.attacks import attack_stages  # it builds on this module
    from fedsim.privacy.secagg import SecureAggregation
    from fedsim.privacy.stages import section_stages

    stages = attack_stages(config, task.num_hospitals) + [spec.build(config, task) for spec in config.pipeline]
    secure = SecureAggregation(config.secure_aggregation, config.seed) if config.secure_aggregation else None
    return Pipeline(stages + section_stages(config, task), UpdateScreen(config.quarantine.max_norm), secure)
