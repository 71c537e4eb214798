"""Sweeps: a grid of fedsim runs on Ray Tune, over the task-aware axes (hospitals x heterogeneity
x strategy x seed) and any other config key (`train.lr`, `strategy.mu`, ...).

Each trial reserves a placement group sized for its own run: one bundle for its driver and one
per worker (`engine.num_cpus`, `engine.num_gpus`). Tune starts a trial only once its whole group is
placed, and runs the trial's driver inside it with child capture on, so the worker actors land in
the trial's own bundles: a sweep fills a cluster and never deadlocks on half-started trials.

Each trial reports every finished round to Tune (its rounds.parquet row), and its Tune config
holds the swept values under their config keys, so Tune's own logs, its TensorBoard view and
schedulers such as ASHA see fedsim's metrics and hyperparameters; trial names show the values.

A sweep directory holds
    results/hospitals=100/alpha=0.5/strategy=fedavg/seed=0/part-0.parquet   one dataset, hive-partitioned
    runs/hospitals=100/alpha=0.5/strategy=fedavg/seed=0/                     each trial's run directory
    tune/                                                                    Tune's own logs
(a key such as train.lr adds a level `train.lr=0.01/` after the axes, in grid order).
A trial's results part is written (atomically) only after its run finished, so running the same
sweep again skips finished trials and reruns only the missing or interrupted ones.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsim.checkpoint import load_checkpoint
from fedsim.config import Config, ConfigError, one_line_error, load_config, merge_settings, parse_config
from fedsim.results import RESOURCES, ROUNDS, RunDirectory, safe_name, strategy_label
from fedsim.tracking import numeric_metrics
from fedsim.tasks.registry import task_spec
from fedsim.yamlio import load_yaml

if TYPE_CHECKING:
    from ray.tune import PlacementGroupFactory

#: Partition keys in directory order; a sweep uses those its grid names.
AXES = ("hospitals", "alpha", "eta", "strategy", "seed")
NULL = "__HIVE_DEFAULT_PARTITION__"  # pyarrow's hive spelling of "not set" (alpha of a shard trial)
RESULTS, RUNS, TUNE = "results", "runs", "tune"
POINT, TRIAL = "point", "trial"  # a Tune config: {point: {trial: <hive label>, <swept key>: value, ...}}
PART = "part-0.parquet"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Grid(_Spec):
    """Values of each swept parameter; an axis left out keeps the base config's value.
    `alpha` gives Dirichlet label-skew trials and `eta` FedMRL shard trials (both may be given).
    Any other key is a dotted config key (`train.lr`, `strategy.mu`, `sampling.clients_per_round`)
    with a list of values, applied after the axes in the order given."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    hospitals: list[Annotated[int, Field(ge=1)]] | None = None
    alpha: list[float] | None = None
    eta: list[float] | None = None
    strategy: list[str | dict[str, Any]] | None = None
    seed: list[int] | None = None

    def keys(self) -> dict[str, list[Any]]:
        """Every swept key with its values: the axes (in AXES order), then the config keys."""
        axes = {axis: getattr(self, axis) for axis in AXES if getattr(self, axis)}
        return {**axes, **(self.model_extra or {})}


class SweepSpec(_Spec):
    """A sweep file: a base fedsim config, overrides for every trial, and the grid."""

    base: str | None = Field(None, description="fedsim config YAML (relative to the working directory)")
    set: list[str] = Field(default_factory=list, description="KEY=VALUE overrides applied to every trial")
    samples_per_hospital: int | None = Field(None, ge=1, description="synthetic data grows with the hospitals")
    driver_cpus: float = Field(1.0, gt=0, description="CPUs each trial reserves for its driver")
    trial_retries: int = Field(1, ge=0, description="restarts of a trial whose process died (it resumes from its checkpoint)")
    grid: Grid


