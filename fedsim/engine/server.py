"""The server: strategy state and the global model, in one place (a Ray actor in a run)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedsim.engine.fixed_point import FixedPointSum
from fedsim.engine.worker import Collected
from fedsim.params import Params
from fedsim.protocol import Aggregate, Instruction
from fedsim.strategies.base import Strategy


class ServerCore:
    def __init__(self, strategy: Strategy, initial_params: Params) -> None:
        self.strategy = strategy
        self.params = initial_params

    def configure(self, round_index: int, hospitals: Sequence[int], sizes: np.ndarray) -> list[Instruction]:
        return self.strategy.configure(round_index, hospitals, sizes)

    def aggregate(
        self, round_index: int, instructions: list[Instruction], *partials: FixedPointSum | Collected
    ) -> tuple[Params, dict[str, float]]:
        """Fold the workers' partial aggregates into the next global model."""
        if self.strategy.aggregates_on_workers:
            total = FixedPointSum()
            for partial in partials:
                total.merge(partial)  # type: ignore[arg-type]
            aggregate = Aggregate(instructions, total=total.value())
        else:
            by_hospital = {hospital: c for partial in partials for hospital, c in partial}  # type: ignore[union-attr]
            aggregate = Aggregate(instructions, each=[by_hospital[i.hospital] for i in instructions])
        self.params, metrics = self.strategy.aggregate(round_index, self.params, aggregate)
        return self.params, metrics
