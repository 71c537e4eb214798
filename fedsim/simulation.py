"""The driver: run directory, progress and results files, round after round of the protocol in
fedsim.engine.rounds on the configured backend."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fedsim.config import Config
from fedsim.engine.backend import Backend, open_backend
from fedsim.engine.memory import peak_rss_bytes
from fedsim.engine.rounds import RoundOutcome, RoundSchedule, run_round
from fedsim.metrics import worst_decile_mean
from fedsim.pipeline.base import build_pipeline
from fedsim.privacy.ledger import PrivacyLedger
from fedsim.protocol import ClientReport
from fedsim.results import CLIENTS, HOSPITAL_EVAL, MODEL, PARTITION, RESOURCES, ROUNDS, RunDirectory
from fedsim.strategies import build_strategy
from fedsim.tasks.base import Task
from fedsim.tasks.factory import build_task

NAN = float("nan")


@dataclass(frozen=True)
class RoundSummary:
    round: int
    seconds: float
    headline: float  # the task's headline global metric (accuracy for classification), NaN if not evaluated


class Simulation:
    """Runs one configured federation and writes its run directory round by round."""

    def __init__(self, config: Config, out: str | Path, quiet: bool = False, dataset: Any = None) -> None:
        self.config = config
        self.quiet = quiet
        self.startup_seconds = float("nan")  # backend start-up (Ray, pool, server), measured by run()
        self.task: Task = build_task(config, dataset)  # data errors surface here, before Ray starts
        self.strategy = build_strategy(config, self.task)
        self.pipeline = build_pipeline(config, self.task)
        self.privacy = PrivacyLedger(config, self.task.hospital_sizes()) if config.privacy else None
        self.stopped: str | None = None  # why the run ended before config.rounds, if it did
        self.run_dir = RunDirectory.create(out, config)
        partition = self.task.partition_table()
        if partition is not None:
            self.run_dir.write_table(PARTITION, partition)

    def run(self) -> list[RoundSummary]:
        config, task = self.config, self.task
        started = time.perf_counter()
        schedule = RoundSchedule(config, task)
        summaries: list[RoundSummary] = []
        with open_backend(config, task, self.strategy, self.pipeline) as backend:
            progress = tqdm(total=config.rounds, desc="rounds", unit="round", disable=self.quiet, dynamic_ncols=True)
            self.startup_seconds = time.perf_counter() - started
            try:
                for round_index in range(1, config.rounds + 1):
                    started = time.perf_counter()
                    cohort = schedule.cohort(round_index)
                    if self.privacy is not None and not self.privacy.affordable(cohort):
                        self.stopped = (f"privacy budget: round {round_index} would spend epsilon "
                                        f"{self.privacy.epsilon_after(cohort):.3g} > target_epsilon {self.privacy.budget:g}; "
                                        f"stopped after round {round_index - 1}")
                        tqdm.write(self.stopped, file=sys.stderr)
                        break
                    outcome = run_round(backend, task, round_index, cohort, schedule.scored(round_index, cohort))
                    seconds = time.perf_counter() - started
                    spent = self.privacy.record(cohort) if self.privacy is not None else {}
                    self._write_round(outcome, seconds, backend, spent)
                    if outcome.round_metrics.get("pipeline_secagg_failed") and config.secure_aggregation.on_failure == "stop":
                        self.stopped = f"secure aggregation: round {round_index} had too few survivors to unmask; stopped"
                        tqdm.write(self.stopped, file=sys.stderr)
                        break
                    headline = outcome.global_metrics.get(task.headline_metric, NAN)
                    summaries.append(RoundSummary(round_index, seconds, headline))
                    progress.set_postfix({task.headline_metric: f"{headline:.3f}" if outcome.global_metrics else "-"})
                    progress.update()
                self._save_model(backend)
            finally:
                progress.close()
        return summaries

    def _save_model(self, backend: Backend) -> None:
        """The final global model as a torch state_dict (`fedsim.RunResult.model()` loads it)."""
        state = {name: torch.from_numpy(np.array(array)) for name, array in backend.global_params().items()}
        self.run_dir.write_atomically(MODEL, lambda path: torch.save(state, path))

    def _write_round(self, outcome: RoundOutcome, seconds: float, backend: Backend, spent: dict[str, float]) -> None:
        """Append this round's rows: hospitals first, then the round row that marks it complete."""
        round_index, per_hospital, global_metrics = outcome.round_index, outcome.hospital_scores, outcome.global_metrics
        self.run_dir.append(RESOURCES, round_index, [{"round": round_index, "driver_peak_rss": peak_rss_bytes(), **backend.memory()}])
        self.run_dir.append(CLIENTS, round_index, (_client_row(round_index, report) for report in outcome.reports))
        self.run_dir.append(
            HOSPITAL_EVAL,
            round_index,
            ({"round": round_index, "hospital": h, **scores} for h, scores in sorted(per_hospital.items())),
        )
        task = self.task
        scores = np.array([per_hospital[h][task.hospital_metric] for h in sorted(per_hospital)], dtype=np.float64)
        has_scores = bool(scores.size) and not np.all(np.isnan(scores))
        prefix = f"hospital_{task.hospital_metric}"
        row: dict[str, Any] = {
            "round": round_index,
            "seconds": seconds,
            "hospitals": len(outcome.reports),
            **{f"global_{name}": float(global_metrics.get(name, NAN)) for name in task.global_metric_names},
            f"{prefix}_mean": float(np.nanmean(scores)) if has_scores else NAN,
            f"{prefix}_std": float(np.nanstd(scores)) if has_scores else NAN,
            f"{prefix}_worst10": worst_decile_mean(scores, task.higher_is_better) if has_scores else NAN,
            "bytes_sent": outcome.bytes_sent,
            "bytes_received": sum(report.upload_bytes for report in outcome.reports),
        }
        row.update({name: float(value) for name, value in outcome.round_metrics.items()})
        row.update(spent)  # epsilon, delta and noise_multiplier of a DP run
        self.run_dir.append(ROUNDS, round_index, [row])


def _client_row(round_index: int, report: ClientReport) -> dict[str, Any]:
    return {
        "round": round_index,
        "hospital": report.hospital,
        "samples": report.num_samples,
        "steps": report.steps,
        "weight": report.weight,
        "seconds": report.seconds,
        "upload_bytes": report.upload_bytes,
        **{name: float(value) for name, value in report.metrics.items()},
    }
