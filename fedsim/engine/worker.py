"""What a pool worker does: run many virtual hospitals in turn and pre-sum their contributions.

When the strategy weighs after training, the worker sends only each hospital's summary, keeps the
contributions until the server's weights come back (`weighted_sum`), and then sends one partial
sum: the server never receives a full update per hospital. Only robust strategies
(`Strategy.sends_individual_updates`: median, trimmed mean, Krum) make the worker send each
hospital's contribution itself, since their rules are not sums.

Before a contribution is summed, the pipeline's screen (fedsim.quarantine) checks it; a
quarantined hospital is not added and keeps its state from before the round.

`WorkerCore` is plain Python so tests can drive it without Ray; the pool wraps it in an actor.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from fedsim.engine.fixed_point import FixedPointSum
from fedsim.engine.memory import peak_rss_bytes
from fedsim.params import Params
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import ClientReport, HospitalState, Instruction, LocalResult, Summaries, Updates
from fedsim.quarantine import OK
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.base import Strategy
from fedsim.tasks.base import Task, TrainJob


def upload_bytes(contribution: dict[str, np.ndarray], encoded: Mapping[str, int] | None = None) -> int:
    """Bytes a real hospital would upload for this contribution: float32 on the wire, except the
    entries an update stage encodes (compression), which count their `encoded` size."""
    encoded = encoded or {}
    return int(sum(encoded.get(name, 4 * np.asarray(array).size) for name, array in contribution.items()))


def keeps_hospital_state(task: Task, strategy: Strategy, pipeline: Pipeline) -> bool:
    """Whether hospitals carry state between their rounds (then the engine holds it)."""
    return task.keeps_hospital_state or strategy.keeps_hospital_state or pipeline.keeps_hospital_state


class WorkerCore:
    def __init__(self, task: Task, strategy: Strategy, pipeline: Pipeline, use_gpu: bool, threads: int) -> None:
        torch.set_num_threads(threads)
        self.task = task
        self.strategy = strategy
        self.pipeline = pipeline
        self.keeps_hospital_state = keeps_hospital_state(task, strategy, pipeline)
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("engine.num_gpus: Ray gave this worker a GPU but its torch cannot use it "
                               "(CPU-only torch build, or no CUDA driver on the node)")
        task.use_device("cuda" if use_gpu else "cpu")
        self.held: dict[int, dict[str, np.ndarray]] = {}  # contributions awaiting weights
        self._masking: tuple[int, list[int]] | None = None  # (round, cohort) of held contributions to mask

    def warm_up(self) -> bool:
        """The task's one-off set-up, called by the pool as soon as the worker exists so that it
        overlaps the driver's own start-up. Nobody waits on it: a model that fails here fails the
        same way in round 1, where the error is reported, so the failure is only returned."""
        try:
            self.task.warm_up()
        except Exception:  # reported by the first round's train instead
            return False
        return True

    def train(
        self,
        round_index: int,
        run_seed: int,
        broadcast: Params,
        instructions: Sequence[Instruction],
        *states: HospitalState | None,
        cohort: Sequence[int] = (),
        hold: bool = False,
    ) -> list[Any]:
        """Train each instructed hospital from the broadcast; `states` align with `instructions`;
        `cohort`: every hospital of the round (secure aggregation masks with neighbours in it);
        `hold`: keep every contribution (weighted, unmasked) for `weighted_sum` to sum the kept
        ones, instead of summing them now (the simulated clock decides who arrived in time).

        Returns [partial aggregate, reports, *new states]: the partial aggregate is a
        FixedPointSum (or the hospitals' summaries, when the strategy weighs after training), and
        the states are returned one object per hospital only when the task, the strategy or an
        update stage keeps hospital state.
        """
        strategy, secure = self.strategy, self.pipeline.secure_aggregation
        individual = strategy.weighs_after_training or strategy.sends_individual_updates
        holding = hold and not individual
        partial: FixedPointSum | Summaries | Updates | None = [] if individual else None if holding \
            else secure.new_sum() if secure else FixedPointSum()
        self.held = {}
        self._masking = (round_index, list(cohort)) if holding and secure else None
        reports: list[ClientReport] = []
        new_states: list[HospitalState] = []
        states = [state or HospitalState() for state in states]
        jobs = (self._job(instruction, state, broadcast, round_index, run_seed) for instruction, state in zip(instructions, states))
        for instruction, state, (job, result, train_seconds) in zip(instructions, states, self._local_training(jobs)):
            started = time.perf_counter()
            hospital, start = instruction.hospital, job.params
            sent, stage_states, stage_metrics, encoded, summed = self.pipeline.hospital_side(
                result, start, strategy.local_keys, instruction, round_index, run_seed, state.stages
            )
            contribution = strategy.contribution(sent, instruction, broadcast)
            if not individual:  # the stages' summed quantities ride in the exact (or masked) sum
                contribution.update(summed)
            status = self.pipeline.screen.verdict(sent, start, strategy.local_keys, contribution)
            strategy_state, strategy_metrics = strategy.local_state(result, instruction, broadcast, state.strategy)
            if status == OK:
                new_states.append(HospitalState(result.state, strategy_state, stage_states))
            else:
                new_states.append(state)  # quarantined: not summed, and the round does not count for it
            if holding:  # a quarantined one too: under secure aggregation it still dealt its shares
                self.held[hospital] = contribution
            elif secure and not individual:  # a quarantined hospital is withheld: its masks are recovered like a dropout's
                stage_metrics["secagg_dropped"] = float(
                    not secure.add_masked(partial, contribution, hospital, cohort, round_index, withheld=status != OK)
                )
            elif status == OK:
                if isinstance(partial, FixedPointSum):
                    partial.add(contribution, f"hospital {hospital}")
                elif strategy.sends_individual_updates:
                    partial.append((hospital, contribution))
                else:
                    summary = strategy.summary(contribution)
                    partial.append((hospital, summary))
                    self.held[hospital] = {name: array for name, array in contribution.items() if name not in summary}
            reports.append(
                ClientReport(
                    hospital=hospital,
                    num_samples=result.num_samples,
                    steps=result.steps,
                    weight=instruction.weight,
                    seconds=train_seconds + time.perf_counter() - started,
                    upload_bytes=secure.upload_bytes(contribution, len(cohort)) if secure else upload_bytes(contribution, encoded),
                    metrics={**result.metrics, **strategy_metrics, **stage_metrics},
                    status=status,
                )
            )
        return [partial, reports, *new_states] if self.keeps_hospital_state else [partial, reports]

    def _job(self, instruction: Instruction, state: HospitalState, broadcast: Params, round_index: int, run_seed: int) -> TrainJob:
        strategy, hospital = self.strategy, instruction.hospital
        return TrainJob(
            hospital=hospital,
            params=strategy.model_params(broadcast, state.strategy),
            plan=self.pipeline.local_plan(strategy.local_plan(instruction, broadcast, state.strategy), instruction, round_index, run_seed),
            state=state.task,
            seed=seed_for(run_seed, Stream.LOCAL_TRAINING, round_index, hospital),
        )

    def _local_training(self, jobs: Iterator[TrainJob]) -> Iterator[tuple[TrainJob, LocalResult, float]]:
        """Each job with its result and training seconds: one hospital at a time (jobs made as
        they are needed), or, with engine.vectorized_hospitals, groups of that many at once (each
        credited an equal share of the group's seconds)."""
        group = self.task.vectorized_hospitals
        while chunk := list(itertools.islice(jobs, max(1, group))):
            started = time.perf_counter()
            if group:
                results = self.task.train_group(chunk)
            else:
                results = [self.task.train(job.hospital, job.params, job.plan, job.state, job.seed) for job in chunk]
            share = (time.perf_counter() - started) / len(chunk)
            yield from ((job, result, share) for job, result in zip(chunk, results))

    def weighted_sum(self, weights: Mapping[int, float]) -> tuple[FixedPointSum, bool]:
        """Sum the held contributions with the server's weights (second step of weighing after
        training, or the hospitals kept by the simulated clock), leaving out hospitals without a
        weight, and release them. Held under secure aggregation, every hospital is masked now
        and those left out are withheld like dropouts. The second value is a small marker the
        driver waits on to know the sum exists (without fetching it)."""
        secure = self.pipeline.secure_aggregation if self._masking else None
        total = secure.new_sum() if secure else FixedPointSum()
        for hospital, contribution in self.held.items():
            if secure and self._masking:
                round_index, cohort = self._masking
                secure.add_masked(total, contribution, hospital, cohort, round_index, withheld=hospital not in weights)
            elif hospital in weights:
                weight = weights[hospital]
                total.add({name: weight * np.asarray(array, dtype=np.float64) for name, array in contribution.items()}, f"hospital {hospital}")
        self.held = {}
        self._masking = None
        return total, True

    def evaluate(
        self, broadcast: Params, hospitals: Sequence[int], units: Sequence[int], *states: HospitalState | None
    ) -> tuple[list[dict[str, float]], list[Any]]:
        """Score hospitals' own models on their test splits, and the global model on test units.

        Where normalisation layers never leave the hospitals (FedBN), the global model and a
        hospital that has never trained (no local BN yet) are scored by the same rule: each test
        batch normalised with its own statistics, not with never-trained global ones."""
        strategy = self.strategy
        batch_statistics = strategy.global_eval_batch_statistics
        per_hospital = []
        for hospital, state in zip(hospitals, states):
            state = state or HospitalState()
            params = strategy.model_params(broadcast, state.strategy)
            untrained = batch_statistics and state.strategy is None
            per_hospital.append(self.task.evaluate_hospital(hospital, params, state.task, batch_statistics=untrained))
        global_params = strategy.model_params(broadcast)
        outputs = [self.task.evaluate_unit(unit, global_params, batch_statistics) for unit in units]
        return per_hospital, outputs

    def peak_rss(self) -> int:
        """Peak resident memory of this worker's process, for the run's resources table."""
        return peak_rss_bytes()
