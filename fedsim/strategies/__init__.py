"""Federated strategies, built from the `strategy` section of a config."""

from __future__ import annotations

from fedsim.config import Config
from fedsim.strategies.base import Strategy
from fedsim.strategies.fedavg import FedAvg

_STRATEGIES: dict[str, type[Strategy]] = {FedAvg.name: FedAvg}


def build_strategy(config: Config) -> Strategy:
    return _STRATEGIES[config.strategy.name]()


__all__ = ["Strategy", "FedAvg", "build_strategy"]
