"""What a pool worker does: run many virtual hospitals in turn and pre-sum their contributions.

`WorkerCore` is plain Python so tests can drive it without Ray; the pool wraps it in an actor.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from fedsim.engine.fixed_point import FixedPointSum
from fedsim.params import Params
from fedsim.protocol import ClientReport, Instruction
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.base import Strategy
from fedsim.tasks.base import Task

#: Per-hospital contributions when the strategy needs each one: (hospital, contribution) pairs.
Collected = list[tuple[int, dict[str, np.ndarray]]]


def upload_bytes(contribution: dict[str, np.ndarray]) -> int:
    """Bytes a real hospital would upload for this contribution, in float32 on the wire."""
    return int(sum(4 * np.asarray(array).size for array in contribution.values()))


class WorkerCore:
    def __init__(self, task: Task, strategy: Strategy, use_gpu: bool, threads: int) -> None:
        torch.set_num_threads(threads)
        self.task = task
        self.strategy = strategy
        task.use_device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def train(
        self,
        round_index: int,
        run_seed: int,
        global_params: Params,
        instructions: Sequence[Instruction],
        *states: Any,
    ) -> list[Any]:
        """Train each instructed hospital from the global model; `states` align with `instructions`.

        Returns [partial aggregate, reports, *new states]: the partial aggregate is a
        FixedPointSum (or the collected contributions), and the states are returned one object
        per hospital only when the task keeps hospital state.
        """
        partial: FixedPointSum | Collected = (
            FixedPointSum() if self.strategy.aggregates_on_workers else []
        )
        reports: list[ClientReport] = []
        new_states: list[Any] = []
        for instruction, state in zip(instructions, states):
            started = time.perf_counter()
            hospital = instruction.hospital
            seed = seed_for(run_seed, Stream.LOCAL_TRAINING, round_index, hospital)
            result = self.task.train(hospital, global_params, instruction, state, seed)
            contribution = self.strategy.contribution(result, instruction, global_params)
            if isinstance(partial, FixedPointSum):
                partial.add(contribution)
            else:
                partial.append((hospital, contribution))
            new_states.append(result.state)
            reports.append(
                ClientReport(
                    hospital=hospital,
                    num_samples=result.num_samples,
                    steps=result.steps,
                    weight=instruction.weight,
                    seconds=time.perf_counter() - started,
                    upload_bytes=upload_bytes(contribution),
                    metrics=result.metrics,
                )
            )
        return [partial, reports, *new_states] if self.task.keeps_hospital_state else [partial, reports]

    def evaluate(
        self, global_params: Params, hospitals: Sequence[int], units: Sequence[int], *states: Any
    ) -> tuple[list[dict[str, float]], list[Any]]:
        """Score the global model on hospitals' own test splits and on global test units."""
        per_hospital = [
            self.task.evaluate_hospital(hospital, global_params, state) for hospital, state in zip(hospitals, states)
        ]
        outputs = [self.task.evaluate_unit(unit, global_params) for unit in units]
        return per_hospital, outputs
