"""Strategies x seeds on one config: run them, collect their final rounds, tabulate mean ± std."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fedsim.config import Config, ConfigError, load_config
from fedsim.engine.cluster import ray_session
from fedsim.results import ROUNDS, RunDirectory
from fedsim.simulation import Simulation

#: (rounds.parquet column, table heading)
FINAL_METRICS = [
    ("global_accuracy", "accuracy"),
    ("global_balanced_accuracy", "balanced acc."),
    ("global_macro_auc", "macro AUC"),
    ("hospital_accuracy_worst10", "worst-10% hospital acc."),
]


def parse_strategy(text: str) -> dict[str, Any]:
    """A strategy given on the command line: a name ("fedprox") or a YAML mapping ("{name: fedprox, mu: 0.1}")."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" in value:
        return value
    raise ConfigError(f"--strategies {text}: expected a strategy name or a mapping with a name")


def strategy_label(spec: dict[str, Any]) -> str:
    """fedprox, or fedprox(mu=0.1) when parameters are given."""
    params = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({params})" if params else str(spec["name"])


def plan_runs(config_path: str | None, overrides: Sequence[str], strategies: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int, Config]]:
    """Validate every (strategy, seed) config before anything runs."""
    runs = []
    for text in strategies:
        spec = parse_strategy(text)
        for seed in seeds:
            config = load_config(config_path, [*overrides, f"seed={seed}", f"strategy={yaml.safe_dump(spec, default_flow_style=True).strip()}"])
            runs.append((strategy_label(spec), seed, config))
    return runs


def run_all(runs: list[tuple[str, int, Config]], out: Path, quiet: bool = True) -> pa.Table:
    """Run each planned simulation under one Ray session (finished runs in `out` are reused)
    and return all their rounds as one table with `strategy` and `seed` columns."""
    tables = []
    largest = max(runs, key=lambda run: run[2].num_workers())[2]
    with ray_session(largest.engine, largest.num_workers()):
        for label, seed, config in runs:
            run_dir = out / label / f"seed-{seed}"
            if not _is_complete(run_dir, config):
                if not quiet:
                    print(f"running {label} seed {seed} -> {run_dir}", flush=True)
                Simulation(config, run_dir, quiet=True).run()
            rounds = RunDirectory(run_dir).read(ROUNDS)
            tables.append(
                rounds.append_column("strategy", pa.array([label] * rounds.num_rows))
                .append_column("seed", pa.array([seed] * rounds.num_rows, pa.int64()))
            )
    combined = pa.concat_tables(tables, promote_options="default")
    pq.write_table(combined, out / "comparison.parquet")
    return combined


def _is_complete(run_dir: Path, config: Config) -> bool:
    run = RunDirectory(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return False
    if run.config() != config:
        raise ConfigError(f"{run_dir}: holds a run of a different config; choose another --out")
    return run.read(ROUNDS).num_rows == config.rounds


def summary_table(rounds: pa.Table) -> str:
    """Markdown: final-round metrics per strategy as mean ± sample std over seeds."""
    rows = rounds.to_pylist()
    last = max(row["round"] for row in rows)
    final = [row for row in rows if row["round"] == last]
    labels = list(dict.fromkeys(row["strategy"] for row in final))
    lines = [
        "| strategy | seeds | " + " | ".join(title for _, title in FINAL_METRICS) + " |",
        "|---|---:|" + "---:|" * len(FINAL_METRICS),
    ]
    for label in labels:
        mine = [row for row in final if row["strategy"] == label]
        cells = [_mean_std([row[column] for row in mine]) for column, _ in FINAL_METRICS]
        lines.append(f"| {label} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    finite = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return "-"
    spread = finite.std(ddof=1) if finite.size > 1 else 0.0
    return f"{finite.mean():.3f} ± {spread:.3f}"
