"""The round protocol, written once:

    sample -> configure -> local work -> [summaries -> weigh -> weighted sums] -> aggregate
           -> evaluate -> observe

`RoundSchedule` answers the config's questions about a round (who is sampled, how many local
epochs each runs, who is scored); `run_round` drives one round on any Backend. The driver
(fedsim.simulation), FedMRL's MultiAgentEnv and the tests all run rounds through here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedsim.engine.backend import Backend
from fedsim.engine.sampling import poisson_hospitals, sample_hospitals
from fedsim.protocol import ClientReport, Cohort, Instruction
from fedsim.seeding import Stream, rng_for
from fedsim.tasks.base import Task


@dataclass(frozen=True)
class RoundOutcome:
    round_index: int
    instructions: list[Instruction]
    reports: list[ClientReport]  # sorted by hospital, with the strategy's per-hospital quantities
    round_metrics: dict[str, float]  # strategy_* and pipeline_* quantities of the aggregate
    hospital_scores: dict[int, dict[str, float]]  # the new model on each scored hospital's test split
    global_metrics: dict[str, float]  # empty when the round was not evaluated
    bytes_sent: int


class RoundSchedule:
    """What the config decides about each round, from the run seed alone."""

    def __init__(self, config: Any, task: Task) -> None:
        self.config = config
        self.num_hospitals = task.num_hospitals
        self.sizes = task.hospital_sizes()

    def cohort(self, round_index: int) -> Cohort:
        """The round's sampled hospitals with their sizes and local epochs."""
        config = self.config
        if config.sampling.scheme == "poisson":
            rate = config.clients_per_round() / self.num_hospitals
            hospitals = poisson_hospitals(config.seed, round_index, self.num_hospitals, rate)
        else:
            hospitals = sample_hospitals(config.seed, round_index, self.num_hospitals, config.clients_per_round())
        return Cohort(hospitals, self.sizes[hospitals], local_epochs(config.train, self.sizes, hospitals, config.seed, round_index))

    def scored(self, round_index: int, cohort: Cohort) -> list[int] | None:
        """The hospitals whose own test splits score the new model, or None: no evaluation this round."""
        evaluation = self.config.eval
        if round_index % evaluation.every and round_index != self.config.rounds:
            return None
        return list(range(self.num_hospitals)) if evaluation.hospitals == "all" else cohort.hospitals.tolist()


def local_epochs(train: Any, all_sizes: np.ndarray, hospitals: np.ndarray, run_seed: int, round_index: int) -> np.ndarray:
    """Epochs per sampled hospital, following `train.epochs_mode` (see TrainConfig)."""
    if train.epochs_mode == "fixed":
        return np.full(len(hospitals), train.epochs, dtype=np.int64)
    assert train.max_epochs is not None  # guaranteed by TrainConfig validation
    if train.epochs_mode == "proportional":
        scaled = np.rint(train.max_epochs * all_sizes[hospitals] / max(1, int(all_sizes.max())))
        return np.clip(scaled, train.epochs, train.max_epochs).astype(np.int64)
    return np.array(
        [rng_for(run_seed, Stream.LOCAL_WORK, round_index, int(h)).integers(train.epochs, train.max_epochs + 1) for h in hospitals],
        dtype=np.int64,
    )


def run_round(backend: Backend, task: Task, round_index: int, cohort: Cohort, scored: list[int] | None) -> RoundOutcome:
    """One round on `backend`: train `cohort`, aggregate, and (unless `scored` is None) evaluate
    the new model and let the strategy observe the result before the next configure."""
    instructions = backend.configure(round_index, cohort)
    bytes_sent = backend.broadcast_bytes() * len(instructions)
    costs = cohort.sizes * np.array([instruction.plan.epochs for instruction in instructions], dtype=np.int64)
    partials, reports = backend.train(round_index, instructions, costs)
    if backend.weighs_after_training:
        partials = backend.weighted_sums(backend.weigh(round_index, instructions, reports, partials))
    round_metrics, hospital_metrics = backend.aggregate(round_index, instructions, reports, partials)
    reports = [replace(r, metrics={**r.metrics, **hospital_metrics.get(r.hospital, {})}) for r in reports]
    hospital_scores: dict[int, dict[str, float]] = {}
    global_metrics: dict[str, float] = {}
    if scored is not None:
        hospital_scores, outputs = backend.evaluate(scored, task.global_eval_units(), round_index)
        global_metrics = task.global_metrics(outputs)
        backend.observe(round_index, global_metrics, hospital_scores)
    return RoundOutcome(round_index, instructions, reports, round_metrics, hospital_scores, global_metrics, bytes_sent)
