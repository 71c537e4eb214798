"""The driver: run directory, progress and results files, round after round of the protocol in
fedsim.engine.rounds on the configured backend."""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from fedsim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedsim.config import Config
from fedsim.engine.backend import Backend, ServerLost, open_backend
from fedsim.errors import ConfigError
from fedsim.engine.asynchronous import AsynchronousRun
from fedsim.engine.memory import peak_rss_bytes
from fedsim.engine.rounds import RoundOutcome, RoundSchedule, run_round
from fedsim.metrics import worst_decile_mean
from fedsim.pipeline.base import build_pipeline
from fedsim.protocol import ClientReport
from fedsim.quarantine import OK, is_quarantined, quarantine_notice
from fedsim.results import CLIENTS, HOSPITAL_EVAL, MODEL, PARTITION, RESOURCES, ROUNDS, SYSTEMS, RunDirectory
from fedsim.systems.clock import DROPPED_OUT
from fedsim.systems.profiles import SystemProfiles
from fedsim.strategies import build_strategy
from fedsim.tasks.base import Task
from fedsim.tasks.factory import build_task
from fedsim.tracking import Trackers

if TYPE_CHECKING:
    from fedsim.privacy.ledger import PrivacyLedger

NAN = float("nan")


@dataclass(frozen=True)
class RoundSummary:
    round: int
    seconds: float
    headline: float  # the task's headline global metric (accuracy for classification), NaN if not evaluated


#: Called after each finished round with its rounds.parquet row (tracking, Ray Tune reports).
RoundCallback = Callable[[Mapping[str, Any]], None]


