"""What a pool worker does: run many virtual hospitals in turn and pre-sum their contributions.

When the strategy weighs after training, the worker sends only each hospital's summary, keeps the
contributions until the server's weights come back (`weighted_sum`), and then sends one partial
sum: the server never receives a full update per hospital. Only robust strategies
(`Strategy.sends_individual_updates`: median, trimmed mean, Krum) make the worker send each
hospital's contribution itself, since their rules are not sums.

Where the strategy offers several models (IFCA's clusters), each hospital works with the one of
lowest loss on its own training data; where it keeps a personal model (Ditto's v_k), the worker
trains that too after the shared one and keeps it as the hospital's strategy state.

Before a contribution is summed, the pipeline's screen (fedsim.quarantine) checks it; a
quarantined hospital is not added and keeps its state from before the round.

`WorkerCore` is plain Python so tests can drive it without Ray; the pool wraps it in an actor.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
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
    """`personalise_steps` (eval.personalise_steps): before a hospital is scored, a copy of its
    model is fine-tuned for that many local steps on its own training data and scored too
    (personalised_* metrics beside the others); the model itself is untouched."""

    def __init__(
        self, task: Task, strategy: Strategy, pipeline: Pipeline, use_gpu: bool, threads: int, personalise_steps: int = 0
    ) -> None:
        torch.set_num_threads(threads)
        self.task = task
        self.strategy = strategy
        self.pipeline = pipeline
        self.personalise_steps = personalise_steps
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
        individual = not strategy.sums_on_workers
        holding = hold and not individual
        partial: FixedPointSum | Summaries | Updates | None = [] if individual else None if holding \
            else secure.new_sum() if secure else FixedPointSum()
        self.held = {}
        self._masking = (round_index, list(cohort)) if holding and secure else None
        reports: list[ClientReport] = []
        new_states: list[HospitalState] = []
        states = [state or HospitalState() for state in states]
        models = strategy.models(broadcast)
        instructions = [replace(i, model=self._choice(i.hospital, models, state)) for i, state in zip(instructions, states)]
        jobs = (self._job(i, state, models[i.model], round_index, run_seed) for i, state in zip(instructions, states))
        for instruction, state, (job, result, train_seconds) in zip(instructions, states, self._local_training(jobs)):
            started = time.perf_counter()
            hospital, start, model = instruction.hospital, job.params, models[instruction.model]
            sent, stage_states, stage_metrics, encoded, summed = self.pipeline.hospital_side(
                result, start, strategy.local_keys, instruction, round_index, run_seed, state.stages
            )
            contribution = strategy.contribution(sent, instruction, model)
            if not individual:  # the stages' summed quantities ride in the exact (or masked) sum
                contribution.update(summed)
            status = self.pipeline.screen.verdict(sent, start, strategy.local_keys, contribution)
            strategy_state, strategy_metrics = strategy.local_state(result, instruction, model, state.strategy)
            personal = strategy.personal_training(instruction, model, state.strategy)
            if personal is not None:
                personal_seed = seed_for(run_seed, Stream.PERSONAL_TRAINING, round_index, hospital)
                personal_result = self.task.train(hospital, *personal, state.task, personal_seed)
                strategy_state = personal_result.params
                strategy_metrics = {**strategy_metrics, "personal_train_loss": personal_result.metrics.get("train_loss", float("nan"))}
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

    def _choice(self, hospital: int, models: list[Params], state: HospitalState) -> int:
        """Which of the strategy's models the hospital works with: the one of lowest loss on its
        own training data (the first on a tie); 0 when there is one."""
        if len(models) == 1:
            return 0
        losses = [self.task.train_loss(hospital, self.strategy.model_params(model, state.strategy), state.task) for model in models]
        return int(np.argmin(losses))

    def _scores(
        self, hospital: int, params: Params, state: HospitalState, round_index: int, run_seed: int, batch_statistics: bool
    ) -> dict[str, float]:
        """The hospital's metrics of `params`, and of a fine-tuned copy (personalised_*) when asked,
        both scored by the same normalisation rule (`batch_statistics`, see `evaluate`)."""
        scores = self.task.evaluate_hospital(hospital, params, state.task, batch_statistics=batch_statistics)
        if self.personalise_steps:
            seed = seed_for(run_seed, Stream.FINE_TUNE, round_index, hospital)
            tuned = self.task.fine_tune(hospital, params, self.personalise_steps, state.task, seed)
            scores.update({f"personalised_{name}": value for name, value in self.task.evaluate_hospital(hospital, tuned, state.task, batch_statistics=batch_statistics).items()})
        return scores

    def evaluate(
        self, broadcast: Params, hospitals: Sequence[int], units: Sequence[int], *states: HospitalState | None,
        round_index: int = 0, run_seed: int = 0,
    ) -> tuple[list[dict[str, float]], list[Any]]:
        """Score hospitals' own models on their test splits, and the global model on test units.

        Where normalisation layers never leave the hospitals (FedBN), the global model and a
        hospital that has never trained (no local BN yet) are scored by the same rule: each test
        batch normalised with its own statistics, not with never-trained global ones.
        `round_index` and `run_seed` key the fine-tuning's seeds (eval.personalise_steps)."""
        strategy = self.strategy
        batch_statistics = strategy.global_eval_batch_statistics
        models = strategy.models(broadcast)
        per_hospital = []
        for hospital, state in zip(hospitals, states):
            state = state or HospitalState()
            params = strategy.evaluation_params(models[self._choice(hospital, models, state)], state.strategy)
            untrained = batch_statistics and state.strategy is None
            per_hospital.append(self._scores(hospital, params, state, round_index, run_seed, untrained))
        global_params = strategy.global_params(broadcast)
        outputs = [self.task.evaluate_unit(unit, global_params, batch_statistics) for unit in units]
        return per_hospital, outputs

    def peak_rss(self) -> int:
        """Peak resident memory of this worker's process, for the run's resources table."""
        return peak_rss_bytes()
