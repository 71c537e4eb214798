"""Update stages (pfl-research's postprocessor shape): each has a hospital half and a server half.

- The hospital half runs on the worker, per hospital, after local training and before the
  strategy turns the result into its contribution (and so before the exact fixed-point sum). It
  sees the hospital's *update*: the float64 delta w_k - w_start of every trained parameter the
  hospital shares (what leaves the hospital), and may keep per-hospital state between that
  hospital's rounds (an error-feedback residual), which the engine holds like any hospital state.
- The server half runs once per round on the exact sum, before the strategy's aggregate.

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
from fedsim.protocol import Instruction, LocalResult
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


class UpdateStage(ABC):
    #: True when the hospital half keeps state between the hospital's rounds.
    keeps_hospital_state: ClassVar[bool] = False

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        """The update as it leaves the hospital, the stage's new state for this hospital, and
        per-hospital quantities for clients.parquet."""
        return update, state, {}

    def wire_bytes(self, update: Params) -> dict[str, int] | None:
        """Bytes each entry of `update` (as this stage's hospital half left it) takes on the wire,
        when the stage encodes it (compression); None: float32 as usual, or as an earlier stage said."""
        return None

    def server(self, total: dict[str, np.ndarray], round_index: int, instructions: list[Instruction]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The exact sum as the strategy will aggregate it, and round quantities for rounds.parquet."""
        return total, {}

    def get_state(self) -> Any:
        """The server half's learned state (e.g. an adaptive clip norm), for checkpoints."""
        return copy.deepcopy(self.__dict__)

    def set_state(self, state: Any) -> None:
        self.__dict__.update(copy.deepcopy(state))


class Pipeline:
    """The configured stages, in order."""

    def __init__(self, stages: Sequence[UpdateStage], screen: UpdateScreen = UpdateScreen(), secure_aggregation: Any = None) -> None:
        self.stages = tuple(stages)
        self.screen = screen  # what a worker checks of each update before summing it (quarantine)
        #: fedsim.privacy.secagg.SecureAggregation, or None: how contributions are summed
        self.secure_aggregation = secure_aggregation
        self.keeps_hospital_state = any(stage.keeps_hospital_state for stage in self.stages)

    def hospital_side(
        self,
        result: LocalResult,
        start: Params,
        local_keys: frozenset[str],
        instruction: Instruction,
        round_index: int,
        run_seed: int,
        states: tuple[Any, ...],
    ) -> tuple[LocalResult, tuple[Any, ...], dict[str, float], dict[str, int]]:
        """`result` with its shared update passed through every stage's hospital half, the
        stages' new states and metrics, and the wire size of each entry a stage encodes."""
        if not self.stages:
            return result, states, {}, {}
        shared = [n for n, a in result.params.items() if is_trained(n, a) and n not in local_keys]
        update = {name: result.params[name].astype(np.float64) - start[name] for name in shared}
        states = states or (None,) * len(self.stages)
        new_states, metrics, encoded = [], {}, {}
        for index, (stage, state) in enumerate(zip(self.stages, states)):
            seed = seed_for(run_seed, Stream.UPDATE_STAGE, round_index, instruction.hospital, index)
            context = HospitalContext(round_index, instruction.hospital, instruction.weight, seed)
            update, state, stage_metrics = stage.hospital(update, context, state)
            new_states.append(state)
            metrics.update(stage_metrics)
            encoded = stage.wire_bytes(update) or encoded
        params = {**result.params, **{name: start[name].astype(np.float64) + update[name] for name in shared}}
        return replace(result, params=params), tuple(new_states), metrics, encoded

    def get_state(self) -> list[Any]:
        return [stage.get_state() for stage in self.stages]

    def set_state(self, states: list[Any]) -> None:
        for stage, state in zip(self.stages, states):
            stage.set_state(state)

    def server_side(
        self, total: dict[str, np.ndarray], round_index: int, instructions: list[Instruction]
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        metrics: dict[str, float] = {}
        for stage in self.stages:
            total, stage_metrics = stage.server(total, round_index, instructions)
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
