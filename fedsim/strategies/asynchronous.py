"""What FedBuff and FedAsync share: asynchronous aggregation on the simulated clock.

An asynchronous strategy has no rounds. `sampling.clients_per_round` hospitals train at once
(the concurrency); each starts from the server model current when it starts, and when it
arrives (its simulated finish time, fedsim.systems.clock) its update goes to the server with
its staleness

    tau_i = (server version when it arrives) - (version it started from).

The server applies updates with `step` (one server step = one new model version = one row of
rounds.parquet), and a freed slot is refilled at once from the current model
(fedsim.engine.asynchronous). Hospital-side work is FedAvg's: plain local training from the
model it was sent; the strategy says what it sends (`contribution`) and how the server applies
it. Both papers' staleness functions:

    s(tau) = (tau + 1)^(-a)   (polynomial; FedBuff's 1/sqrt(1 + tau) is a = 0.5)
    s(tau) = 1                (constant)
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from pydantic import Field

from fedsim.params import Params
from fedsim.protocol import Aggregate, Cohort, Instruction
from fedsim.schema import Strict
from fedsim.strategies.base import Strategy, StrategyConfig, weighted_instructions

if TYPE_CHECKING:
    from fedsim.config import Config


class StalenessConfig(Strict):
    """How much a stale update counts: `polynomial` s(tau) = (tau + 1)^(-exponent), or `constant` 1."""

    kind: Literal["polynomial", "constant"] = "polynomial"
    exponent: float = Field(0.5, ge=0)

    def weight(self, staleness: int) -> float:
        return 1.0 if self.kind == "constant" else float((staleness + 1.0) ** -self.exponent)


class AsynchronousConfig(StrategyConfig):
    """Settings every asynchronous strategy has, and what they cannot run with."""

    asynchronous: ClassVar[bool] = True
    staleness: StalenessConfig = StalenessConfig()

    def check(self, config: "Config") -> None:
        """Refuse what has no meaning without synchronous rounds (README, Systems); compression is
        refused by its own section (FedAvg-family strategies only)."""
        name, systems = self.name, config.systems
        if systems is None:
            raise ValueError(f"strategy.name: {name} runs on the simulated clock, which needs a systems section "
                             "(systems: {} for the built-in tiers)")
        refusals = (
            (systems.deadline is not None, "systems.deadline",
             "a deadline closes a synchronous round; asynchronous hospitals are never late"),
            (systems.over_selection > 0, "systems.over_selection",
             "over-selection keeps the first k of a synchronous round; an asynchronous server takes every arrival"),
            (config.sampling.scheme == "poisson", "sampling.scheme",
             "poisson gives no fixed number of hospitals training at once (the concurrency)"),
            (config.secure_aggregation is not None, "secure_aggregation",
             "masks cancel only in the sum of one round's cohort; asynchronous updates arrive and are weighed one by one"),
            (config.privacy is not None, "privacy",
             "the accountant (and central DP's noise on the sum) works per synchronous round's cohort"),
        )
        for applies, field, why in refusals:
            if applies:
                raise ValueError(f"{field}: not with strategy {name} ({why})")


@dataclass(frozen=True)
class Arrival:
    """One hospital's update as the server applies it."""

    hospital: int
    staleness: int
    update: dict[str, np.ndarray]  # the strategy's contribution


class AsynchronousStrategy(Strategy):
    """Server steps instead of rounds: each hospital sends its update alone (no cohort sum)."""

    sends_individual_updates = True
    #: Arrivals the server waits for before a step (FedBuff's K; FedAsync: 1).
    buffer_size: int = 1

    def __init__(self, staleness: StalenessConfig) -> None:
        self.staleness = staleness

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        """Plain local training; the weight is unused (staleness weighs an update at the server)."""
        return weighted_instructions(cohort, np.ones(len(cohort.hospitals)))

    @abstractmethod
    def step(self, broadcast: Params, arrivals: list[Arrival]) -> tuple[Params, dict[str, float]]:
        """The next model from the current one and `buffer_size` arrivals (in arrival order),
        and quantities for rounds.parquet."""

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        raise NotImplementedError(f"{self.name} applies updates as they arrive (step), not per round")