@dataclass(frozen=True)
class Trial:
    """One grid point: its partition keys (the swept axes in AXES order, None where not set,
    then the swept config keys; values as folder text) and its config."""

    keys: dict[str, Any]
    config: Config

    @property
    def label(self) -> str:
        return hive_path(self.keys)

    @property
    def name(self) -> str:
        """The Tune trial name: the values that vary in this sweep, e.g. train.lr=0.01,seed=0."""
        return ",".join(f"{key}={_key_text(value)}" for key, value in self.keys.items() if value is not None)

    def hyperparameters(self) -> dict[str, Any]:
        """The trial's Tune config: its swept values (numbers as numbers) under their keys."""
        return {key: value for key, value in self.keys.items() if value is not None}


@dataclass
class SweepOutcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished by an earlier invocation
    failed: dict[str, str] = field(default_factory=dict)  # label -> one-line error


def hive_path(keys: dict[str, Any]) -> str:
    """Relative hive path of a grid point, e.g. hospitals=100/alpha=0.5/strategy=fedavg/seed=0."""
    return "/".join(f"{axis}={_key_text(value)}" for axis, value in keys.items())


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file, or raise ConfigError naming the file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"{path}: is not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with at least `grid:`")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {one_line_error(error)}") from None
    for key, values in (spec.grid.model_extra or {}).items():
        if not _KEY.fullmatch(key):
            raise ConfigError(f"{path}: grid.{key}: expected a dotted config key such as train.lr")
        if "." not in key and key not in Config.model_fields:
            raise ConfigError(f"{path}: grid.{key}: unknown key; expected an axis ({', '.join(AXES)}) or a config key such as train.lr")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key}: expected a non-empty list of values, got {values!r}")
    if not spec.grid.keys():
        raise ConfigError(f"{path}: grid: name at least one axis ({', '.join(AXES)}) or config key with values")
    return spec


def expand(spec: SweepSpec) -> list[Trial]:
    """Every grid point as a validated trial (bad combinations fail here, before Ray starts)."""
    base = load_config(spec.base, spec.set).to_dict()  # data paths absolute: Tune runs trials in their own folders
    if spec.samples_per_hospital is not None and base["data"]["source"]["kind"] != "synthetic":
        raise ConfigError("samples_per_hospital: only for data.source.kind synthetic")
    grid = spec.grid
    heterogeneity: list[tuple[str | None, float | None]] = [("alpha", a) for a in grid.alpha or []]
    heterogeneity += [("eta", e) for e in grid.eta or []]
    axes = [axis for axis in AXES if getattr(grid, axis)]
    extra = dict(grid.model_extra or {})
    trials = []
    for hospitals, (scheme, level), strategy, seed, *values in itertools.product(
        grid.hospitals or [None], heterogeneity or [(None, None)], grid.strategy or [None], grid.seed or [None],
        *extra.values(),
    ):
        point = {"hospitals": hospitals, "alpha": level if scheme == "alpha" else None,
                 "eta": level if scheme == "eta" else None, "strategy": strategy, "seed": seed}
        settings = dict(zip(extra, values))
        keys = {axis: _folder_value(point[axis]) for axis in axes} | {key: _folder_value(v) for key, v in settings.items()}
        try:
            config = parse_config(_trial_settings(base, point, settings, spec.samples_per_hospital))
        except ConfigError as error:
            raise ConfigError(f"sweep trial {hive_path(keys)}: {error}") from None
        trials.append(Trial(keys, config))
    labels = [trial.label for trial in trials]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"grid: two grid points share the folder {duplicates[0]}; give each value once")
    return trials


