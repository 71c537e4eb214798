"""Federated strategies, built from the `strategy` section of a config."""

from __future__ import annotations

from fedsim.config import (
    Config,
    FedAdaptiveConfig,
    FedAvgConfig,
    FedBNConfig,
    FedMRLConfig,
    FedNovaConfig,
    FedProxConfig,
    LocalOnlyConfig,
    ScaffoldConfig,
)
from fedsim.strategies.base import Strategy
from fedsim.strategies.fedadaptive import FedAdaptive
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedbn import FedBN
from fedsim.strategies.fedmrl import FedMRL
from fedsim.strategies.fednova import FedNova
from fedsim.strategies.fedprox import FedProx
from fedsim.strategies.local_only import LocalOnly
from fedsim.strategies.scaffold import Scaffold
from fedsim.tasks.base import Task


def build_strategy(config: Config, task: Task) -> Strategy:
    """The configured strategy, given what it needs to know of the task and training."""
    spec = config.strategy
    if isinstance(spec, FedAvgConfig):
        return FedAvg()
    if isinstance(spec, FedProxConfig):
        return FedProx(spec.mu)
    if isinstance(spec, FedNovaConfig):
        return FedNova(config.train.momentum)
    if isinstance(spec, FedBNConfig):
        return FedBN(task.normalization_keys())
    if isinstance(spec, ScaffoldConfig):
        return Scaffold(config.train.lr, spec.server_lr, task.num_hospitals)
    if isinstance(spec, FedAdaptiveConfig):
        return FedAdaptive(spec.name, spec.server_lr, spec.beta1, spec.beta2, spec.tau)
    if isinstance(spec, FedMRLConfig):
        return FedMRL(spec, config.rounds, config.clients_per_round(), config.seed)
    if isinstance(spec, LocalOnlyConfig):
        return LocalOnly()
    raise ValueError(f"strategy.name: unsupported strategy {spec!r}")


__all__ = ["Strategy", "FedAvg", "FedProx", "FedNova", "FedBN", "Scaffold", "FedAdaptive", "LocalOnly", "FedMRL", "build_strategy"]
