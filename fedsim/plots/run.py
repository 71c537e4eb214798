"""The plots of one run directory: global metrics per round, the spread of the hospitals' own
scores, each hospital's labels, FedMRL's mu and SOM weights, and a scheduling run's waits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedsim.plots.style import line_style, round_axis
from fedsim.results import CLIENTS, HOSPITAL_EVAL, PARTITION, ROUNDS, RunDirectory
from fedsim.tasks.registry import TaskSpec


def figures(run_dir: Path) -> list[tuple[str, Figure]]:
    run = RunDirectory(run_dir)
    spec = run.config().task_spec()
    tables = {name: _frame(run, name) for name in (ROUNDS, CLIENTS, HOSPITAL_EVAL, PARTITION)}
    if tables[ROUNDS].empty:
        from fedsim.errors import ConfigError

        raise ConfigError(f"{run_dir}: no finished round yet")
    made = [("global_metrics", global_metrics(tables[ROUNDS], spec))]
    if not tables[HOSPITAL_EVAL].empty:
        made.append(("hospital_spread", hospital_spread(tables[HOSPITAL_EVAL], tables[ROUNDS], spec)))
    if any(name.startswith("class_") for name in tables[PARTITION].columns):
        made.append(("label_histograms", label_histograms(tables[PARTITION])))
    if {"mu", "som_weight"} & set(tables[CLIENTS].columns):
        made.append(("fedmrl_mu_and_som", fedmrl(tables[CLIENTS])))
    if "global_wait_mean_acuity_1" in tables[ROUNDS].columns:
        made.append(("scheduling_waits", scheduling(tables[ROUNDS])))
    return made


def _frame(run: RunDirectory, name: str) -> pd.DataFrame:
    return run.read(name).to_pandas() if run.table_path(name).is_dir() else pd.DataFrame()


def _distinct_metrics(rounds: pd.DataFrame) -> list[str]:
    """Global columns with values, each once (balanced accuracy that equals accuracy is left out)."""
    kept: list[str] = []
    for name in (n for n in rounds.columns if n.startswith("global_")):
        values = rounds[name]
        if values.notna().any() and not any(np.allclose(values, rounds[k], equal_nan=True) for k in kept):
            kept.append(name)
    return kept


def global_metrics(rounds: pd.DataFrame, spec: TaskSpec) -> Figure:
    """One panel per global metric (the global model on the official test split) per round."""
    rounds = rounds.sort_values("round")
    metrics = _distinct_metrics(rounds)
    columns = min(len(metrics), 4)
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(3.6 * columns, 2.9 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, (ax, name) in enumerate(zip(axes.flat, metrics)):
        scored = rounds.dropna(subset=[name])
        ax.plot(scored["round"], scored[name], **line_style(index))
        ax.set(title=spec.label(name), ylabel=name.removeprefix("global_"))
        round_axis(ax)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    figure.suptitle("Global model per round (official test split; identical or empty metrics left out)")
    return figure


def hospital_spread(evaluations: pd.DataFrame, rounds: pd.DataFrame, spec: TaskSpec) -> Figure:
    """The global model on each hospital's own split: median, middle 80% band, worst-10% mean."""
    metric = next(n for n in evaluations.columns if n not in ("round", "hospital"))
    worst = next((n for n in rounds.columns if n.startswith("hospital_") and n.endswith("_worst10")), None)
    metric = worst.removeprefix("hospital_").removesuffix("_worst10") if worst else metric
    by_round = evaluations.groupby("round")[metric]
    stats = pd.DataFrame({"median": by_round.median(), "low": by_round.quantile(0.1), "high": by_round.quantile(0.9),
                          "min": by_round.min(), "max": by_round.max()})
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    ax.fill_between(stats.index, stats["low"], stats["high"], color="C0", alpha=0.2, label="10th-90th percentile")
    tail = (stats["min"], stats["low"]) if spec.higher_is_better else (stats["high"], stats["max"])
    ax.fill_between(stats.index, *tail, color="C3", alpha=0.25, label="worst 10% of hospitals (range)")
    ax.plot(stats.index, stats["median"], color="C0", marker="o", markersize=4, label="median hospital")
    if worst:
        scored = rounds.dropna(subset=[worst]).sort_values("round")
        ax.plot(scored["round"], scored[worst], color="C3", marker="v", markersize=4, linestyle="--", label="worst-10% mean")
    ax.set(title=f"{spec.label(metric)} of the global model at each hospital ({evaluations['hospital'].nunique()} hospitals)",
           ylabel=metric.replace("_", " "))
    round_axis(ax)
    ax.legend(fontsize=8)
    return figure


