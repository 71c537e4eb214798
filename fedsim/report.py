"""A results table for a run directory, complete or interrupted."""

from __future__ import annotations

import math
from pathlib import Path

from fedsim.results import ROUNDS, RunDirectory

_COLUMNS = [
    ("round", "round", "{:d}"),
    ("global_accuracy", "accuracy", "{:.3f}"),
    ("global_balanced_accuracy", "bal. acc", "{:.3f}"),
    ("global_macro_auc", "macro AUC", "{:.3f}"),
    ("hospital_accuracy_mean", "hosp. mean", "{:.3f}"),
    ("hospital_accuracy_worst10", "hosp. worst 10%", "{:.3f}"),
    ("seconds", "seconds", "{:.2f}"),
]


def rounds_to_show(total: int, limit: int = 12) -> list[int]:
    """Indices of evenly spaced rows (always the first and last) for a compact table."""
    if total <= limit:
        return list(range(total))
    return sorted({round(i * (total - 1) / (limit - 1)) for i in range(limit)})


def _cell(value: object, template: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return template.format(value)


def render_report(path: str | Path) -> str:
    """A markdown table of the run's rounds, with a header saying what ran and how far it got."""
    run = RunDirectory(path)
    config = run.config()
    rounds = sorted(run.read(ROUNDS).to_pylist(), key=lambda row: row["round"])
    done = len(rounds)
    status = "complete" if done == config.rounds else f"incomplete: {done} of {config.rounds} rounds finished"
    source = config.data.source
    lines = [
        f"run {run.path} ({status})",
        f"strategy {config.strategy.name}, data {source.kind}, {config.data.hospitals} hospitals "
        f"({config.data.partition.scheme} partition), {config.clients_per_round()} per round, seed {config.seed}",
        "",
        "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |",
        "|" + "|".join("---:" for _ in _COLUMNS) + "|",
    ]
    for index in rounds_to_show(done):
        row = rounds[index]
        lines.append("| " + " | ".join(_cell(row[key], template) for key, _, template in _COLUMNS) + " |")
    if rounds:
        mean_seconds = sum(row["seconds"] for row in rounds) / done
        lines += ["", f"{done} rounds, {mean_seconds:.2f} s per round on average"]
    return "\n".join(lines)