class Simulation:
    """Runs one configured federation and writes its run directory round by round, with a
    checkpoint after every `engine.checkpoint_every` rounds (see fedsim.checkpoint); `on_round`
    is called with each finished round's row, after the configured trackers (fedsim.tracking)."""

    def __init__(
        self, config: Config, out: str | Path, quiet: bool = False, dataset: Any = None,
        on_round: RoundCallback | None = None, resume: bool = False,
    ) -> None:
        self.config = config
        self.quiet = quiet
        self.on_round = on_round
        self.startup_seconds = float("nan")  # backend start-up (Ray, pool, server), measured by run()
        self.task: Task = build_task(config, dataset)  # data errors surface here, before Ray starts
        self.strategy = build_strategy(config, self.task)
        self.pipeline = build_pipeline(config, self.task)
        self.privacy = _privacy_ledger(config, self.task) if config.privacy else None
        self.asynchronous: AsynchronousRun | None = None  # the event loop of an asynchronous strategy, made by run()
        self.stopped: str | None = None  # why the run ended before config.rounds, if it did
        self.round_starts: list[float] = [0.0]  # simulated clock when each round started, then now
        self.trackers = Trackers(config.tracking, config, Path(out))  # a missing package stops here
        if resume:
            self.run_dir = RunDirectory(out)
            return
        self.run_dir = RunDirectory.create(out, config)
        partition = self.task.partition_table()
        if partition is not None:
            self.run_dir.write_table(PARTITION, partition)
        if config.systems is not None:
            self.run_dir.write_table(SYSTEMS, SystemProfiles.draw(config.systems, self.task.num_hospitals, config.seed).table())

    @classmethod
    def resume(cls, out: str | Path, quiet: bool = False, dataset: Any = None,
               on_round: RoundCallback | None = None) -> "Simulation":
        """The interrupted run in `out`, to continue from its last checkpoint (from the start
        if it has none) with `run()`."""
        run_dir = RunDirectory(out)
        if not (run_dir.path / "config.yaml").is_file():
            raise ConfigError(f"{run_dir.path}: not a run directory (expected config.yaml inside)")
        return cls(run_dir.config(), out, quiet=quiet, dataset=dataset, on_round=on_round, resume=True)

    def run(self) -> list[RoundSummary]:
        config, task = self.config, self.task
        started = time.perf_counter()
        schedule = RoundSchedule(config, task)
        self.asynchronous = AsynchronousRun(config, task, schedule, self.strategy.buffer_size) if config.strategy.asynchronous else None
        summaries: list[RoundSummary] = []
        with open_backend(config, task, self.strategy, self.pipeline) as backend:
            round_index = self._continue(backend, load_checkpoint(self.run_dir.path), schedule) + 1
            progress = tqdm(total=config.rounds, initial=round_index - 1, desc="rounds", unit="round",
                            disable=self.quiet, dynamic_ncols=True)
            self.startup_seconds = time.perf_counter() - started
            restorations = 0
            try:
                while round_index <= config.rounds:
                    started = time.perf_counter()
                    cohort = schedule.cohort(round_index, self.round_starts[-1]) if self.asynchronous is None else None
                    if self.privacy is not None and not self.privacy.affordable(cohort):
                        self.stopped = (f"privacy budget: round {round_index} would spend epsilon "
                                        f"{self.privacy.epsilon_after(cohort):.3g} > target_epsilon {self.privacy.budget:g}; "
                                        f"stopped after round {round_index - 1}")
                        tqdm.write(self.stopped, file=sys.stderr)
                        break
                    try:
                        outcome = self.asynchronous.step(backend, round_index) if self.asynchronous is not None else \
                            run_round(backend, task, round_index, cohort, schedule.scored(round_index, cohort), schedule.systems)
                    except ServerLost as lost:
                        restorations += 1
                        round_index = self._recover(backend, lost, restorations, schedule) + 1
                        progress.n = round_index - 1
                        continue
                    notice = quarantine_notice(round_index, outcome.reports, config.quarantine.policy)
                    if notice is not None:
                        tqdm.write(notice, file=sys.stderr)
                    seconds = time.perf_counter() - started
                    if outcome.timeline is not None:
                        self.round_starts.append(self.round_starts[-1] + outcome.timeline.seconds)
                    spent = self.privacy.record(cohort) if self.privacy is not None else {}
                    row = self._write_round(outcome, seconds, spent)
                    self._checkpoint_and_account(backend, round_index)
                    self.trackers(row)
                    if self.on_round is not None:
                        self.on_round(row)
                    if outcome.round_metrics.get("pipeline_secagg_failed") and config.secure_aggregation.on_failure == "stop":
                        self.stopped = f"secure aggregation: round {round_index} had too few survivors to unmask; stopped"
                        tqdm.write(self.stopped, file=sys.stderr)
                        break
                    headline = outcome.global_metrics.get(task.headline_metric, NAN)
                    summaries.append(RoundSummary(round_index, seconds, headline))
                    progress.set_postfix({task.headline_metric: f"{headline:.3f}" if outcome.global_metrics else "-"})
                    progress.update()
                    round_index += 1
                self._save_model(backend)
            finally:
                progress.close()
                self._record_events(backend)
                self.trackers.close()
        return summaries

    def _continue(self, backend: Backend, checkpoint: Checkpoint | None, schedule: RoundSchedule) -> int:
        """Restore `checkpoint` if there is one (a resume); returns the last complete round."""
        done = checkpoint.round_index if checkpoint is not None else 0
        self.run_dir.drop_rounds_after(done)  # rounds written after the checkpoint are re-run, to the same bits
        if checkpoint is not None:
            self._restore(backend, checkpoint)
            self._spent_until(done, schedule)
            self._event(done + 1, "resumed", f"from the checkpoint after round {done}")
        return done

    def _restore(self, backend: Backend, checkpoint: Checkpoint) -> None:
        """The backend, the simulated clock and an asynchronous run as they stood at `checkpoint`."""
        backend.restore(checkpoint)
        self.round_starts = list(checkpoint.round_starts) or [0.0]
        if self.asynchronous is not None:
            self.asynchronous.state = copy.deepcopy(checkpoint.asynchronous)

    def _spent_until(self, done: int, schedule: RoundSchedule) -> None:
        """The privacy ledger as it stood after round `done`: rebuilt by recording rounds 1..done
        again, since what a round spends is a pure function of its (seeded) cohort."""
        if self.privacy is not None:
            self.privacy = _privacy_ledger(self.config, self.task)
            for round_index in range(1, done + 1):
                self.privacy.record(schedule.cohort(round_index, self.round_starts[round_index - 1] if self.config.systems else 0.0))

    def _recover(self, backend: Backend, lost: ServerLost, restorations: int, schedule: RoundSchedule) -> int:
        """After the server died: restore the last checkpoint; returns its round."""
        checkpoint = load_checkpoint(self.run_dir.path)
        if checkpoint is None or restorations > self.config.engine.max_retries:
            why = "no checkpoint to restore (engine.checkpoint_every is 0 or no round finished)" if checkpoint is None \
                else f"it died {restorations} times (engine.max_retries: {self.config.engine.max_retries})"
            raise RuntimeError(f"{lost}; cannot recover: {why}") from None
        self._restore(backend, checkpoint)
        self._spent_until(checkpoint.round_index, schedule)
        self.run_dir.drop_rounds_after(checkpoint.round_index)
        self._record_events(backend)
        return checkpoint.round_index

    def _checkpoint_and_account(self, backend: Backend, round_index: int) -> None:
        """Write the checkpoint when one is due, then the round's machine cost (resources.parquet)."""
        every = self.config.engine.checkpoint_every
        size, seconds = 0, 0.0
        if every and (round_index % every == 0 or round_index == self.config.rounds):
            started = time.perf_counter()
            snapshot = backend.snapshot(round_index)
            snapshot.round_starts = tuple(self.round_starts)
            if self.asynchronous is not None:
                snapshot.asynchronous = copy.deepcopy(self.asynchronous.state)
            size = save_checkpoint(self.run_dir, snapshot)
            seconds = time.perf_counter() - started
        row = {"round": round_index, "driver_peak_rss": peak_rss_bytes(), **backend.memory(),
               "checkpoint_bytes": size, "checkpoint_seconds": seconds}
        self.run_dir.append(RESOURCES, round_index, [row])
        self._record_events(backend)

    def _record_events(self, backend: Backend) -> None:
        for event in backend.drain_events():
            self._event(event["round"], event["event"], f"worker {event['worker']} died during {event['during']}"
                        if event["event"] == "worker_replaced" else event["detail"])

    def _event(self, round_index: int, kind: str, detail: str) -> None:
        """One recovery: a row of events.parquet and one line on stderr."""
        self.run_dir.append_event({"round": round_index, "event": kind, "detail": detail, "time": time.time()})
        print(f"fedsim: round {round_index}: {kind.replace('_', ' ')} ({detail})", file=sys.stderr, flush=True)

    def _save_model(self, backend: Backend) -> None:
        """The final global model as a torch state_dict (`fedsim.RunResult.model()` loads it)."""
        state = {name: torch.from_numpy(np.array(array)) for name, array in backend.global_params().items()}
        self.run_dir.write_atomically(MODEL, lambda path: torch.save(state, path))

    def _write_round(self, outcome: RoundOutcome, seconds: float, spent: dict[str, float]) -> dict[str, Any]:
        """Append this round's rows: hospitals first, then the round row that marks it complete
        (returned); `spent`: the privacy ledger's epsilon and delta so far."""
        round_index, per_hospital, global_metrics = outcome.round_index, outcome.hospital_scores, outcome.global_metrics
        clock = outcome.timeline.client_columns(outcome.reports) if outcome.timeline is not None else [{}] * len(outcome.reports)
        self.run_dir.append(CLIENTS, round_index, (_client_row(round_index, report, columns) for report, columns in zip(outcome.reports, clock)))
        self.run_dir.append(
            HOSPITAL_EVAL,
            round_index,
            ({"round": round_index, "hospital": h, **scores} for h, scores in sorted(per_hospital.items())),
        )
        for name, rows in outcome.global_tables.items():
            self.run_dir.append(name, round_index, ({"round": round_index, **row} for row in rows))
        task = self.task
        row: dict[str, Any] = {
            "round": round_index,
            "seconds": seconds,
            "hospitals": len(outcome.reports),
            "quarantined": sum(is_quarantined(report.status) for report in outcome.reports),
            **{f"global_{name}": float(global_metrics.get(name, NAN)) for name in task.global_metric_names},
            **hospital_summary(per_hospital, task.hospital_metric, task.higher_is_better),
            "bytes_sent": outcome.bytes_sent,
            "bytes_received": sum(report.upload_bytes for report in outcome.reports if report.status != DROPPED_OUT),
        }
        row.update({name: float(value) for name, value in outcome.round_metrics.items()})
        row.update(spent)  # epsilon, delta and noise_multiplier of a DP run
        if outcome.timeline is not None:
            row.update({"kept": sum(report.status == OK for report in outcome.reports),
                        "sim_seconds": outcome.timeline.seconds, "sim_clock": self.round_starts[-1]})
        self.run_dir.append(ROUNDS, round_index, [row])
        return row


