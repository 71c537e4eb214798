"""A bounded pool of Ray worker actors that runs any number of virtual hospitals, and replaces
workers that die.

A torch actor costs ~600 MB, so hospitals are multiplexed: each round, the sampled hospitals are
spread over the workers by cost, each worker trains its share in turn and returns one partial
aggregate. Hospital state lives here (as object refs owned by the driver), keyed by hospital id,
so any worker can run any hospital next round.

When a worker dies (SIGKILL, out of memory), its hospitals' states from before the round are
still here, and everything a hospital does is a pure function of (state, broadcast, seed): the
pool starts a replacement and re-runs that worker's share of the round on it, at most
`max_retries` times per call, and records each replacement in `events`. The other workers' work
stands, so the round's results are bitwise those of an unfaulted round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import ray
from ray.exceptions import RayActorError

from fedsim.engine.sampling import balance, evaluation_plan
from fedsim.engine.worker import WorkerCore
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import ClientReport, Instruction
from fedsim.strategies.base import Strategy

_WorkerActor = ray.remote(WorkerCore)


@dataclass
class _Share:
    """One worker's part of a train call, kept so it can be re-run on a replacement."""

    slot: int  # index into WorkerPool.workers
    jobs: list[Instruction]
    inputs: list[Any]  # the hospitals' state refs from before the round
    refs: list[ray.ObjectRef] = field(default_factory=list)  # partial, reports, *new states


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
        max_retries: int = 3,
        personalise_steps: int = 0,
    ) -> None:
        threads = max(1, int(num_cpus))
        options = _WorkerActor.options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._new_worker: Callable[[], Any] = lambda: self._warmed(
            options.remote(task_ref, strategy, pipeline, num_gpus > 0, threads, personalise_steps)
        )
        self.workers = [self._new_worker() for _ in range(size)]
        self.keeps_hospital_state = keeps_hospital_state
        self.max_retries = max_retries
        self.states: dict[int, ray.ObjectRef] = {}
        self.events: list[dict[str, Any]] = []  # worker replacements since the driver last drained them
        self._round: tuple[int, int, ray.ObjectRef, bool] | None = None  # (round, run seed, broadcast, hold) of the last train
        self._shares: list[_Share] = []
        self._cohort: list[int] = []

    @staticmethod
    def _warmed(worker: Any) -> Any:
        """A new worker, asked at once to warm up (its calls run in order, so its first train
        waits for that; the driver does not)."""
        worker.warm_up.remote()
        return worker

    def _states_of(self, hospitals: Sequence[int]) -> list[Any]:
        return [self.states.get(h) for h in hospitals]

    def _replace(self, slot: int, during: str, error: BaseException) -> None:
        """Start a new actor in `slot` after the old one died."""
        try:
            ray.kill(self.workers[slot])
        except Exception:  # already gone
            pass
        self.workers[slot] = self._new_worker()
        round_index = self._round[0] if self._round else 0
        self.events.append({"round": round_index, "event": "worker_replaced", "worker": slot, "during": during,
                            "detail": type(error).__name__, "time": time.time()})

    def _with_retries(self, slot: int, during: str, attempt: Callable[[], Any]) -> Any:
        """`attempt()` (submit and wait), re-run on a fresh actor when the worker in `slot` dies."""
        for tries in range(self.max_retries + 1):
            try:
                return attempt()
            except RayActorError as error:
                if tries == self.max_retries:
                    raise RuntimeError(
                        f"engine.max_retries: worker {slot} died {tries + 1} times in one {during} (last: {error.__class__.__name__}); "
                        "giving up"
                    ) from None
                self._replace(slot, during, error)
        raise AssertionError("unreachable")

    def _submit_train(self, share: _Share) -> None:
        round_index, run_seed, global_ref, hold = self._round  # type: ignore[misc]
        returns = 2 + len(share.jobs) if self.keeps_hospital_state else 2
        share.refs = self.workers[share.slot].train.options(num_returns=returns).remote(
            round_index, run_seed, global_ref, share.jobs, *share.inputs, cohort=self._cohort, hold=hold
        )

    def _reports(self, share: _Share) -> list[ClientReport]:
        """The share's reports, re-training it on a replacement if its worker died."""

        def attempt() -> list[ClientReport]:
            if not share.refs:
                self._submit_train(share)
            try:
                return ray.get(share.refs[1])
            except RayActorError:
                share.refs = []
                raise

        return self._with_retries(share.slot, "train", attempt)

    def train(
        self, round_index: int, run_seed: int, global_ref: ray.ObjectRef, instructions: list[Instruction], costs: np.ndarray,
        hold: bool = False,
    ) -> tuple[list[ray.ObjectRef], list[ClientReport]]:
        """Run one round's local training; returns partial-aggregate refs (summaries when the
        strategy weighs after training) and the reports; `hold`: see WorkerCore.train."""
        self._round = (round_index, run_seed, global_ref, hold)
        self._cohort = [instruction.hospital for instruction in instructions]  # secure aggregation's neighbours
        self._shares = []
        for slot, positions in enumerate(balance(costs, len(self.workers))):
            if positions:
                jobs = [instructions[p] for p in positions]
                share = _Share(slot, jobs, self._states_of([job.hospital for job in jobs]))
                self._submit_train(share)
                self._shares.append(share)
        reports = [report for share in self._shares for report in self._reports(share)]
        for share in self._shares:
            self.states.update((job.hospital, ref) for job, ref in zip(share.jobs, share.refs[2:]))
        return [share.refs[0] for share in self._shares], sorted(reports, key=lambda report: report.hospital)

    def withdraw(self, hospitals: Sequence[int]) -> None:
        """The last train's hospitals in `hospitals` keep their state refs from before it."""
        void = set(hospitals)
        for share in self._shares:
            for job, before in zip(share.jobs, share.inputs):
                if job.hospital in void:
                    if before is None:
                        self.states.pop(job.hospital, None)
                    else:
                        self.states[job.hospital] = before

    def weighted_sums(self, weights_ref: ray.ObjectRef) -> list[ray.ObjectRef]:
        """Partial sums of the last train call's held contributions with the server's weights. A
        worker that died since lost what it held: its share is trained again first."""
        sums = []
        for share in self._shares:
            def attempt(share: _Share = share) -> ray.ObjectRef:
                if not share.refs:  # its worker died holding the contributions: the replacement trains again
                    self._submit_train(share)
                    ray.get(share.refs[1])
                total_ref, done_ref = self.workers[share.slot].weighted_sum.options(num_returns=2).remote(weights_ref)
                try:
                    ray.get(done_ref)
                except RayActorError:
                    share.refs = []
                    raise
                return total_ref

            sums.append(self._with_retries(share.slot, "weighted sum", attempt))
        return sums

    def evaluate(
        self, global_ref: ray.ObjectRef, hospitals: Sequence[int], num_units: int, round_index: int = 0, run_seed: int = 0
    ) -> tuple[dict[int, dict[str, float]], list[Any]]:
        """Score the global model on every given hospital and on all global test units
        (`round_index` and `run_seed` key evaluation's fine-tuning)."""
        plans = evaluation_plan(list(hospitals), num_units, len(self.workers))
        keys = {"round_index": round_index, "run_seed": run_seed}
        calls = [self.workers[slot].evaluate.remote(global_ref, mine, units, *self._states_of(mine), **keys)
                 for slot, (mine, units) in enumerate(plans)]
        per_hospital: dict[int, dict[str, float]] = {}
        outputs: dict[int, Any] = {}
        for slot, ((mine, units), call) in enumerate(zip(plans, calls)):
            pending = [call]

            def attempt(slot: int = slot, mine: list[int] = mine, units: list[int] = units, pending: list = pending) -> Any:
                if not pending:
                    pending.append(self.workers[slot].evaluate.remote(global_ref, mine, units, *self._states_of(mine), **keys))
                try:
                    return ray.get(pending[0])
                except RayActorError:
                    pending.clear()
                    raise

            scores, unit_outputs = self._with_retries(slot, "evaluation", attempt)
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