def run_sweep(spec: SweepSpec, out: str | Path, *, verbose: int = 1, scheduler: Any = None) -> SweepOutcome:
    """Run the trials of `spec` that `out` does not hold yet; returns what ran, was skipped, failed.
    `scheduler`: a Tune trial scheduler (e.g. ASHAScheduler(metric="global_accuracy", mode="max")),
    fed each trial's rounds as they finish; a trial it stops early keeps its run directory but
    publishes no results part, so a later invocation runs it again."""
    from ray import tune

    from fedsim.engine.cluster import ray_session

    out = Path(out).resolve()
    trials = expand(spec)
    outcome = SweepOutcome()
    pending = []
    for trial in trials:
        if _finished(out, trial):
            outcome.skipped.append(trial.label)
        else:
            _clear_leftovers(out, trial)
            pending.append(trial)
    if not pending:
        return outcome
    by_label = {trial.label: trial.config.to_dict() for trial in pending}
    names = {trial.label: trial.name for trial in pending}
    largest = max(pending, key=lambda trial: trial.config.num_workers())
    with ray_session(largest.config.engine, largest.config.num_workers(), spec.driver_cpus):
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(_run_trial, configs=by_label, out=str(out)),
                resources=lambda params: trial_resources(parse_config(by_label[params[POINT][TRIAL]]), spec.driver_cpus),
            ),
            param_space={POINT: tune.grid_search([{TRIAL: trial.label, **trial.hyperparameters()} for trial in pending])},
            tune_config=tune.TuneConfig(
                trial_name_creator=lambda trial: names[trial.config[POINT][TRIAL]],
                trial_dirname_creator=lambda trial: _trial_dirname(names[trial.config[POINT][TRIAL]], trial.trial_id),
                scheduler=scheduler,
            ),
            run_config=tune.RunConfig(
                name=time.strftime("sweep-%Y%m%d-%H%M%S"), storage_path=str(out / TUNE), verbose=verbose,
                failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
            ),
        )
        for result in tuner.fit():
            label = result.config[POINT][TRIAL]
            if result.error is None:
                outcome.ran.append(label)
            else:
                outcome.failed[label] = _last_line(result.error)
    return outcome


def trial_resources(config: Config, driver_cpus: float) -> PlacementGroupFactory:
    """The trial's placement group: its driver, then one bundle per worker."""
    from ray import tune

    worker = {"CPU": config.engine.num_cpus}
    if config.engine.num_gpus:
        worker["GPU"] = config.engine.num_gpus
    return tune.PlacementGroupFactory([{"CPU": driver_cpus}] + [dict(worker)] * config.num_workers())


def read_results(sweep_dir: str | Path) -> pa.Table:
    """The whole sweep as one table: one row per trial and round, partition keys as columns
    (integers as int64, decimals such as alpha, eta or train.lr as float64, the rest as text).
    Keys are read as text first, so a key no finished trial has set yet (eta while only alpha
    trials are done) reads as nulls instead of failing pyarrow's type inference."""
    root = Path(sweep_dir) / RESULTS
    first = next(root.rglob(PART), None)
    keys = [part.split("=", 1)[0] for part in first.relative_to(root).parts[:-1]] if first else []
    partitioning = ds.partitioning(pa.schema([(key, pa.string()) for key in keys]), flavor="hive")
    table = ds.dataset(root, partitioning=partitioning).to_table()
    for key in keys:
        values = [v for v in table[key].drop_null().unique().to_pylist() if v != NULL]
        column = pc.if_else(pc.equal(table[key], NULL), pa.scalar(None, pa.string()), table[key])
        for kind, parse in ((pa.int64(), int), (pa.float64(), float)):  # a key without values yet: float
            if (values or kind == pa.float64()) and all(_parses(parse, v) for v in values):
                column = pc.cast(column, kind)
                break
        table = table.set_column(table.column_names.index(key), key, column)
    return table


