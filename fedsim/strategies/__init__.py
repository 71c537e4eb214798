"""Federated strategies. Each lives in one module of this package beside its config model, which
registers itself by name (see fedsim.strategies.base); `build_strategy` makes the configured one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsim.strategies.base import STRATEGIES, Strategy, StrategyConfig

if TYPE_CHECKING:
    from fedsim.config import Config
    from fedsim.tasks.base import Task


def build_strategy(config: "Config", task: "Task") -> Strategy:
    """The configured strategy, given what it needs to know of the task and training."""
    return config.strategy.build(config, task)


__all__ = ["STRATEGIES", "Strategy", "StrategyConfig", "build_strategy"]
