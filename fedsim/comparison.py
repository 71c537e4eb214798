"""Variants x seeds on one config: run them, collect their rounds, tabulate mean ± std over seeds
of each metric at the final round and over the last 5, and the rounds (and simulated hours) each
variant takes to reach a target.

A variant is a labelled set of settings applied on top of the config: a strategy
(`--strategies fedprox`), or anything else from a variants file (a baseline scheduler, a
centralised learner). The table's columns come from the task: the global metrics for
classification; for scheduling, each hospital's own evaluation (the policy it would deploy,
which is what a local-only baseline can be compared on), averaged over hospitals first.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedsim.config import Config, ConfigError, load_config
from fedsim.yamlio import load_yaml
from fedsim.engine.cluster import ray_session
from fedsim.results import ROUNDS, RunDirectory, safe_name, strategy_label
from fedsim.simulation import Simulation
from fedsim.target import Target
from fedsim.tasks.registry import task_spec

#: How many of the last evaluated rounds the "last 5" columns average (a steadier read than one round).
LAST_ROUNDS = 5
#: The simulated clock (seconds since the run started) at the end of each round, where the run
#: simulates time (the systems settings); rounds-to-target then also reports simulated hours.
SIM_CLOCK = "sim_clock"


@dataclass(frozen=True)
class Variant:
    label: str  # the table row; its safe_name names the run directories
    overrides: tuple[str, ...]  # --set style assignments applied after the command line's


def parse_strategy(text: str) -> dict[str, Any]:
    """A strategy given on the command line: a name ("fedprox") or a YAML mapping ("{name: fedprox, mu: 0.1}")."""
    value = load_yaml(text)
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" in value:
        return value
    raise ConfigError(f"--strategies {text}: expected a strategy name or a mapping with a name")


def strategy_variant(text: str) -> Variant:
    spec = parse_strategy(text)
    return Variant(strategy_label(spec), (f"strategy={json.dumps(spec)}",))


def load_variants(path: str | Path) -> list[Variant]:
    """A variants file: a YAML mapping of label -> settings (sections as in a config file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--variants {path}: file not found")
    raw = load_yaml(path.read_text())
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"--variants {path}: expected a mapping of label -> settings")
    variants = []
    for label, settings in raw.items():
        if not isinstance(label, str) or not label or "/" in label:
            raise ConfigError(f"--variants {path}: {label!r} is not a usable label (a non-empty name without '/')")
        if not isinstance(settings, dict):
            raise ConfigError(f"--variants {path}: {label}: expected a mapping of settings, got {settings!r}")
        variants.append(Variant(label, tuple(f"{key}={json.dumps(value)}" for key, value in settings.items())))
    return variants


def plan_runs(config_path: str | None, overrides: Sequence[str], strategies: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int, Config]]:
    """One variant per strategy (see plan_variants)."""
    return plan_variants(config_path, overrides, [strategy_variant(text) for text in strategies], seeds)


def plan_variants(
    config_path: str | None, overrides: Sequence[str], variants: Sequence[Variant], seeds: Sequence[int]
) -> list[tuple[str, int, Config]]:
    """Validate every (variant, seed) config before anything runs."""
    runs = []
    for variant in variants:
        for seed in seeds:
            config = load_config(config_path, [*overrides, *variant.overrides, f"seed={seed}"])
            runs.append((variant.label, seed, config))
    folders: dict[str, str] = {}
    for variant in variants:
        other = folders.setdefault(safe_name(variant.label), variant.label)
        if other != variant.label:
            raise ConfigError(f"variants {other!r} and {variant.label!r} would share the folder {safe_name(variant.label)}; rename one")
    tasks = {config.task for _, _, config in runs}
    if len(tasks) > 1:
        raise ConfigError(f"task: every variant must run the same task, got {sorted(tasks)}")
    return runs


def run_all(runs: list[tuple[str, int, Config]], out: Path, quiet: bool = True) -> pa.Table:
    """Run each planned simulation under one Ray session (finished runs in `out` are reused) and
    return the rows the table summarises (the task's compare table) of all runs, with `strategy` (the
    variant's label) and `seed` columns; also written to out/comparison.parquet."""
    tables = []
    largest = max(runs, key=lambda run: run[2].num_workers())[2]
    on_ray = any(config.engine.backend == "ray" for _, _, config in runs)
    with ray_session(largest.engine, largest.num_workers()) if on_ray else nullcontext():
        for label, seed, config in runs:
            run_dir = run_directory(out, label, seed)
            done = _rounds_done(run_dir, config)
            if done < config.rounds:
                if not quiet:
                    print(f"{'resuming' if done else 'running'} {label} seed {seed} -> {run_dir}", flush=True)
                simulation = Simulation.resume(run_dir, quiet=True) if done else Simulation(config, run_dir, quiet=True)
                simulation.run()
            rows = _with_sim_clock(RunDirectory(run_dir), config.task_spec().compare_table)
            tables.append(
                rows.append_column("strategy", pa.array([label] * rows.num_rows))
                .append_column("seed", pa.array([seed] * rows.num_rows, pa.int64()))
            )
    combined = pa.concat_tables(tables, promote_options="default")
    pq.write_table(combined, out / "comparison.parquet")
    return combined


def run_directory(out: Path, label: str, seed: int) -> Path:
    """Where run_all puts the run of variant `label` with `seed`."""
    return out / safe_name(label) / f"seed-{seed}"


