"""The sweep plots, as matplotlib figures: `fedsim plot SWEEP_DIR` saves them as PNG and
notebooks/analysis.ipynb shows the same figures inline.

Spread bands and error bars are the std over seeds only: hospital counts get their own panels or
lines, never averaged in. A grid axis the sweep did not vary shows as the single value "base".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # figures without pyplot: no GUI backend, nothing to close
from matplotlib.ticker import NullLocator

from fedsim.errors import ConfigError
from fedsim.plots.style import line_style, mean_std_band, round_axis
from fedsim.sweep import RESULTS, read_results
from fedsim.tasks.registry import task_spec

GB = 1024**3


def load(sweep_dir: str | Path) -> pd.DataFrame:
    """A sweep's results as a DataFrame, with every grid axis present (unswept ones as "base")."""
    if not (Path(sweep_dir) / RESULTS).is_dir():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (expected {RESULTS}/ inside)")
    frame = read_results(sweep_dir).to_pandas()
    if frame.empty:
        raise ConfigError(f"{Path(sweep_dir) / RESULTS}: no finished trial yet")
    for axis in ("hospitals", "strategy"):
        if axis not in frame:
            frame[axis] = "base"
    return frame


def accuracy_vs_round(frame: pd.DataFrame) -> Figure:
    """Global accuracy per round, one line per strategy, one panel per heterogeneity setting and
    hospital count; band: std over seeds."""
    metric = _global_metric(frame)
    frame = frame.assign(setting=_heterogeneity_label(frame)).dropna(subset=[metric])
    panels = sorted({(setting, hospitals) for setting, hospitals in zip(frame["setting"], frame["hospitals"])},
                    key=lambda panel: (_setting_order(panel[0]), str(panel[1])))
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    strategies = sorted(frame["strategy"].astype(str).unique())
    for ax, (setting, hospitals) in zip(axes.flat, panels):
        panel = frame[(frame["setting"] == setting) & (frame["hospitals"] == hospitals)]
        for strategy, group in panel.groupby("strategy"):
            curve = group.groupby("round")[metric].agg(["mean", "std"])
            mean_std_band(ax, curve, strategies.index(str(strategy)), str(strategy))
        ax.set(title=f"{setting}, {hospitals} hospitals" if hospitals != "base" else setting)
        round_axis(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel(_label(frame, metric))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(title="strategy", fontsize=8)
    figure.suptitle(f"Global test accuracy per round (mean ± std over {_seeds(frame)})")
    return figure


def worst_decile_vs_heterogeneity(frame: pd.DataFrame) -> Figure:
    """The fairness floor after the last evaluated round against Dirichlet alpha and shard eta:
    one line per strategy and hospital count (colour: strategy, marker: hospital count), error
    bars the std over seeds, points dodged sideways so equal values stay visible."""
    metric = _worst_decile_metric(frame)
    final = _last_evaluated(frame, metric)
    levels = [axis for axis in ("alpha", "eta") if axis in final and final[axis].notna().any()]
    figure = Figure(figsize=(5.6 * max(len(levels), 1), 4.4), layout="constrained")
    axes = figure.subplots(1, max(len(levels), 1), squeeze=False)
    titles = {"alpha": "Dirichlet label skew\n(smaller alpha = more skew)", "eta": "FedMRL shards\n(larger eta = more skew)"}
    strategies = sorted(final["strategy"].astype(str).unique())
    counts = sorted(final["hospitals"].unique(), key=str)
    lines = [(s, h) for s in strategies for h in counts]
    for ax, level in zip(axes.flat, levels or [None]):
        rows = final[final[level].notna()] if level else final
        for index, (strategy, hospitals) in enumerate(lines):
            group = rows[(rows["strategy"].astype(str) == strategy) & (rows["hospitals"] == hospitals)]
            if group.empty:
                continue
            style = {**line_style(strategies.index(strategy)), "marker": line_style(counts.index(hospitals))["marker"]}
            label = strategy if len(counts) == 1 else f"{strategy}, {hospitals} hospitals"
            if level:
                points = group.groupby(level)[metric].agg(["mean", "std"]).sort_index()
                dodge = 1 + 0.04 * (index - (len(lines) - 1) / 2)  # multiplicative: alpha's axis is logarithmic
                x = points.index * dodge if level == "alpha" else points.index + 0.01 * (index - (len(lines) - 1) / 2)
                ax.errorbar(x, points["mean"], yerr=points["std"].fillna(0), capsize=3, label=label, **style)
            else:
                ax.bar(label, group[metric].mean(), yerr=group[metric].std(), color=style["color"], capsize=3)
        if level == "alpha":
            ax.set_xscale("log")
        ax.set(title=titles.get(level, "heterogeneity not swept"), xlabel=level or "strategy", ylabel=_label(frame, metric))
        ax.grid(alpha=0.3)
        if level:
            ax.legend(title="strategy", fontsize=8)
    figure.suptitle(f"Worst-decile hospital accuracy after the last round\n(mean ± std over {_seeds(frame)})")
    return figure


def _seeds(frame: pd.DataFrame) -> str:
    count = frame["seed"].nunique() if "seed" in frame else 1
    return f"{count} seeds" if count > 1 else "1 seed: no spread"


def cost_vs_hospitals(frame: pd.DataFrame) -> Figure:
    """Median seconds per round, and peak memory, against the number of registered hospitals."""
    per_trial = frame.groupby(_trial_keys(frame), dropna=False).agg(
        seconds=("seconds", "median"),
        rss=("driver_peak_rss", "max"),
        workers=("workers_peak_rss", "max"),
        store=("object_store_bytes", "max"),
    ).reset_index()
    per_trial["rss"] = (per_trial["rss"] + per_trial["workers"]) / GB
    per_trial["store"] = per_trial["store"] / GB
    numeric = pd.api.types.is_numeric_dtype(per_trial["hospitals"])
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    left, right = figure.subplots(1, 2)
    for index, (strategy, group) in enumerate(per_trial.groupby("strategy")):
        points = group.groupby("hospitals")[["seconds", "rss", "store"]].mean().sort_index()
        x = points.index if numeric else points.index.astype(str)
        style = line_style(index)
        left.plot(x, points["seconds"], label=str(strategy), **style)
        right.plot(x, points["rss"], label=f"{strategy}: RSS driver + workers", **style)
        right.plot(x, points["store"], label=f"{strategy}: object store", **{**style, "marker": "x", "linestyle": ":"})
    for ax in (left, right):
        if numeric:  # log axis, ticked at the swept counts
            counts = sorted(per_trial["hospitals"].unique())
            ax.set_xscale("log")
            ax.set_xticks(counts, [str(count) for count in counts])
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("hospitals registered")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set(title="Median seconds per round", ylabel="seconds")
    right.set(title="Peak memory", ylabel="GB")
    right.set_ylim(bottom=0)
    figure.suptitle("Cost against federation size (mean over seeds and heterogeneity settings)")
    return figure


def figures(sweep_dir: Path) -> list[tuple[str, Figure]]:
    frame = load(sweep_dir)
    return [(plot.__name__, plot(frame)) for plot in (accuracy_vs_round, worst_decile_vs_heterogeneity, cost_vs_hospitals)]


def _label(frame: pd.DataFrame, metric: str) -> str:
    """The trials' task's label for `metric` (fedsim.tasks.registry)."""
    task = frame["task"].iloc[0] if "task" in frame else "classification"
    return task_spec(task).label(metric)


def _global_metric(frame: pd.DataFrame) -> str:
    names = [name for name in frame.columns if name.startswith("global_")]
    return "global_accuracy" if "global_accuracy" in names else names[0]


def _worst_decile_metric(frame: pd.DataFrame) -> str:
    return next(name for name in frame.columns if name.startswith("hospital_") and name.endswith("_worst10"))


def _trial_keys(frame: pd.DataFrame) -> list[str]:
    return [axis for axis in ("hospitals", "alpha", "eta", "strategy", "seed") if axis in frame]


def _last_evaluated(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each trial's last row with a value of `metric`."""
    scored = frame.dropna(subset=[metric]).sort_values("round")
    return scored.groupby(_trial_keys(frame), dropna=False).tail(1)


def _heterogeneity_label(frame: pd.DataFrame) -> pd.Series:
    labels = pd.Series("base", index=frame.index)
    for axis in ("alpha", "eta"):
        if axis in frame:
            labels = labels.where(frame[axis].isna(), axis + "=" + frame[axis].map("{:g}".format))
    return labels


def _setting_order(label: str) -> tuple[str, float]:
    name, _, value = label.partition("=")
    return name, float(value) if value else 0.0
