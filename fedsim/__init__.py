"""fedsim: federated learning across simulated hospitals, on Ray.

The library surface (see fedsim.api): `run`, `RunResult`, `Config`/`load_config`, the error
types, `StrategyConfig`/`Strategy` to add a strategy, `register_model` for your own model and
`dataset_from_arrays` for your own data.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fedsim.api import RunResult, resume, run
from fedsim.config import Config, load_config
from fedsim.errors import ClusterError, ConfigError, DataError, FedsimError
from fedsim.strategies.base import Strategy, StrategyConfig

try:
    __version__ = version("fedsim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {  # torch-importing parts, loaded on first use
    "register_model": "fedsim.models",
    "dataset_from_arrays": "fedsim.data.custom",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")


__all__ = [
    "ClusterError", "Config", "ConfigError", "DataError", "FedsimError", "RunResult", "Strategy", "StrategyConfig",
    "dataset_from_arrays", "load_config", "register_model", "resume", "run",
]