def _with_sim_clock(run: RunDirectory, table: str) -> pa.Table:
    """The run's compare table, with each row's round's simulated clock where rounds.parquet has
    one and the table is another (hospital_eval, for scheduling)."""
    rows = run.read(table)
    if table == ROUNDS or SIM_CLOCK in rows.column_names:
        return rows
    rounds = run.read(ROUNDS)
    if SIM_CLOCK not in rounds.column_names:
        return rows
    clock = dict(zip(rounds["round"].to_pylist(), rounds[SIM_CLOCK].to_pylist()))
    return rows.append_column(SIM_CLOCK, pa.array([clock.get(r) for r in rows["round"].to_pylist()], pa.float64()))


def _rounds_done(run_dir: Path, config: Config) -> int:
    """Rounds an earlier invocation finished in `run_dir` (an interrupted run is resumed)."""
    run = RunDirectory(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return 0
    if run.config() != config:
        raise ConfigError(f"{run_dir}: holds a run of a different config; choose another --out")
    return run.read(ROUNDS).num_rows if run.table_path(ROUNDS).is_dir() else 0


def _per_seed_rounds(rows: pa.Table, columns: Sequence[str]) -> dict[str, dict[int, pd.DataFrame]]:
    """variant -> seed -> that run's rounds (index: round, ascending), each column averaged over
    the round's rows (its hospitals, for a hospital_eval comparison)."""
    frame = rows.to_pandas()
    present = [column for column in dict.fromkeys(columns) if column in frame]
    curves: dict[str, dict[int, pd.DataFrame]] = {}
    for (label, seed), group in frame.groupby(["strategy", "seed"], sort=False):
        curves.setdefault(label, {})[int(seed)] = group.groupby("round")[present].mean().sort_index()
    return curves


def summary_table(rows: pa.Table, task: str = "classification") -> str:
    """Markdown: per variant, each compared metric at the final round and averaged over the
    last LAST_ROUNDS rounds that have a value, as mean ± sample std over seeds (each seed's value
    first averaged over its rows, i.e. over hospitals for scheduling); one seed: "± –"."""
    columns = task_spec(task).compare_columns
    curves = _per_seed_rounds(rows, [column for column, _ in columns])
    titles = [heading for _, title in columns for heading in (title, f"{title}, last {LAST_ROUNDS}")]
    lines = ["| strategy | seeds | " + " | ".join(titles) + " |", "|---|---:|" + "---:|" * len(titles)]
    for label, seeds in curves.items():
        cells = []
        for column, _ in columns:
            final = [_final(run, column) for run in seeds.values()]
            recent = [_recent_mean(run, column) for run in seeds.values()]
            cells += [_mean_std(final), _mean_std(recent)]
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(rows: pa.Table, targets: Sequence[Target]) -> str:
    """Markdown: per variant and target, the first round whose value reaches the target, mean ±
    sample std over seeds, or "not reached by k/n seeds"; beside it the simulated hours at the end
    of that round where the runs simulate time (a `sim_clock` column)."""
    missing = [target.metric for target in targets if target.metric not in rows.column_names]
    if missing:
        raise ConfigError(f"--target {missing[0]}: no such column in the compared runs' rows (comparison.parquet)")
    timed = SIM_CLOCK in rows.column_names
    curves = _per_seed_rounds(rows, [*(target.metric for target in targets), *([SIM_CLOCK] if timed else [])])
    titles = [f"rounds to {target}" for target in targets]
    if timed:
        titles = [heading for title, target in zip(titles, targets) for heading in (title, f"simulated hours to {target}")]
    lines = ["| strategy | seeds | " + " | ".join(titles) + " |", "|---|---:|" + "---:|" * len(titles)]
    for label, seeds in curves.items():
        cells = []
        for target in targets:
            reached = [_first_reaching(run, target) for run in seeds.values()]
            failed = sum(round_index is None for round_index, _ in reached)
            if failed:
                cells += [f"not reached by {failed}/{len(seeds)} seeds"] * (2 if timed else 1)
                continue
            cells.append(_mean_std([float(round_index) for round_index, _ in reached], digits=1))
            if timed:
                cells.append(_mean_std([clock / 3600.0 for _, clock in reached], digits=3))  # 3.6 s resolution
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _first_reaching(run: pd.DataFrame, target: Target) -> tuple[int | None, float]:
    """The first round of `run` whose value reaches `target`, and the simulated clock then."""
    for round_index, value in run[target.metric].items():
        if not math.isnan(value) and target.met(value):
            clock = run[SIM_CLOCK].get(round_index, float("nan")) if SIM_CLOCK in run else float("nan")
            return int(round_index), float(clock)
    return None, float("nan")


def _final(run: pd.DataFrame, column: str) -> float:
    """The value at the run's last round (NaN where that round has none, or the column is absent)."""
    return float(run[column].iloc[-1]) if column in run and len(run) else float("nan")


def _recent_mean(run: pd.DataFrame, column: str) -> float:
    """Mean of the last LAST_ROUNDS rounds with a value (rounds not evaluated are skipped)."""
    if column not in run:
        return float("nan")
    values = run[column].dropna()
    return float(values.iloc[-LAST_ROUNDS:].mean()) if len(values) else float("nan")


def _finite(values: list[float]) -> np.ndarray:
    return np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)


def _mean_std(values: list[float], digits: int = 3) -> str:
    """mean ± sample std of the finite values; "± –" for a single value (no spread to estimate), "-" for none."""
    finite = _finite(values)
    if finite.size == 0:
        return "-"
    spread = f"{finite.std(ddof=1):.{digits}f}" if finite.size > 1 else "–"
    return f"{finite.mean():.{digits}f} ± {spread}"
