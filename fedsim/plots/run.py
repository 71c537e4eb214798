"""The plots of one run directory: global metrics per round, the spread of the hospitals' own
scores, each hospital's labels, FedMRL's mu and SOM weights, and a scheduling run's waits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedsim.plots.style import line_style, round_axis
from fedsim.results import CLIENTS, HOSPITAL_EVAL, PARTITION, ROUNDS, RunDirectory, split_level
from fedsim.tasks.registry import TaskSpec


def figures(run_dir: Path) -> list[tuple[str, Figure]]:
    run = RunDirectory(run_dir)
    spec = run.config().task_spec()
    tables = {name: _frame(run, name) for name in (ROUNDS, CLIENTS, HOSPITAL_EVAL, PARTITION)}
    if tables[ROUNDS].empty:
        from fedsim.errors import ConfigError

        raise ConfigError(f"{run_dir}: no finished round yet")
    made = [("global_metrics", global_metrics(tables[ROUNDS]))]
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


def _distinct_panels(rounds: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """metric_panels of the global columns with values, a metric of its own left out where it
    equals an earlier one in every round (balanced accuracy on balanced data); a family keeps
    all its members, since a class's score may coincide with another metric by chance."""
    names = [n for n in rounds.columns if n.startswith("global_") and rounds[n].notna().any()]
    kept: list[tuple[str, str, list[str]]] = []
    for panel in metric_panels(names):
        _, legend, members = panel
        if not legend and any(not other_legend and np.allclose(rounds[members[0]], rounds[others[0]], equal_nan=True)
                              for _, other_legend, others in kept):
            continue
        kept.append(panel)
    return kept


def metric_panels(metrics: list[str]) -> list[tuple[str, str, list[str]]]:
    """(title, legend title, test-split columns) per panel: a family of per-class or per-level
    columns (global_sensitivity_0..K, global_wait_mean_acuity_1..5) shares one panel, a line
    each; every other metric has its own. Validation columns are drawn in their test twin's panel."""
    families: dict[str, list[str]] = {}
    for name in (n for n in metrics if not n.startswith("global_val_")):
        part = split_level(name)
        family = part[0] if part and not part[2] else name
        families.setdefault(family.removeprefix("global_"), []).append(name)
    panels = []
    for base, members in families.items():
        if len(members) == 1:
            panels.append((members[0].removeprefix("global_").replace("_", " "), "", members))
            continue
        words = base.split("_")
        title, legend = (words[:-1], words[-1]) if len(words) > 1 else (words, "class")
        panels.append((f"{' '.join(title)} per {legend}", legend, members))
    return panels


def global_metrics(rounds: pd.DataFrame) -> Figure:
    """The global model's scores per round: one panel per metric, the official test split solid
    and the validation split dashed; per-class scores one panel per score (test split only)."""
    rounds = rounds.sort_values("round")
    panels = _distinct_panels(rounds)
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.6 * columns, 2.9 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, (title, legend, members) in zip(axes.flat, panels):
        for index, name in enumerate(members):
            scored = rounds.dropna(subset=[name])
            ax.plot(scored["round"], scored[name], label=str(split_level(name)[1]) if legend else "test", **line_style(index))
        validation = "global_val_" + members[0].removeprefix("global_")
        drawn = not legend and validation in rounds.columns and rounds[validation].notna().any()
        if drawn:  # even where it equals the test line: the markers keep both visible
            scored = rounds.dropna(subset=[validation])
            ax.plot(scored["round"], scored[validation], label="validation", **{**line_style(1), "linestyle": "--"})
        if legend or drawn:
            ax.legend(title=legend or None, fontsize=7, title_fontsize=7, ncols=2 if len(members) > 3 else 1)
        ax.set(title=title)
        round_axis(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    per_class_validation = any(n.startswith("global_val_") and split_level(n) for n in rounds.columns)
    left_out = "identical or empty metrics left out" + ("; per-class validation scores in rounds.parquet" if per_class_validation else "")
    figure.suptitle(f"Global model per round ({left_out})")
    return figure


def hospital_spread(evaluations: pd.DataFrame, rounds: pd.DataFrame, spec: TaskSpec) -> Figure:
    """The model each hospital is scored with (hospital_eval.parquet: the global one, or its own
    where the strategy keeps one) on the hospital's own split: median, middle 80% band, worst-10% mean."""
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
    ax.set(title=f"{spec.label(metric)} at each hospital ({evaluations['hospital'].nunique()} hospitals)",
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
