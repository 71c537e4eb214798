"""The messages exchanged in a round: what a hospital is told, and what it sends back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from fedsim.params import Params


@dataclass(frozen=True)
class Cohort:
    """The hospitals sampled for a round, with what the server knows of each before training."""

    hospitals: np.ndarray  # sorted hospital ids
    sizes: np.ndarray  # training samples
    epochs: np.ndarray  # local epochs this round
    steps: np.ndarray  # local optimiser steps those epochs take (FedNova's tau_i)


@dataclass(frozen=True)
class Instruction:
    """What the strategy tells one sampled hospital this round.

    `weight` is the hospital's share of the aggregate, fixed before training so that workers can
    sum weighted contributions (a strategy that weighs after training replaces it with the
    weight its `weigh` returns); `settings` are per-hospital knobs the task reads (local epochs,
    FedProx's mu, ...), absent keys meaning the task's configured default.
    """

    hospital: int
    weight: float
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class LocalResult:
    """One hospital's local training outcome, produced by a Task on a worker."""

    params: Params
    num_samples: int
    steps: int
    metrics: dict[str, float]
    state: Any = None  # per-hospital state to keep until this hospital's next round


@dataclass(frozen=True)
class ClientReport:
    """The small, loggable part of a hospital's round (one row of clients.parquet)."""

    hospital: int
    num_samples: int
    steps: int
    weight: float
    seconds: float
    upload_bytes: int
    metrics: Mapping[str, float]


@dataclass
class Aggregate:
    """What reaches the strategy's aggregate step: `total` is the exact sum of all hospitals'
    weighted contributions (summed on the workers)."""

    instructions: list[Instruction]
    reports: list[ClientReport]  # the hospitals' loggable outcomes, in instructions order
    total: dict[str, np.ndarray]


#: What a worker sends first when the strategy weighs after training: (hospital, summary) pairs.
Summaries = list[tuple[int, dict[str, np.ndarray]]]
#: What the engine keeps for a hospital between its rounds: (task state, strategy state).
HospitalState = tuple[Any, Any]
