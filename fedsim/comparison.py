"""Variants x seeds on one config: run them, collect their final rounds, tabulate mean ± std.

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
import pyarrow as pa
import pyarrow.parquet as pq

from fedsim.config import Config, ConfigError, load_config
from fedsim.yamlio import load_yaml
from fedsim.engine.cluster import ray_session
from fedsim.results import ROUNDS, RunDirectory, safe_name, strategy_label
from fedsim.simulation import Simulation
from fedsim.tasks.registry import task_spec

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
            rows = RunDirectory(run_dir).read(config.task_spec().compare_table)
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


def _rounds_done(run_dir: Path, config: Config) -> int:
    """Rounds an earlier invocation finished in `run_dir` (an interrupted run is resumed)."""
    run = RunDirectory(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return 0
    if run.config() != config:
        raise ConfigError(f"{run_dir}: holds a run of a different config; choose another --out")
    return run.read(ROUNDS).num_rows if run.table_path(ROUNDS).is_dir() else 0


def summary_table(rows: pa.Table, task: str = "classification") -> str:
    """Markdown: final-round metrics per variant as mean ± sample std over seeds (each seed's
    value first averaged over its rows, i.e. over hospitals for scheduling)."""
    columns = task_spec(task).compare_columns
    records = rows.to_pylist()
    last = max(row["round"] for row in records)
    final = [row for row in records if row["round"] == last]
    labels = list(dict.fromkeys(row["strategy"] for row in final))
    lines = [
        "| strategy | seeds | " + " | ".join(title for _, title in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for label in labels:
        mine = [row for row in final if row["strategy"] == label]
        seeds = list(dict.fromkeys(row["seed"] for row in mine))
        per_seed = {column: [_mean([row[column] for row in mine if row["seed"] == s]) for s in seeds] for column, _ in columns}
        cells = [_mean_std(per_seed[column]) for column, _ in columns]
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite(values: list[float]) -> np.ndarray:
    return np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)


def _mean(values: list[float]) -> float:
    finite = _finite(values)
    return float(finite.mean()) if finite.size else float("nan")


def _mean_std(values: list[float]) -> str:
    finite = _finite(values)
    if finite.size == 0:
        return "-"
    spread = finite.std(ddof=1) if finite.size > 1 else 0.0
    return f"{finite.mean():.3f} ± {spread:.3f}"
