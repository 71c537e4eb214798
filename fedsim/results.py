"""A run directory: the resolved config and append-only Parquet tables.

Each table is a directory of Parquet parts, one part per round, each written to a hidden temporary
file and renamed into place. A crash therefore never leaves a half-written file that readers would
see, every finished round stays readable, and `pyarrow.parquet.read_table(run / "rounds.parquet")`
(or `pyarrow.dataset`) reads the whole table in one call.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from fedsim.config import Config, ConfigError, dump_config, load_config
from fedsim.errors import DataError

ROUNDS = "rounds"
CLIENTS = "clients"
HOSPITAL_EVAL = "hospital_eval"
CONFUSION = "confusion"  # the global model's confusion matrices: round, split, true, pred, count
PARTITION = "partition"
SYSTEMS = "systems"  # each hospital's system profile (a run with a systems section)
RESOURCES = "resources"  # machine cost per round; not a metric, so it varies run to run
MODEL = "model.pt"  # the final global model, a torch state_dict
EVENTS = "events"  # recoveries (worker replaced, server restored, resumed): one part per event
PER_ROUND = (ROUNDS, CLIENTS, HOSPITAL_EVAL, CONFUSION, RESOURCES)  # tables with one part per round
#: What a run directory holds before its first round finished: such a directory may be reused.
_BEFORE_ROUND_ONE = {"config.yaml", f"{PARTITION}.parquet", f"{SYSTEMS}.parquet"}


#: A per-class or per-level results column: base, level, then a statistic if any
#: (global_sensitivity_0, hospital_wait_mean_acuity_3_mean).
_LEVELLED = re.compile(r"(.+?)_(\d+)((?:_[a-z]+)?)")


def split_level(column: str) -> tuple[str, int, str] | None:
    """(base, level, statistic) of a per-class or per-level column, None for any other:
    hospital_sensitivity_2_mean -> ("hospital_sensitivity", 2, "_mean")."""
    match = _LEVELLED.fullmatch(column)
    return (match[1], int(match[2]), match[3]) if match else None


def safe_name(label: str) -> str:
    """A label as a shell-friendly folder name: fedprox(mu=0.01) -> fedprox-mu-0.01 (letters,
    digits, '.', '_' and '-' only; no quoting needed, no hive '=' inside a value)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "unnamed"


def strategy_label(spec: Mapping[str, Any]) -> str:
    """fedprox, or fedprox(mu=0.1) when parameters are given (a table's readable label)."""
    params = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({params})" if params else str(spec["name"])


def fresh_run_dir(name: str, root: str | Path = "runs") -> Path:
    """A new run directory `root/<name>-<YYYYmmdd-HHMMSS>` (suffixed -2, -3, ... if taken)."""
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, suffix = base, 1
    while path.exists():
        suffix += 1
        path = base.with_name(f"{base.name}-{suffix}")
    return path


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: Config) -> "RunDirectory":
        """Start a new run directory; refuses one that already holds results (nothing is lost),
        and reuses one whose run failed before its first round finished."""
        run = cls(path)
        check_run_dir_path(run.path)
        if run.path.exists() and any(run.path.iterdir()):
            if {entry.name for entry in run.path.iterdir()} - _BEFORE_ROUND_ONE:
                raise ConfigError(f"{run.path}: directory already holds a run; choose a new run directory "
                                  "(or resume it: fedsim run --resume DIR)")
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / "config.yaml").write_text(dump_config(config))
        return run

    def drop_rounds_after(self, round_index: int) -> None:
        """Remove the per-round parts of rounds after `round_index` (a resume rewrites them)."""
        for name in PER_ROUND:
            for part in self.table_path(name).glob("part-*.parquet"):
                if int(part.stem.removeprefix("part-")) > round_index:
                    part.unlink()

    def append_event(self, row: Mapping[str, Any]) -> None:
        """One more row of events.parquet (its parts are numbered in order of occurrence)."""
        folder = self.table_path(EVENTS)
        existing = [int(p.stem.removeprefix("part-")) for p in folder.glob("part-*.parquet")] if folder.is_dir() else []
        self.append(EVENTS, max(existing, default=0) + 1, [row])

    def config(self) -> Config:
        return load_config(self.path / "config.yaml")

    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def write_table(self, name: str, table: pa.Table) -> None:
        """Write a one-off table (e.g. partition statistics) as a single part."""
        self._write_part(name, 0, table)

    def write_atomically(self, name: str, write: Callable[[Path], None]) -> None:
        """Write the file `name` through a temporary file renamed into place."""
        temporary = self.path / f".{name}.tmp"
        write(temporary)
        os.replace(temporary, self.path / name)

    def append(self, name: str, part: int, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            self._write_part(name, part, pa.Table.from_pylist(rows))

    def _write_part(self, name: str, part: int, table: pa.Table) -> None:
        folder = self.table_path(name)
        folder.mkdir(exist_ok=True)
        final = folder / f"part-{part:06d}.parquet"
        temporary = folder / f".part-{part:06d}.parquet.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, final)

    def read(self, name: str, damaged: list[Path] | None = None) -> pa.Table:
        """The whole table. A part that cannot be read (a truncated file) raises DataError naming
        it, or, when `damaged` is given, is skipped and appended there."""
        folder = self.table_path(name)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such table in this run directory")
        try:
            return pq.read_table(folder)
        except (pa.ArrowException, OSError):
            pass  # some part is damaged: read part by part to find it and keep the rest
        tables = []
        for part in sorted(folder.glob("part-*.parquet")):
            try:
                tables.append(pq.read_table(part))
            except (pa.ArrowException, OSError) as error:
                if damaged is None:
                    raise DataError(f"{part}: damaged Parquet part, not readable ({error})") from None
                damaged.append(part)
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def check_run_dir_path(path: Path) -> None:
    """Refuse a run directory that is a file or lies under one, before anything is written."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run directory {path}: is a file; expected a directory (new or empty)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"run directory {path}: lies under {parent}, which is a file; expected a path of directories")