def hospital_summary(per_hospital: Mapping[int, Mapping[str, float]], metric: str, higher_is_better: bool) -> dict[str, float]:
    """rounds.parquet's hospital_* columns: `metric`'s mean, std and worst-10% mean over the
    scored hospitals, then every other score's mean (NaN where no hospital has a value)."""
    hospitals = sorted(per_hospital)
    columns: dict[str, float] = {}
    for name in dict.fromkeys([metric, *(name for h in hospitals for name in per_hospital[h])]):
        scores = np.array([per_hospital[h].get(name, NAN) for h in hospitals], dtype=np.float64)
        known = bool(scores.size) and not np.isnan(scores).all()
        columns[f"hospital_{name}_mean"] = float(np.nanmean(scores)) if known else NAN
        if name == metric:
            columns[f"hospital_{name}_std"] = float(np.nanstd(scores)) if known else NAN
            columns[f"hospital_{name}_worst10"] = worst_decile_mean(scores, higher_is_better) if known else NAN
    return columns


def _client_row(round_index: int, report: ClientReport, systems: Mapping[str, Any]) -> dict[str, Any]:
    """One row of clients.parquet; `systems`: the simulated clock's columns (none without a systems section)."""
    return {
        "round": round_index,
        "hospital": report.hospital,
        "samples": report.num_samples,
        "steps": report.steps,
        "weight": report.weight,
        "seconds": report.seconds,
        "upload_bytes": report.upload_bytes,
        "status": report.status,
        **systems,
        **{name: float(value) for name, value in report.metrics.items()},
    }


def _privacy_ledger(config: Config, task: Task) -> "PrivacyLedger":
    """The run's ledger, imported only for runs with privacy: its accountant (Opacus) adds
    seconds to the driver's start."""
    from fedsim.privacy.ledger import PrivacyLedger

    return PrivacyLedger(config, task.hospital_sizes())
