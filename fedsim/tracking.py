"""Experiment tracking: each round's metrics also go where researchers already look.

A tracker is a round callback (the same hook as `Simulation(on_round=...)`): it receives every
finished round's rounds.parquet row. TensorBoard goes through tensorboardX, which Ray Tune already
installs and which writes event files from a background thread (a round only queues its scalars);
torch.utils.tensorboard would add the whole `tensorboard` server package for the same files.
MLflow is used when installed and asked for.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from fedsim.config import Config, TrackingConfig
from fedsim.errors import ConfigError

RoundRow = Mapping[str, Any]
TENSORBOARD_DIR = "tensorboard"
#: Column prefixes shown as TensorBoard sections: global_accuracy -> global/accuracy.
_SECTIONS = ("global", "hospital", "strategy", "pipeline")


def numeric_metrics(row: RoundRow) -> dict[str, float]:
    """The row's numbers by column name, without the round (NaN, not evaluated this round, kept)."""
    return {name: float(value) for name, value in row.items()
            if name != "round" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def scalars(row: RoundRow) -> dict[str, float]:
    """The row's numbers as tracking tags (NaN, i.e. not evaluated this round, left out)."""
    tags = {}
    for name, value in numeric_metrics(row).items():
        if math.isnan(value):
            continue
        section, _, rest = name.partition("_")
        tags[f"{section}/{rest}" if section in _SECTIONS and rest else name] = value
    return tags


class Trackers:
    """The trackers a config asks for, called once per round and closed at the end. Checked
    when built (a missing package stops the run before anything starts), opened at the first
    round, so a run that never starts leaves no tracker open."""

    def __init__(self, tracking: TrackingConfig, config: Config, run_dir: Path) -> None:
        _check_installed(tracking)
        self._tracking, self._config, self._run_dir = tracking, config, run_dir
        self._calls: list[Callable[[RoundRow], None]] | None = None
        self._closers: list[Callable[[], None]] = []

    def __call__(self, row: RoundRow) -> None:
        if self._calls is None:
            self._calls = self._open()
        for call in self._calls:
            call(row)

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers = []

    def _open(self) -> list[Callable[[RoundRow], None]]:
        calls: list[Callable[[RoundRow], None]] = []
        if self._tracking.tensorboard:
            from tensorboardX import SummaryWriter

            writer = SummaryWriter(logdir=str(self._run_dir / TENSORBOARD_DIR))
            calls.append(lambda row: _write_scalars(writer, row))
            self._closers.append(writer.close)
        if self._tracking.mlflow:
            calls.append(self._start_mlflow())
        return calls

    def _start_mlflow(self) -> Callable[[RoundRow], None]:
        import mlflow

        mlflow.set_experiment(self._tracking.mlflow_experiment)
        mlflow.start_run(run_name=self._run_dir.name)
        mlflow.log_params(flat_settings(self._config.to_dict()))
        mlflow.set_tag("run_dir", str(self._run_dir.resolve()))
        self._closers.append(mlflow.end_run)
        return lambda row: mlflow.log_metrics(
            {tag.replace("/", "."): value for tag, value in scalars(row).items()}, step=int(row["round"])
        )


def flat_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.05}} -> {"train.lr": 0.05}: a config as the flat params trackers show."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _write_scalars(writer: Any, row: RoundRow) -> None:
    for tag, value in scalars(row).items():
        writer.add_scalar(tag, value, global_step=int(row["round"]))


def _check_installed(tracking: TrackingConfig) -> None:
    """Refuse before anything starts when a chosen tracker's package is missing."""
    for wanted, field, package in ((tracking.tensorboard, "tensorboard", "tensorboardX"), (tracking.mlflow, "mlflow", "mlflow")):
        if wanted and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"tracking.{field}: needs the {package} package "
                f"(pip install {package}, or pip install 'fedsim[tracking]'), or set it to false"
            )
