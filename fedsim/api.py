"""fedsim as a library: `fedsim.run(config)` runs a federation and returns its results as pandas
DataFrames, with the final global model a call away.

    import fedsim
    result = fedsim.run({"rounds": 3, "strategy": "fedprox"})
    result.rounds[["round", "global_accuracy"]]
    model = result.model()          # a torch.nn.Module with the final global weights

Mistakes raise `fedsim.ConfigError` / `fedsim.DataError` / `fedsim.ClusterError` (all
`fedsim.FedsimError`) with the same one-line messages the command line prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.config import Config, load_config, merge_settings, parse_config
from fedsim.errors import ConfigError
from fedsim.results import CLIENTS, CONFUSION, HOSPITAL_EVAL, MODEL, PARTITION, ROUNDS, RunDirectory, fresh_run_dir

if TYPE_CHECKING:  # pandas is imported where tables are read: every Ray worker imports fedsim, none reads one
    import pandas as pd


@dataclass
class RunResult:
    """A finished run: its directory, config and tables (read from the run directory)."""

    run_dir: Path
    config: Config
    task: Any  # the run's task (builds the model that model.pt loads into)

    def _table(self, name: str) -> pd.DataFrame:
        import pandas as pd

        path = RunDirectory(self.run_dir).table_path(name)
        return pd.read_parquet(path) if path.is_dir() else pd.DataFrame()

    @property
    def rounds(self) -> pd.DataFrame:
        return self._table(ROUNDS)

    @property
    def clients(self) -> pd.DataFrame:
        return self._table(CLIENTS)

    @property
    def hospital_eval(self) -> pd.DataFrame:
        return self._table(HOSPITAL_EVAL)

    @property
    def confusion(self) -> pd.DataFrame:
        """The global model's confusion matrices (classification): round, split, true, pred, count."""
        return self._table(CONFUSION)

    @property
    def partition(self) -> pd.DataFrame:
        return self._table(PARTITION)

    def model(self) -> Any:
        """The final global model: the task's torch module with `model.pt` loaded."""
        import torch

        module = self.task.new_module()
        module.load_state_dict(torch.load(self.run_dir / MODEL, weights_only=True))
        return module


def as_config(config: str | Path | dict[str, Any] | Config | None) -> Config:
    """A Config from a YAML path, a dict of settings (on the embedded defaults) or a Config."""
    if isinstance(config, Config):
        return config
    if config is None or isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, dict):
        return parse_config(merge_settings(Config().to_dict(), config))
    raise ConfigError(f"config: expected a YAML path, a dict of settings or a fedsim Config, got {type(config).__name__}")


def run(
    config: str | Path | dict[str, Any] | Config | None = None,
    out: str | Path | None = None,
    *,
    dataset: Any = None,
    quiet: bool = True,
) -> RunResult:
    """Run one federation. `out=None` picks a fresh directory under runs/; `dataset`: your own
    data (fedsim.dataset_from_arrays), recorded in config.yaml as `data.source.kind: custom`;
    `quiet=False` shows a progress bar (a widget in notebooks)."""
    from fedsim.simulation import Simulation

    resolved = as_config(config)
    if dataset is not None:
        resolved = parse_config(merge_settings(resolved.to_dict(), {"data": {"source": {"kind": "custom", "name": dataset.name}}}))
    name = Path(config).stem if isinstance(config, (str, Path)) else f"{resolved.strategy.name}-{resolved.task}"
    run_dir = Path(out) if out is not None else fresh_run_dir(name)
    simulation = Simulation(resolved, run_dir, quiet=quiet, dataset=dataset)
    simulation.run()
    return RunResult(run_dir, resolved, simulation.task)


def resume(run_dir: str | Path, *, dataset: Any = None, quiet: bool = True) -> RunResult:
    """Continue an interrupted run from its last checkpoint (the same bits as never stopping);
    `dataset`: the run's own data when it used `data.source.kind: custom`."""
    from fedsim.simulation import Simulation

    simulation = Simulation.resume(run_dir, quiet=quiet, dataset=dataset)
    simulation.run()
    return RunResult(Path(run_dir), simulation.config, simulation.task)
