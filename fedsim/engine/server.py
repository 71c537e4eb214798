"""The server: strategy state and the global model, in one place (a Ray actor in a run)."""

from __future__ import annotations

from fedsim.engine.fixed_point import FixedPointSum
from fedsim.params import Params, params_nbytes
from fedsim.protocol import Aggregate, Cohort, Collected, Instruction
from fedsim.strategies.base import Strategy


class ServerCore:
    """Holds the strategy (with its server state) and the current broadcast."""

    def __init__(self, strategy: Strategy, initial_params: Params) -> None:
        self.strategy = strategy
        self.broadcast = strategy.initial_broadcast(initial_params)

    def initial(self) -> tuple[Params, int]:
        """The round-1 broadcast and its size in bytes."""
        return self.broadcast, params_nbytes(self.broadcast)

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return self.strategy.configure(round_index, cohort)

    def observe(self, round_index: int, global_metrics: dict[str, float], hospital_metrics: dict[int, dict[str, float]]) -> None:
        self.strategy.observe(round_index, global_metrics, hospital_metrics)

    def aggregate(
        self, round_index: int, instructions: list[Instruction], *partials: FixedPointSum | Collected
    ) -> tuple[Params, dict[str, float], int]:
        """Fold the workers' partial aggregates into the next broadcast (returned with the
        strategy's round metrics and the broadcast's size in bytes)."""
        if self.strategy.aggregates_on_workers:
            total = FixedPointSum()
            for partial in partials:
                total.merge(partial)  # type: ignore[arg-type]
            aggregate = Aggregate(instructions, total=total.value())
        else:
            by_hospital = {hospital: c for partial in partials for hospital, c in partial}  # type: ignore[union-attr]
            aggregate = Aggregate(instructions, each=[by_hospital[i.hospital] for i in instructions])
        self.broadcast, metrics = self.strategy.aggregate(round_index, self.broadcast, aggregate)
        return self.broadcast, metrics, params_nbytes(self.broadcast)
