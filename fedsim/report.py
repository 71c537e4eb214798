"""A results table for a run directory, complete or interrupted.

The table fits a terminal (`WIDTH` characters): it shows every round up to `ROW_LIMIT` rounds
(else evenly spaced ones, always the first, the best and the last, and says how many), marks the
best round, drops columns identical to one already shown (balanced accuracy on balanced data) or
without values, and names every column it left out, so nothing is omitted silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fedsim.results import ROUNDS, RunDirectory, split_level
from fedsim.target import Target, describe, time_to_target
from fedsim.tasks.registry import TaskSpec

WIDTH = 100  # characters a table row may take
ROW_LIMIT = 20  # rounds shown in full before the table is thinned
LAST = 5  # the "last rounds" mean beside the final round


@dataclass(frozen=True)
class Column:
    key: str
    heading: str
    template: str


def rounds_to_show(total: int, limit: int = ROW_LIMIT, keep: tuple[int, ...] = ()) -> list[int]:
    """Row indices for a table of `total` rounds: all up to `limit`, else evenly spaced ones
    (always the first and last) plus the indices in `keep` (the best round)."""
    if total <= limit:
        return list(range(total))
    spaced = {round(i * (total - 1) / (limit - 1)) for i in range(limit)}
    return sorted(spaced | {index for index in keep if 0 <= index < total})


def _candidates(names: list[str], spec: TaskSpec) -> list[Column]:
    """Metric columns in the order a reader wants them: the task's report columns, the other
    global metrics, the other hospital means, then the hospital spread."""
    present = set(names)
    first = [Column(key, heading, "{:.3f}") for key, heading in spec.report_columns if key in present]
    listed = {column.key for column in first}
    rest = [Column(n, n.removeprefix("global_").replace("_", " "), "{:.3f}")
            for n in names if n.startswith("global_") and n not in listed]
    spread = _spread(names)
    summarised = {column.key for column in spread}
    means = [Column(n, "hosp. " + n.removeprefix("hospital_").removesuffix("_mean").replace("_", " "), "{:.3f}")
             for n in names if n.startswith("hospital_") and n.endswith("_mean") and n not in summarised]
    return first + rest + means + spread


def _spread(names: list[str]) -> list[Column]:
    """The hospital spread, always shown: mean and worst-10% mean of the one metric rounds.parquet
    summarises so (fedsim.simulation.hospital_summary); its other scores' hospital means are
    ordinary columns."""
    summarised = [n.removesuffix("_worst10") for n in names if n.startswith("hospital_") and n.endswith("_worst10")]
    return [Column(f"{metric}_{statistic}", f"hosp. {statistic}", "{:.3f}")
            for metric in summarised for statistic in ("mean", "worst10") if f"{metric}_{statistic}" in names]


def _same(a: list[Any], b: list[Any]) -> bool:
    return all((_missing(x) and _missing(y)) or (not _missing(x) and not _missing(y) and abs(x - y) <= 1e-12)
               for x, y in zip(a, b))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def choose_columns(rows: list[dict[str, Any]], names: list[str], spec: TaskSpec) -> tuple[list[Column], list[str]]:
    """The columns that fit in WIDTH, and one note per column left out (identical to a shown
    one, without values, or no room)."""
    fixed = [Column("round", "round", "{}"), Column("seconds", "seconds", "{:.2f}")]
    chosen: list[Column] = []
    identical: dict[str, list[str]] = {}
    empty, no_room = [], []
    candidates = _candidates(names, spec)
    spread = _spread(names)
    width = 1 + sum(_width(column, rows) for column in fixed + spread)  # spread columns always shown
    for column in candidates:
        values = [row.get(column.key) for row in rows]
        if rows and all(_missing(v) for v in values):
            empty.append(column.heading)
            continue
        twin = next((c for c in chosen if _same(values, [row.get(c.key) for row in rows])), None) if rows else None
        if twin is not None:
            identical.setdefault(twin.heading, []).append(column.heading)
            continue
        if column not in spread:
            if no_room or width + _width(column, rows) > WIDTH:  # in the order of preference: stop at the first misfit
                no_room.append(column.key)
                continue
            width += _width(column, rows)
        chosen.append(column)
    notes = [f"{', '.join(copies)}: identical to {original} in every round (not shown)" for original, copies in identical.items()]
    global_headings = {column.heading for column in candidates if column.key.startswith("global_")}
    if global_headings and global_headings <= set(empty):  # no global model (local-only), or none evaluated
        empty = ["every global_* column", *(heading for heading in empty if heading not in global_headings)]
    if empty:
        notes.append(f"{', '.join(empty)}: no values in this run (not shown)")
    if no_room:
        notes.append(f"more columns in rounds.parquet: {', '.join(_ranges(no_room))}")
    return [fixed[0], *chosen, fixed[1]], notes


def _ranges(names: list[str]) -> list[str]:
    """Column names with each run of consecutive levels written once: global_sensitivity_0 .. _3
    -> global_sensitivity_0..3, hospital_sensitivity_0_mean .. _3_mean -> hospital_sensitivity_0..3_mean."""
    written: list[str] = []
    run: list[tuple[str, int, str]] = []
    for name in [*names, ""]:
        part = split_level(name)
        if run and part and part[0] == run[-1][0] and part[2] == run[-1][2] and part[1] == run[-1][1] + 1:
            run.append(part)
            continue
        if run:
            base, first, statistic = run[0]
            written.append(f"{base}_{first}{statistic}" if len(run) == 1 else f"{base}_{first}..{run[-1][1]}{statistic}")
        run = [part] if part else []
        if not part and name:
            written.append(name)
    return written


def _width(column: Column, rows: list[dict[str, Any]]) -> int:
    """Characters the column takes in a markdown row ("| cell ")."""
    cells = [_cell(row.get(column.key), column.template) for row in rows[:50]]
    if column.key == "round" and rows:
        cells.append(f"{rows[-1]['round']} best")
    return max([len(column.heading), *map(len, cells)]) + 3


def _cell(value: object, template: str) -> str:
    if _missing(value):
        return "-"
    return template.format(value)


def best_round(rows: list[dict[str, Any]], spec: TaskSpec) -> int | None:
    """Index of the round with the best headline metric (the first of ties), None if never scored."""
    scored = [(row[spec.headline], index) for index, row in enumerate(rows) if not _missing(row.get(spec.headline))]
    if not scored:
        return None
    best = max(scored, key=lambda pair: (pair[0], -pair[1])) if spec.higher_is_better else min(scored, key=lambda pair: (pair[0], pair[1]))
    return best[1]


def render_report(path: str | Path, show_all: bool = False, damaged: list[Path] | None = None,
                  targets: Sequence[Target] = ()) -> str:
    """A markdown table of the run's rounds, with a header saying what ran and how far it got,
    and a footer with the best round, the last rounds' mean, the rounds and simulated time to
    each of `targets`, and what the table leaves out. Damaged (unreadable) parts are skipped,
    named in the report and appended to `damaged`."""
    run = RunDirectory(path)
    config = run.config()
    spec = config.task_spec()
    damaged = [] if damaged is None else damaged
    table = run.read(ROUNDS, damaged) if run.table_path(ROUNDS).is_dir() else None
    rows = sorted(table.to_pylist(), key=lambda row: row["round"]) if table is not None else []
    done = len(rows)
    status = "complete" if done == config.rounds else f"incomplete: {done} of {config.rounds} rounds finished"
    names = table.column_names if table is not None else []
    columns, notes = choose_columns(rows, names, spec)
    best = best_round(rows, spec)
    shown = list(range(done)) if show_all else rounds_to_show(done, keep=(best,) if best is not None else ())
    lines = [
        f"run {run.path} ({status})",
        f"strategy {config.strategy.name}, {spec.describe(config)}, {_cohort(config)}, seed {config.seed}",
        *_spread_legend(columns, names),
        "",
        "| " + " | ".join(column.heading for column in columns) + " |",
        "|" + "|".join("---:" for _ in columns) + "|",
    ]
    for index in shown:
        cells = [_cell(rows[index].get(column.key), column.template) for column in columns]
        if index == best:
            cells[0] += " best"
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"damaged part skipped (not readable): {part}" for part in damaged]
    if not rows:
        return "\n".join(lines)
    lines.append("")
    if len(shown) < done:
        lines.append(f"{len(shown)} of {done} rounds shown (--all for every round)")
    if best is not None:
        lines.append(_headline_summary(rows, best, spec))
    lines += [describe(target, time_to_target(rows, target), done) for target in targets]
    lines += notes
    lines.append(f"{done} rounds, {sum(row['seconds'] for row in rows) / done:.2f} s per round on average")
    return "\n".join(lines)


def _spread_legend(columns: list[Column], names: list[str]) -> list[str]:
    """What the hosp. mean / worst10 columns are (their headings are short to fit the terminal)."""
    summarised = _spread(names)
    spread = [c.key for c in columns if c in summarised]
    if not spread:
        return []
    metric = spread[0].removeprefix("hospital_").rsplit("_", 1)[0].replace("_", " ")
    return [f"hosp. mean / worst10: {metric} per hospital (hospital_eval.parquet), mean and worst-10% mean"]


def _headline_summary(rows: list[dict[str, Any]], best: int, spec: TaskSpec) -> str:
    """Best round, last round and the mean of the last LAST scored rounds of the headline metric."""
    name = spec.label(spec.headline)
    scored = [row[spec.headline] for row in rows if not _missing(row.get(spec.headline))]
    tail = scored[-LAST:]
    return (f"best {name} {rows[best][spec.headline]:.3f} at round {rows[best]['round']}; "
            f"last scored {scored[-1]:.3f}; mean of the last {len(tail)} scored rounds {sum(tail) / len(tail):.3f}")


def _cohort(config: Any) -> str:
    """How many hospitals work at a time: a round's cohort, or an asynchronous run's concurrency."""
    if config.strategy.asynchronous:
        return f"{config.clients_per_round()} training at once, rows are server steps"
    return f"{config.clients_per_round()} per round"
