"""The sweep plots, as matplotlib figures: `fedsim plot SWEEP_DIR` saves them as PNG and
notebooks/analysis.ipynb shows the same figures inline.

Every plot averages over the axes it does not show (seeds always); a grid axis the sweep did not
vary shows as the single value "base".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # figures without pyplot: no GUI backend, nothing to close
from matplotlib.ticker import MaxNLocator, NullLocator

from fedsim.errors import ConfigError
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
    """Global accuracy per round, one line per strategy, one panel per heterogeneity setting."""
    metric = _global_metric(frame)
    frame = frame.assign(setting=_heterogeneity_label(frame)).dropna(subset=[metric])
    settings = sorted(frame["setting"].unique(), key=_setting_order)
    columns = min(len(settings), 4)
    rows = -(-len(settings) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows))
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    for ax, setting in zip(axes.flat, settings):
        for strategy, group in frame[frame["setting"] == setting].groupby("strategy"):
            curve = group.groupby("round")[metric].agg(["mean", "min", "max"])
            (line,) = ax.plot(curve.index, curve["mean"], marker="o", markersize=3, label=str(strategy))
            ax.fill_between(curve.index, curve["min"], curve["max"], color=line.get_color(), alpha=0.15)
        ax.set(title=setting, xlabel="round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(_label(frame, metric))
    for ax in list(axes.flat)[len(settings):]:
        ax.set_visible(False)
    axes.flat[0].legend(title="strategy", fontsize=8)
    figure.suptitle("Global test accuracy per round (mean over seeds and hospital counts; band: min-max)")
    figure.tight_layout()
    return figure


def worst_decile_vs_heterogeneity(frame: pd.DataFrame) -> Figure:
    """The fairness floor after the last evaluated round against Dirichlet alpha and shard eta."""
    metric = _worst_decile_metric(frame)
    final = _last_evaluated(frame, metric)
    levels = [axis for axis in ("alpha", "eta") if axis in final and final[axis].notna().any()]
    figure = Figure(figsize=(5.2 * max(len(levels), 1), 3.8))
    axes = figure.subplots(1, max(len(levels), 1), squeeze=False)
    titles = {"alpha": "Dirichlet label skew (smaller alpha = more skew)", "eta": "FedMRL shards (larger eta = more skew)"}
    for ax, level in zip(axes.flat, levels or [None]):
        rows = final[final[level].notna()] if level else final
        for strategy, group in rows.groupby("strategy"):
            if level:
                points = group.groupby(level)[metric].agg(["mean", "std"]).sort_index()
                ax.errorbar(points.index, points["mean"], yerr=points["std"].fillna(0), marker="o", capsize=3,
                            label=str(strategy))
            else:
                ax.bar(str(strategy), group[metric].mean(), label=str(strategy))
        if level == "alpha":
            ax.set_xscale("log")
        ax.set(title=titles.get(level, "heterogeneity not swept"), xlabel=level or "strategy",
               ylabel=_label(frame, metric))
        ax.grid(alpha=0.3)
        ax.legend(title="strategy", fontsize=8)
    figure.suptitle("Worst-decile hospital accuracy after the last round (mean and std over seeds)")
    figure.tight_layout()
    return figure


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
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    for index, (strategy, group) in enumerate(per_trial.groupby("strategy")):
        points = group.groupby("hospitals")[["seconds", "rss", "store"]].mean().sort_index()
        x = points.index if numeric else points.index.astype(str)
        color = f"C{index}"
        left.plot(x, points["seconds"], marker="o", color=color, label=str(strategy))
        right.plot(x, points["rss"], marker="o", color=color, label=f"{strategy}: RSS driver + workers")
        right.plot(x, points["store"], marker="s", linestyle="--", color=color, label=f"{strategy}: object store")
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
    figure.suptitle("Cost against federation size (mean over the other axes)")
    figure.tight_layout()
    return figure


def save_plots(sweep_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the three plots as PNG into `out` (default SWEEP_DIR/plots); returns their paths."""
    frame = load(sweep_dir)
    folder = Path(out) if out else Path(sweep_dir) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in (accuracy_vs_round, worst_decile_vs_heterogeneity, cost_vs_hospitals):
        figure = plot(frame)
        path = folder / f"{plot.__name__}.png"
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths


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
