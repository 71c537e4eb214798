"""The plots of an experiments/compare.py output: every variant's curve per round, mean ± std
over seeds, one figure per compared metric."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from fedsim.plots.style import mean_std_band, round_axis
from fedsim.results import RunDirectory, safe_name


def figures(compare_dir: Path) -> list[tuple[str, Figure]]:
    rows = pd.read_parquet(compare_dir / "comparison.parquet")
    spec = _spec(compare_dir, rows)
    return [(f"compare_{safe_name(column)}", curves(rows, column, title, spec.label(column)))
            for column, title in spec.compare_columns if column in rows and rows[column].notna().any()]


def _spec(compare_dir: Path, rows: pd.DataFrame):
    """The compared task's spec, from any of its run directories."""
    first = next(compare_dir.glob("*/seed-*/config.yaml"))
    return RunDirectory(first.parent).config().task_spec()


def curves(rows: pd.DataFrame, column: str, title: str, label: str) -> Figure:
    """One line per variant: each seed's value per round (averaged over its rows, i.e. over
    hospitals for a hospital_eval comparison), then mean ± std over seeds."""
    per_seed = rows.groupby(["strategy", "seed", "round"], sort=False)[column].mean().reset_index()
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.subplots()
    seeds = per_seed.groupby("strategy", sort=False)["seed"].nunique()
    without = []  # e.g. local-only on a global model's score
    for index, (variant, group) in enumerate(per_seed.groupby("strategy", sort=False)):  # index: the same colour in every figure
        curve = group.dropna(subset=[column]).groupby("round")[column].agg(["mean", "std"])
        if curve.empty:
            without.append(variant)
            continue
        mean_std_band(ax, curve, index, f"{variant} ({seeds[variant]} seeds)")
    ax.set(title=f"{title} per round (mean ± std over seeds)", ylabel=label)
    round_axis(ax)
    ax.legend(fontsize=8, title="variant")
    if without:
        ax.annotate(f"no values, not shown: {', '.join(without)}", (0.01, 0.01), xycoords="axes fraction", fontsize=8, color="0.4")
    return figure