def label_histograms(partition: pd.DataFrame) -> Figure:
    """Each hospital's training labels (partition.parquet), stacked by class: the non-IID split."""
    partition = partition.sort_values("hospital")
    classes = [n for n in partition.columns if n.startswith("class_")]
    figure = Figure(figsize=(min(3 + 0.25 * len(partition), 16), 4), layout="constrained")
    ax = figure.subplots()
    bottom = np.zeros(len(partition))
    for index, name in enumerate(classes):
        ax.bar(partition["hospital"].astype(str), partition[name], bottom=bottom, color=f"C{index % 10}",
               label=name.replace("_", " "), width=0.85)
        bottom += partition[name].to_numpy()
    ax.set(title="Training labels per hospital", xlabel="hospital", ylabel="training samples")
    if len(partition) > 40:
        ax.set_xticks(ax.get_xticks()[:: max(1, len(partition) // 20)])
    ax.legend(title="label", fontsize=8, ncols=min(len(classes), 6))
    return figure


def fedmrl(clients: pd.DataFrame) -> Figure:
    """FedMRL's per-hospital choices over rounds: the QMIX mu and the SOM aggregation weight."""
    shown = [name for name in ("mu", "som_weight") if name in clients.columns and clients[name].notna().any()]
    figure = Figure(figsize=(6 * len(shown), 4), layout="constrained")
    axes = figure.subplots(1, len(shown), squeeze=False)[0]
    titles = {"mu": "proximal mu chosen per hospital (QMIX)", "som_weight": "SOM aggregation weight per hospital"}
    for ax, name in zip(axes, shown):
        grid = clients.pivot_table(index="hospital", columns="round", values=name)
        image = ax.imshow(grid.to_numpy(), aspect="auto", interpolation="nearest", cmap="viridis",
                          extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5, grid.index.max() + 0.5, grid.index.min() - 0.5))
        figure.colorbar(image, ax=ax, label=name)
        ax.set(title=titles[name], xlabel="round", ylabel="hospital")
    figure.suptitle("FedMRL per hospital and round (blank: not sampled)")
    return figure


def scheduling(rounds: pd.DataFrame) -> Figure:
    """The global policy's mean wait per acuity and its bed utilisation per round."""
    rounds = rounds.sort_values("round")
    acuities = sorted(n for n in rounds.columns if n.startswith("global_wait_mean_acuity_"))
    figure = Figure(figsize=(11, 4), layout="constrained")
    waits, use = figure.subplots(1, 2)
    for index, name in enumerate(acuities):
        scored = rounds.dropna(subset=[name])
        waits.plot(scored["round"], scored[name], label=f"acuity {name.rsplit('_', 1)[1]}", **line_style(index))
    waits.set(title="Mean wait per acuity (1 = most urgent)", ylabel="hours")
    waits.legend(fontsize=8)
    scored = rounds.dropna(subset=["global_utilisation"])
    use.plot(scored["round"], scored["global_utilisation"], **line_style(0))
    use.set(title="Utilisation (busy / nominal beds)", ylabel="utilisation")
    for ax in (waits, use):
        round_axis(ax)
    figure.suptitle("Scheduling: the global policy on the joint hospital network")
    return figure
