"""A bounded pool of Ray worker actors that runs any number of virtual hospitals.

A torch actor costs ~300 MB, so hospitals are multiplexed: each round, the sampled hospitals are
spread over the workers by cost, each worker trains its share in turn and returns one partial
aggregate. Hospital state lives here (as object refs owned by the driver), keyed by hospital id,
so any worker can run any hospital next round.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import ray

from fedsim.engine.sampling import balance, evaluation_plan
from fedsim.engine.worker import WorkerCore
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import ClientReport, Instruction
from fedsim.strategies.base import Strategy

_WorkerActor = ray.remote(WorkerCore)


class WorkerPool:
    def __init__(
        self,
        task_ref: ray.ObjectRef,
        strategy: Strategy,
        pipeline: Pipeline,
        size: int,
        num_cpus: float,
        num_gpus: float,
        keeps_hospital_state: bool,
    ) -> None:
        threads = max(1, int(num_cpus))
        self.workers = [
            _WorkerActor.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(task_ref, strategy, pipeline, num_gpus > 0, threads)
            for _ in range(size)
        ]
        self.keeps_hospital_state = keeps_hospital_state
        self.states: dict[int, ray.ObjectRef] = {}
        self.trained_last: list[Any] = []  # the workers that ran hospitals in the last train call

    def _states_of(self, hospitals: Sequence[int]) -> list[Any]:
        return [self.states.get(h) for h in hospitals]

    def train(
        self, round_index: int, run_seed: int, global_ref: ray.ObjectRef, instructions: list[Instruction], costs: np.ndarray
    ) -> tuple[list[ray.ObjectRef], list[ClientReport]]:
        """Run one round's local training; returns partial-aggregate refs (summaries when the
        strategy weighs after training) and the reports."""
        partial_refs, report_refs, self.trained_last = [], [], []
        cohort = [instruction.hospital for instruction in instructions]
        for worker, positions in zip(self.workers, balance(costs, len(self.workers))):
            if not positions:
                continue
            jobs = [instructions[p] for p in positions]
            states = self._states_of([job.hospital for job in jobs])
            returns = 2 + len(jobs) if self.keeps_hospital_state else 2
            refs = worker.train.options(num_returns=returns).remote(round_index, run_seed, global_ref, jobs, *states, cohort=cohort)
            self.trained_last.append(worker)
            partial_refs.append(refs[0])
            report_refs.append(refs[1])
            for job, state_ref in zip(jobs, refs[2:]):
                self.states[job.hospital] = state_ref
        reports = [report for batch in ray.get(report_refs) for report in batch]
        return partial_refs, sorted(reports, key=lambda report: report.hospital)

    def weighted_sums(self, weights_ref: ray.ObjectRef) -> list[ray.ObjectRef]:
        """Partial sums of the last round's held contributions with the server's weights."""
        return [worker.weighted_sum.remote(weights_ref) for worker in self.trained_last]

    def evaluate(
        self, global_ref: ray.ObjectRef, hospitals: Sequence[int], num_units: int
    ) -> tuple[dict[int, dict[str, float]], list[Any]]:
        """Score the global model on every given hospital and on all global test units."""
        plans = evaluation_plan(list(hospitals), num_units, len(self.workers))
        calls = [
            worker.evaluate.remote(global_ref, mine, units, *self._states_of(mine))
            for worker, (mine, units) in zip(self.workers, plans)
        ]
        per_hospital: dict[int, dict[str, float]] = {}
        outputs: dict[int, Any] = {}
        for (mine, units), (scores, unit_outputs) in zip(plans, ray.get(calls)):
            per_hospital.update(zip(mine, scores))
            outputs.update(zip(units, unit_outputs))
        return per_hospital, [outputs[unit] for unit in range(num_units)]

    def peak_rss(self) -> int:
        """Sum of the workers' peak resident memory (bytes)."""
        return sum(ray.get([worker.peak_rss.remote() for worker in self.workers]))

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
