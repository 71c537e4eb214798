"""The in-process backend: the round's work runs in this process, on plain WorkerCore/ServerCore
objects, hospitals spread over `workers` cores exactly as the Ray pool spreads them (so partial
sums group the same way and results are bitwise those of a Ray run)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from fedsim.checkpoint import Checkpoint
from fedsim.engine.backend import Backend
from fedsim.engine.fixed_point import FixedPointSum
from fedsim.engine.sampling import balance, evaluation_plan
from fedsim.engine.server import ServerCore
from fedsim.engine.worker import WorkerCore
from fedsim.params import Params, params_nbytes
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import ClientReport, Cohort, HospitalState, Instruction
from fedsim.strategies.base import Strategy
from fedsim.tasks.base import Task


class InProcessBackend(Backend):
    def __init__(
        self, task: Task, strategy: Strategy, pipeline: Pipeline, initial: Params, run_seed: int, workers: int = 1,
        personalise_steps: int = 0,
    ) -> None:
        self.task = task
        self.pipeline = pipeline
        self.run_seed = run_seed
        self.server = ServerCore(strategy, pipeline, initial)
        self.workers = [WorkerCore(task, strategy, pipeline, False, 1, personalise_steps) for _ in range(workers)]
        self.weighs_after_training = strategy.weighs_after_training
        self.holds_contributions = strategy.sums_on_workers
        self.has_global_model = strategy.has_global_model
        self.states: dict[int, HospitalState] = {}
        self._before: dict[int, HospitalState | None] = {}  # the last train's hospitals' states from before it
        self._trained: list[WorkerCore] = []

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return self.server.configure(round_index, cohort)

    def train(self, round_index: int, instructions: list[Instruction], costs: np.ndarray,
              hold: bool = False) -> tuple[list[Any], list[ClientReport]]:
        partials, reports, self._trained = [], [], []
        cohort = [instruction.hospital for instruction in instructions]
        self._before = {hospital: self.states.get(hospital) for hospital in cohort}
        for worker, positions in zip(self.workers, balance(costs, len(self.workers))):
            if not positions:
                continue
            jobs = [instructions[p] for p in positions]
            partial, batch, *states = worker.train(
                round_index, self.run_seed, self.server.broadcast, jobs, *[self.states.get(job.hospital) for job in jobs],
                cohort=cohort, hold=hold,
            )
            self.states.update((job.hospital, state) for job, state in zip(jobs, states))
            self._trained.append(worker)
            partials.append(partial)
            reports += batch
        return partials, sorted(reports, key=lambda report: report.hospital)

    def withdraw(self, hospitals: list[int]) -> None:
        for hospital in hospitals:
            before = self._before[hospital]
            if before is None:
                self.states.pop(hospital, None)
            else:
                self.states[hospital] = before

    def weigh(self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], summaries: list[Any]) -> dict[int, float]:
        return self.server.weigh(round_index, instructions, reports, *summaries)

    def weighted_sums(self, weights: dict[int, float]) -> list[FixedPointSum]:
        return [worker.weighted_sum(weights)[0] for worker in self._trained]

    def aggregate(
        self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], partials: list[Any]
    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        _, metrics, _, hospital_metrics = self.server.aggregate(round_index, instructions, reports, *partials)
        return metrics, hospital_metrics

    def receive(self, dispatch: int, hospitals: list[int], partials: list[Any]) -> None:
        self.server.receive(dispatch, hospitals, *partials)

    def step(self, arrivals: list[tuple[int, int, int]]) -> dict[str, float]:
        return self.server.step(arrivals)[1]

    def evaluate(self, hospitals: list[int], num_units: int, round_index: int = 0) -> tuple[dict[int, dict[str, float]], list[Any]]:
        per_hospital: dict[int, dict[str, float]] = {}
        outputs: dict[int, Any] = {}
        for worker, (mine, units) in zip(self.workers, evaluation_plan(hospitals, num_units, len(self.workers))):
            scores, unit_outputs = worker.evaluate(
                self.server.broadcast, mine, units, *[self.states.get(h) for h in mine], round_index=round_index, run_seed=self.run_seed
            )
            per_hospital.update(zip(mine, scores))
            outputs.update(zip(units, unit_outputs))
        return per_hospital, [outputs[unit] for unit in range(num_units)]

    def observe(self, round_index: int, validation: dict[str, float]) -> None:
        self.server.observe(round_index, validation)

    def snapshot(self, round_index: int) -> Checkpoint:
        return Checkpoint(round_index, copy.deepcopy(self.server.get_state()), copy.deepcopy(self.states))

    def restore(self, checkpoint: Checkpoint) -> None:
        self.server.set_state(copy.deepcopy(checkpoint.server))
        self.states = copy.deepcopy(checkpoint.hospitals)

    def broadcast_bytes(self) -> int:
        return params_nbytes(self.server.broadcast)

    def global_params(self) -> Params:
        return self.server.global_params()