def _parses(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def trial_table(run_dir: str | Path) -> pa.Table:
    """A finished run's rounds joined with its resources, as the trial's rows in `results/`.

    The rounds' `hospitals` (trained this round) becomes `hospitals_trained`, since `hospitals`
    is the partition key (hospitals registered)."""
    run = RunDirectory(run_dir)
    rounds = run.read(ROUNDS)
    rounds = rounds.rename_columns(["hospitals_trained" if name == "hospitals" else name for name in rounds.column_names])
    joined = rounds.join(run.read(RESOURCES), "round", join_type="left outer").sort_by("round")
    return joined.append_column("task", pa.array([run.config().task] * joined.num_rows))


def _run_trial(params: dict[str, Any], configs: dict[str, dict[str, Any]], out: str) -> None:
    """One Tune trial: run the simulation into runs/<label>, reporting each round to Tune, then
    publish its results part."""
    from ray import tune

    from fedsim.simulation import Simulation

    label = params[POINT][TRIAL]
    run_dir = Path(out) / RUNS / label
    report = lambda row: tune.report({**numeric_metrics(row), "round": int(row["round"])})  # noqa: E731
    resumable = load_checkpoint(run_dir) is not None  # interrupted: _clear_leftovers kept it
    simulation = (Simulation.resume(run_dir, quiet=True, on_round=report) if resumable
                  else Simulation(parse_config(configs[label]), run_dir, quiet=True, on_round=report))
    simulation.run()
    rows = trial_table(run_dir)
    part = Path(out) / RESULTS / label / PART
    part.parent.mkdir(parents=True, exist_ok=True)
    temporary = part.with_name(f".{PART}.tmp")
    pq.write_table(rows, temporary)
    os.replace(temporary, part)


def _trial_dirname(name: str, trial_id: str) -> str:
    """Tune's folder for a trial: its name, shell-friendly and short, then Tune's id."""
    return f"{safe_name(name.replace(',', '_').replace('=', '-'))[:80]}-{trial_id}"


def _finished(out: Path, trial: Trial) -> bool:
    """Whether an earlier invocation finished this trial (with this very config)."""
    if not (out / RESULTS / trial.label / PART).is_file():
        return False
    run = RunDirectory(out / RUNS / trial.label)
    if not (run.path / "config.yaml").is_file() or run.config() != trial.config:
        raise ConfigError(
            f"{out / RESULTS / trial.label}: holds a finished trial with another config; "
            "sweep into a new --out (or delete that trial's results and run folders)"
        )
    return True


def _clear_leftovers(out: Path, trial: Trial) -> None:
    """An interrupted trial resumes from its checkpoint when it has one of this very config;
    otherwise it starts afresh. Either way its unpublished results part goes."""
    run_dir = out / RUNS / trial.label
    keep = load_checkpoint(run_dir) is not None and RunDirectory(run_dir).config() == trial.config
    for leftover in ([] if keep else [run_dir]) + [out / RESULTS / trial.label]:
        if leftover.exists():
            shutil.rmtree(leftover)


def _trial_settings(
    base: dict[str, Any], point: dict[str, Any], keys: dict[str, Any], samples_per_hospital: int | None
) -> dict[str, Any]:
    """The base settings with one grid point applied: the axes (the task's spec says which keys
    the hospitals and heterogeneity axes set), then the swept config keys."""
    spec = task_spec(base["task"])
    settings = base
    if point["hospitals"] is not None:
        settings = merge_settings(settings, _nested(spec.hospitals_key, point["hospitals"]))
    for axis in ("alpha", "eta"):
        if point[axis] is not None:
            if axis not in spec.heterogeneity_axes:
                raise ConfigError(f"grid.{axis}: task {spec.name} has no {axis} axis")
            settings = merge_settings(settings, spec.heterogeneity_axes[axis](point[axis]))
    if samples_per_hospital is not None:
        hospitals = settings["data"]["hospitals"]
        settings = merge_settings(settings, {"data": {"source": {"train_samples": samples_per_hospital * hospitals}}})
    if point["strategy"] is not None:
        settings = merge_settings(settings, {"strategy": point["strategy"]})
    if point["seed"] is not None:
        settings = merge_settings(settings, {"seed": point["seed"]})
    for key, value in keys.items():
        settings = merge_settings(settings, _nested(key, value))
    return settings


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _folder_value(value: Any) -> Any:
    """A swept value as its partition key: numbers and None as they are, a mapping (a strategy
    with settings) and text as a shell-friendly name (fedprox-mu-0.01)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return safe_name(strategy_label(value) if "name" in value else ",".join(f"{k}={v}" for k, v in value.items()))
    return safe_name(str(value))


def _key_text(value: Any) -> str:
    if value is None:
        return NULL
    return repr(float(value)) if isinstance(value, float) else str(value)


def _last_line(error: BaseException) -> str:
    """One line for a failed trial: the cause, not Ray's paragraph about it."""
    from ray.exceptions import RayActorError

    if isinstance(error, RayActorError) or "actor died unexpectedly" in str(error):
        return "its process died (killed, or out of memory); its run directory keeps every finished round"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__
