"""The driver: rounds, progress and results files. Ray is used here and in fedsim.engine only."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
from tqdm import tqdm

from fedsim.config import Config
from fedsim.engine.cluster import ray_session
from fedsim.engine.memory import object_store_bytes, peak_rss_bytes
from fedsim.engine.pool import WorkerPool
from fedsim.engine.server import ServerCore
from fedsim.metrics import worst_decile_mean
from fedsim.local_work import round_cohort
from fedsim.protocol import ClientReport
from fedsim.results import CLIENTS, HOSPITAL_EVAL, PARTITION, RESOURCES, ROUNDS, RunDirectory
from fedsim.seeding import Stream, seed_for
from fedsim.strategies import build_strategy
from fedsim.tasks.base import Task
from fedsim.tasks.factory import build_task

_ServerActor = ray.remote(ServerCore)
NAN = float("nan")


@dataclass(frozen=True)
class RoundSummary:
    round: int
    seconds: float
    headline: float  # the task's headline global metric (accuracy for classification), NaN if not evaluated


class Simulation:
    """Runs one configured federation and writes its run directory round by round."""

    def __init__(self, config: Config, out: str | Path, quiet: bool = False) -> None:
        self.config = config
        self.quiet = quiet
        self.startup_seconds = float("nan")  # Ray start-up and pool creation, measured by run()
        self.task: Task = build_task(config)  # data errors surface here, before Ray starts
        self.run_dir = RunDirectory.create(out, config)
        partition = self.task.partition_table()
        if partition is not None:
            self.run_dir.write_table(PARTITION, partition)

    def run(self) -> list[RoundSummary]:
        config = self.config
        started = time.perf_counter()
        with ray_session(config.engine, config.num_workers()):
            return self._rounds(started)

    def _rounds(self, started: float) -> list[RoundSummary]:
        config, task = self.config, self.task
        strategy = build_strategy(config, task)
        pool = WorkerPool(
            ray.put(task),
            strategy,
            size=config.num_workers(),
            num_cpus=config.engine.num_cpus,
            num_gpus=config.engine.num_gpus,
            keeps_hospital_state=task.keeps_hospital_state or strategy.keeps_hospital_state,
        )
        initial = task.initial_params(seed_for(config.seed, Stream.MODEL_INIT))
        server = _ServerActor.options(num_cpus=0).remote(strategy, initial)
        broadcast_ref, size_ref = server.initial.options(num_returns=2).remote()
        broadcast_bytes = ray.get(size_ref)
        sizes = task.hospital_sizes()
        all_hospitals = list(range(task.num_hospitals))
        summaries: list[RoundSummary] = []
        progress = tqdm(total=config.rounds, desc="rounds", unit="round", disable=self.quiet, dynamic_ncols=True)
        self.startup_seconds = time.perf_counter() - started
        try:
            for round_index in range(1, config.rounds + 1):
                started = time.perf_counter()
                cohort = round_cohort(config, task, sizes, config.seed, round_index)
                instructions = ray.get(server.configure.remote(round_index, cohort))
                costs = cohort.sizes * cohort.epochs
                partial_refs, reports = pool.train(round_index, config.seed, broadcast_ref, instructions, costs)
                if strategy.weighs_after_training:
                    weights_ref = server.weigh.remote(round_index, instructions, reports, *partial_refs)
                    partial_refs = pool.weighted_sums(weights_ref)
                sent = broadcast_bytes * len(reports)
                broadcast_ref, metrics_ref, size_ref, hospital_ref = server.aggregate.options(num_returns=4).remote(
                    round_index, instructions, reports, *partial_refs
                )
                strategy_metrics, broadcast_bytes, hospital_metrics = ray.get([metrics_ref, size_ref, hospital_ref])
                reports = [replace(r, metrics={**r.metrics, **hospital_metrics.get(r.hospital, {})}) for r in reports]
                evaluated = round_index % config.eval.every == 0 or round_index == config.rounds
                if evaluated:
                    scored = all_hospitals if config.eval.hospitals == "all" else cohort.hospitals.tolist()
                    per_hospital, outputs = pool.evaluate(broadcast_ref, scored, task.global_eval_units())
                    global_metrics = task.global_metrics(outputs)
                    server.observe.remote(round_index, global_metrics, per_hospital)  # runs before the next configure
                else:
                    per_hospital, global_metrics = {}, {}
                seconds = time.perf_counter() - started
                self.run_dir.append(RESOURCES, round_index, [_resources_row(round_index, pool)])
                self._write_round(round_index, seconds, reports, per_hospital, global_metrics, strategy_metrics, sent)
                headline = global_metrics.get(task.headline_metric, NAN)
                summaries.append(RoundSummary(round_index, seconds, headline))
                progress.set_postfix({task.headline_metric: f"{headline:.3f}" if evaluated else "-"})
                progress.update()
        finally:
            progress.close()
            pool.shutdown()
            ray.kill(server)
        return summaries

    def _write_round(
        self,
        round_index: int,
        seconds: float,
        reports: list[ClientReport],
        per_hospital: dict[int, dict[str, float]],
        global_metrics: dict[str, float],
        strategy_metrics: dict[str, float],
        bytes_sent: int,
    ) -> None:
        """Append this round's rows: hospitals first, then the round row that marks it complete."""
        self.run_dir.append(CLIENTS, round_index, (_client_row(round_index, report) for report in reports))
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
            "hospitals": len(reports),
            **{f"global_{name}": float(global_metrics.get(name, NAN)) for name in task.global_metric_names},
            f"{prefix}_mean": float(np.nanmean(scores)) if has_scores else NAN,
            f"{prefix}_std": float(np.nanstd(scores)) if has_scores else NAN,
            f"{prefix}_worst10": worst_decile_mean(scores, task.higher_is_better) if has_scores else NAN,
            "bytes_sent": bytes_sent,
            "bytes_received": sum(report.upload_bytes for report in reports),
        }
        row.update({f"strategy_{name}": float(value) for name, value in strategy_metrics.items()})
        self.run_dir.append(ROUNDS, round_index, [row])


def _resources_row(round_index: int, pool: WorkerPool) -> dict[str, int]:
    """What the run costs the machine so far (measured after the round's clock stopped)."""
    return {
        "round": round_index,
        "driver_peak_rss": peak_rss_bytes(),
        "workers_peak_rss": pool.peak_rss(),
        "object_store_bytes": object_store_bytes(),
    }


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


def default_run_dir(config_path: str | Path | None) -> Path:
    stem = Path(config_path).stem if config_path else "default"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"

