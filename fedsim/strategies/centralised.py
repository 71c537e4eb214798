"""Centralised: the upper bound every federated row is compared with. One model learns from the
pooled training data of the hospitals, as if they had shipped their data to one site.

Each round the server sends one site (the slot of the cohort's first hospital) the model and
`train.epochs` epochs of plain SGD over the round's whole cohort's training data, concatenated
and shuffled together; the site's model is the next global model (FedAvg over one hospital of
weight 1). The baseline thus makes the federated run's sample passes, round by round: the same
cohorts (drawn from the run seed), the same samples, the same epochs,

    passes = sum_t E * sum_{k in S_t} n_k,   in expectation R * E * q * n

for R rounds, E local epochs, participation fraction q and n pooled training samples; with every
hospital every round, R * E epochs over all the pooled data. (Optimiser steps differ slightly:
ceil(sum n_k / B) a pooled epoch against sum ceil(n_k / B) federated ones.) Only training data is
pooled: the model is evaluated as any global model is (global test and validation splits, each
hospital's own test split).
"""

from __future__ import annotations

from typing import Literal, Mapping

from fedsim.protocol import POOLED_DATA, Cohort, Instruction, LocalPlan
from fedsim.strategies.base import StrategyConfig
from fedsim.strategies.fedavg import FedAvg


class CentralisedConfig(StrategyConfig):
    """The centralised baseline: one site trains on the sampled hospitals' pooled training data."""

    name: Literal["centralised"] = "centralised"

    def build(self, config, task) -> "Centralised":
        return Centralised()

    def requirements(self) -> Mapping[str, str]:
        return {POOLED_DATA: "one site trains on every sampled hospital's training data"}

    def check(self, config) -> None:
        if config.train.epochs_mode != "fixed":
            raise ValueError(f"train.epochs_mode: centralised trains the pooled data train.epochs times a round, "
                             f"expected fixed, got {config.train.epochs_mode}")
        for section in ("privacy", "compression"):
            if getattr(config, section) is not None:
                raise ValueError(f"{section}: the centralised baseline trains at one site and sends no hospital updates; expected none")
        if config.pipeline:
            raise ValueError("pipeline: the centralised baseline trains at one site and sends no hospital updates; expected []")


class Centralised(FedAvg):
    name = "centralised"

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        if not len(cohort.hospitals):
            return []
        pooled = tuple(int(h) for h in cohort.hospitals)
        return [Instruction(pooled[0], 1.0, LocalPlan(epochs=int(cohort.epochs[0]), pooled=pooled))]
