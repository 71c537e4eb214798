"""The round protocol, written once:

    sample -> configure -> local work -> [summaries -> weigh -> weighted sums] -> aggregate
           -> evaluate -> observe

`RoundSchedule` answers the config's questions about a round (who is sampled, how many local
epochs each runs, who is scored); `run_round` drives one round on any Backend. The driver
(fedsim.simulation), FedMRL's MultiAgentEnv and the tests all run rounds through here.

No test-set information reaches a strategy: `observe` gets the global evaluation's validation
metrics only (`validation_metrics`), and the reports a strategy weighs and aggregates with carry
none of the scores a hospital measured on its own test split (`Task.test_report_metrics`). The
full reports and test scores still go to the logs (`RoundOutcome`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from fedsim.engine.backend import Backend
from fedsim.engine.sampling import available_hospitals, poisson_hospitals, proportional_hospitals, sample_hospitals
from fedsim.protocol import ClientReport, Cohort, Instruction
from fedsim.quarantine import OK
from fedsim.seeding import Stream, rng_for
from fedsim.systems.clock import RoundTimeline, SystemsRound
from fedsim.systems.profiles import SystemProfiles, hour_of_day
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
    timeline: RoundTimeline | None = None  # the round on the simulated clock (a systems section)
    global_tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # Task.global_tables


class RoundSchedule:
    """What the config decides about each round, from the run seed alone."""

    def __init__(self, config: Any, task: Task) -> None:
        self.config = config
        self.num_hospitals = task.num_hospitals
        self.sizes = task.hospital_sizes()
        spec = config.systems
        self.profiles = SystemProfiles.draw(spec, self.num_hospitals, config.seed) if spec is not None else None
        self.systems = None if spec is None else SystemsRound(
            spec, self.profiles, self.sizes, task.step_samples() if spec.stragglers == "partial" else None,
            config.clients_per_round(), config.seed,
        )

    def cohort(self, round_index: int, clock: float = 0.0) -> Cohort:
        """The round's sampled hospitals with their sizes and local epochs; with a systems
        section, only those online when the round starts, `clock` simulated seconds into the run
        (over-selection samples ceil(k * (1 + over_selection)))."""
        config, n = self.config, self.num_hospitals
        scheme, per_round = config.sampling.scheme, config.clients_per_round()
        online = self.profiles.online(hour_of_day(config.systems.start_hour, clock)) if self.profiles is not None else None
        if config.systems is not None and config.systems.over_selection > 0:
            per_round = min(n, math.ceil(per_round * (1 + config.systems.over_selection)))
        if scheme == "poisson":
            hospitals = poisson_hospitals(config.seed, round_index, n, per_round / n)
        elif scheme == "proportional":
            hospitals = proportional_hospitals(config.seed, round_index, self.sizes, per_round)
        elif scheme == "available":
            assert online is not None  # guaranteed by config validation
            hospitals = available_hospitals(config.seed, round_index, online, per_round)
        else:
            hospitals = sample_hospitals(config.seed, round_index, n, per_round)
        if online is not None:
            hospitals = hospitals[online[hospitals]]
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


def validation_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The val_* entries of a global evaluation: all of it a learning strategy may see."""
    return {name: value for name, value in metrics.items() if name.startswith("val_")}


def without_test_scores(reports: list[ClientReport], task: Task) -> list[ClientReport]:
    """The reports as a strategy may see them: without scores on the hospitals' own test splits."""
    hidden = task.test_report_metrics
    return [replace(r, metrics={k: v for k, v in r.metrics.items() if k not in hidden}) for r in reports]


def sample_passes(cohort: Cohort, instructions: list[Instruction]) -> np.ndarray:
    """Training samples times epochs of each instruction (the cost load balancing spreads): its
    hospital's samples, or all the hospitals' it pools (the centralised baseline's one site)."""
    sizes = dict(zip(cohort.hospitals.tolist(), cohort.sizes.tolist()))
    return np.array(
        [sum(sizes[h] for h in instruction.plan.pooled or (instruction.hospital,)) * instruction.plan.epochs
         for instruction in instructions],
        dtype=np.int64,
    )


def run_round(backend: Backend, task: Task, round_index: int, cohort: Cohort, scored: list[int] | None,
              systems: SystemsRound | None = None) -> RoundOutcome:
    """One round on `backend`: train `cohort`, aggregate, and (unless `scored` is None) evaluate
    the new model and let the strategy observe the result before the next configure.

    With `systems` (fedsim.systems.clock), the workers hold the trained contributions until the
    simulated clock has settled who arrived in time; only those are summed (secure aggregation
    recovers the others like dropouts), and the rest keep their state from before the round."""
    instructions = backend.configure(round_index, cohort)
    broadcast_bytes = backend.broadcast_bytes()
    if systems is not None:
        instructions = systems.plan(instructions, broadcast_bytes)
    bytes_sent = backend.bytes_sent(round_index, instructions)
    partials, reports = backend.train(round_index, instructions, sample_passes(cohort, instructions), hold=systems is not None)
    timeline = None
    if systems is not None:
        timeline = systems.settle(round_index, instructions, reports, broadcast_bytes)
        reports = timeline.mark(reports)
        arrived = {report.hospital for report in reports if report.status == OK}
        backend.withdraw([report.hospital for report in reports if report.hospital not in arrived])
        if backend.holds_contributions:
            partials = backend.weighted_sums({hospital: 1.0 for hospital in arrived})
    seen = without_test_scores(reports, task)
    if backend.weighs_after_training:
        partials = backend.weighted_sums(backend.weigh(round_index, instructions, seen, partials))
    round_metrics, hospital_metrics = backend.aggregate(round_index, instructions, seen, partials)
    reports = [replace(r, metrics={**r.metrics, **hospital_metrics.get(r.hospital, {})}) for r in reports]
    hospital_scores, global_metrics, global_tables = evaluate_and_observe(backend, task, round_index, scored)
    return RoundOutcome(round_index, instructions, reports, round_metrics, hospital_scores, global_metrics, bytes_sent,
                        timeline, global_tables)


def evaluate_and_observe(
    backend: Backend, task: Task, round_index: int, scored: list[int] | None
) -> tuple[dict[int, dict[str, float]], dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Score the new model on the `scored` hospitals' own test splits and (where the strategy has
    one) the global model on the global test and validation splits, then let the strategy observe
    the validation metrics; nothing when `scored` is None (no evaluation this round or step)."""
    if scored is None:
        return {}, {}, {}
    hospital_scores, outputs = backend.evaluate(scored, task.global_eval_units() if backend.has_global_model else 0, round_index)
    global_metrics: dict[str, float] = {}
    global_tables: dict[str, list[dict[str, Any]]] = {}
    if backend.has_global_model:
        global_metrics, global_tables = task.global_metrics(outputs), task.global_tables(outputs)
    backend.observe(round_index, validation_metrics(global_metrics))
    return hospital_scores, global_metrics, global_tables
