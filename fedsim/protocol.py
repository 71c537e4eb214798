"""The messages exchanged in a round: what a hospital is told, and what it sends back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from fedsim.params import Params

#: Local-objective terms a LocalPlan can ask for, and other things a strategy or update stage may
#: need of a task; a task declares which it offers (`Task.capabilities`), and config validation
#: refuses a pairing that lacks one, in one line.
PROXIMAL, GRADIENT_CORRECTION, FAIRNESS = "a proximal term", "a gradient correction", "a fairness term"
PLAIN_SGD = "plain local SGD at train.lr"
NORMALIZATION_LAYERS = "normalisation layers"
VALIDATION_METRICS = "validation accuracy and loss"
DP_SGD = "sample-level DP-SGD in local training (Opacus)"
SUBNETWORK = "training a given sub-network of the model (federated dropout)"
PARTIAL_WORK = "a local step budget (LocalPlan.max_steps)"
VECTORIZED_TRAINING = "vectorised local training (torch.func.vmap)"
POOLED_DATA = "training on several hospitals' pooled training data at one site"
FINE_TUNING = "local fine-tuning of a copy of a model (Task.fine_tune)"
HEAD_FIRST = "head-then-body local training (LocalPlan.head_keys, head_epochs)"
PROXIMAL_ANCHOR = "a proximal term towards a given model (LocalPlan.proximal_anchor)"
TRAINING_LOSS = "a model's loss on a hospital's training data (Task.train_loss)"


@dataclass(frozen=True)
class Cohort:
    """The hospitals sampled for a round, with what the server knows of each before training."""

    hospitals: np.ndarray  # sorted hospital ids
    sizes: np.ndarray  # training samples
    epochs: np.ndarray  # local epochs this round


@dataclass(frozen=True)
class LocalPlan:
    """What one hospital is asked to do locally this round.

    - `epochs` of local training;
    - `mu`: FedProx's proximal term, add (mu/2)||w - w_start||^2 to the objective;
    - `gradient_correction`: name -> array added to every gradient (SCAFFOLD's c - c_i);
    - `fairness_lambda` with `global_loss`: FedMRL's fairness term lambda * (L_h - L_global)^2;
    - `subnetwork`: train only this sub-network of the model (federated dropout, a
      fedsim.privacy.federated_dropout.Subnetwork): dropped units output zero, and every entry
      outside the sub-network comes back exactly as it was sent.
    - `max_steps`: at most this many local steps (systems.stragglers: partial, the steps that fit
      the deadline); None: all of `epochs`.
    - `pooled`: train on these hospitals' training data pooled, instead of the hospital's own
      (the centralised baseline's site; a task offering POOLED_DATA honours it).
    - `proximal_anchor`: the point `mu`'s term pulls towards instead of the start (Ditto's w_global);
    - `head_keys` with `head_epochs`: FedRep's alternating rule, first `head_epochs` epochs train only
      the head (those parameters; the body frozen), then `epochs` train only the body.
    """

    epochs: int
    mu: float = 0.0
    gradient_correction: Mapping[str, np.ndarray] | None = None
    fairness_lambda: float = 0.0
    global_loss: float = float("nan")
    subnetwork: Any = None
    max_steps: int | None = None
    pooled: tuple[int, ...] = ()
    proximal_anchor: Mapping[str, np.ndarray] | None = None
    head_keys: frozenset[str] = frozenset()
    head_epochs: int = 0

    def terms(self) -> frozenset[str]:
        """The local-objective terms this plan switches on."""
        used = set()
        if self.mu > 0:
            used.add(PROXIMAL)
        if self.gradient_correction:
            used.add(GRADIENT_CORRECTION)
        if self.fairness_lambda > 0:
            used.add(FAIRNESS)
        return frozenset(used)


@dataclass(frozen=True)
class Instruction:
    """What the strategy tells one sampled hospital this round.

    `weight` is the hospital's share of the aggregate, fixed before training so that workers can
    sum weighted contributions (a strategy that weighs after training replaces it with the
    weight its `weigh` returns). `stage_settings`: what each update stage's server half tells
    the hospital halves this round, in pipeline order (adaptive clipping's current clip norm).
    weight its `weigh` returns). `model`: which of the broadcast's models (`Strategy.models`) the
    hospital works with; the hospital itself sets it, to the one of lowest loss on its own
    training data (IFCA's cluster), where the strategy offers more than one.
    """

    hospital: int
    weight: float
    plan: LocalPlan
    stage_settings: tuple[Any, ...] = ()
    model: int = 0


@dataclass
class LocalResult:
    """One hospital's local training outcome, produced by a Task on a worker."""

    params: Params
    num_samples: int
    steps: int  # optimiser steps taken (0: the hospital did not train, e.g. a DQN before learning starts)
    metrics: dict[str, float]
    state: Any = None  # per-hospital task state to keep until this hospital's next round


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
    status: str = "ok"  # or "quarantined: <why>" (fedsim.quarantine): left out of the aggregate


@dataclass
class Aggregate:
    """What reaches the strategy's aggregate step: `total` is the exact sum of the hospitals'
    weighted contributions (summed on the workers, renormalised over the hospitals not
    quarantined, then passed through the update stages' server halves), or a robust strategy's
    `combine` of the individual updates. Quarantined hospitals appear in neither list."""

    instructions: list[Instruction]
    reports: list[ClientReport]  # the hospitals' loggable outcomes, in instructions order
    total: dict[str, np.ndarray]


@dataclass(frozen=True)
class HospitalState:
    """What the engine keeps for a hospital between its rounds, whichever worker runs it next:
    the task's (a DQN's replay buffer), the strategy's (FedBN's BN, SCAFFOLD's c_i) and each
    update stage's (an error-feedback residual), in pipeline order."""

    task: Any = None
    strategy: Any = None
    stages: tuple[Any, ...] = field(default_factory=tuple)


#: What a worker sends first when the strategy weighs after training: (hospital, summary) pairs.
Summaries = list[tuple[int, dict[str, np.ndarray]]]
#: What a worker sends when the strategy needs individual updates: (hospital, contribution) pairs.
Updates = list[tuple[int, dict[str, np.ndarray]]]
