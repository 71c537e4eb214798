"""A results table for a run directory, complete or interrupted."""

from __future__ import annotations

import math
from pathlib import Path

from fedsim.results import ROUNDS, RunDirectory

def _columns(names: list[str]) -> list[tuple[str, str, str]]:
    """(column, heading, format) for the table: global metrics, hospital spread, timing."""
    chosen = [("round", "round", "{:d}")]
    chosen += [(n, n.removeprefix("global_"), "{:.3f}") for n in names if n.startswith("global_")]
    chosen += [
        (n, n.removeprefix("hospital_").replace("_", " "), "{:.3f}")
        for n in names
        if n.startswith("hospital_") and n.endswith(("_mean", "_worst10"))
    ]
    return chosen + [("seconds", "seconds", "{:.2f}")]


def rounds_to_show(total: int, limit: int = 12) -> list[int]:
    """Indices of evenly spaced rows (always the first and last) for a compact table."""
    if total <= limit:
        return list(range(total))
    return sorted({round(i * (total - 1) / (limit - 1)) for i in range(limit)})


def _cell(value: object, template: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return template.format(value)


def render_report(path: str | Path, damaged: list[Path] | None = None) -> str:
    """A markdown table of the run's rounds, with a header saying what ran and how far it got.
    Damaged (unreadable) parts are skipped, named in the report and appended to `damaged`."""
    run = RunDirectory(path)
    config = run.config()
    started = run.table_path(ROUNDS).is_dir()
    damaged = [] if damaged is None else damaged
    table = run.read(ROUNDS, damaged) if started else None
    columns = _columns(table.column_names if table is not None else [])
    rounds = sorted(table.to_pylist(), key=lambda row: row["round"]) if table is not None else []
    done = len(rounds)
    status = "complete" if done == config.rounds else f"incomplete: {done} of {config.rounds} rounds finished"
    lines = [
        f"run {run.path} ({status})",
        f"strategy {config.strategy.name}, {config.task_spec().describe(config)}, {config.clients_per_round()} per round, seed {config.seed}",
        "",
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "|".join("---:" for _ in columns) + "|",
    ]
    for index in rounds_to_show(done):
        row = rounds[index]
        lines.append("| " + " | ".join(_cell(row[key], template) for key, _, template in columns) + " |")
    lines += [f"damaged part skipped (not readable): {part}" for part in damaged]
    if rounds:
        mean_seconds = sum(row["seconds"] for row in rounds) / done
        lines += ["", f"{done} rounds, {mean_seconds:.2f} s per round on average"]
    return "\n".join(lines)
