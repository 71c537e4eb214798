"""The server: strategy state and the global model, in one place (a Ray actor in a run)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedsim.engine.fixed_point import FixedPointSum
from fedsim.params import Params, params_nbytes
from fedsim.pipeline.base import Pipeline, ServerContext
from fedsim.protocol import Aggregate, ClientReport, Cohort, Instruction, Summaries, Updates
from fedsim.quarantine import OK, kept_share
from fedsim.strategies.asynchronous import Arrival
from fedsim.strategies.base import Strategy


class ServerCore:
    """Holds the strategy (with its server state), the update stages' server halves and the
    current broadcast."""

    def __init__(self, strategy: Strategy, pipeline: Pipeline, initial_params: Params) -> None:
        self.strategy = strategy
        self.pipeline = pipeline
        self.broadcast = strategy.initial_broadcast(initial_params)
        #: Asynchronous strategies: updates of hospitals in flight or buffered, by (dispatch, hospital).
        self.pending: dict[tuple[int, int], dict[str, Any]] = {}

    def initial(self) -> tuple[Params, int]:
        """The round-1 broadcast and its size in bytes."""
        return self.broadcast, params_nbytes(self.broadcast)

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        """The strategy's instructions, each carrying the update stages' settings for the round."""
        settings = self.pipeline.settings()
        return [replace(instruction, stage_settings=settings) for instruction in self.strategy.configure(round_index, cohort)]

    def observe(self, round_index: int, validation: dict[str, float]) -> None:
        self.strategy.observe(round_index, validation)

    def weigh(
        self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], *summaries: Summaries
    ) -> dict[int, float]:
        """The strategy's weights per hospital, from the summaries the workers sent (strategies
        that weigh after training)."""
        arrived = {report.hospital for report in reports if report.status == OK}  # late or dropped: not weighed
        by_hospital = {hospital: summary for batch in summaries for hospital, summary in batch}
        kept = [i for i in instructions if i.hospital in by_hospital and i.hospital in arrived]  # quarantined hospitals sent none
        if not kept:
            return {}
        ordered = _in_order(kept, reports)
        weights = self.strategy.weigh(round_index, kept, ordered, [by_hospital[i.hospital] for i in kept])
        return {i.hospital: float(w) for i, w in zip(kept, weights)}

    def aggregate(
        self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], *partials: FixedPointSum
    ) -> tuple[Params, dict[str, float], int, dict[int, dict[str, float]]]:
        """Fold the workers' partial sums into the next broadcast (through the update stages'
        server halves). Returns it with the round's metrics (strategy_* and pipeline_*), the
        broadcast's size in bytes, and per-hospital quantities."""
        ordered = _in_order(instructions, reports)
        kept = [i for i, report in zip(instructions, ordered) if report.status == OK]
        strategy, secure = self.strategy, self.pipeline.secure_aggregation
        if not kept:  # every update quarantined: the model stays as it is
            return self.broadcast, {}, params_nbytes(self.broadcast), {}
        stage_metrics: dict[str, float] = {}
        sums: list[dict[str, float]] = [{} for _ in self.pipeline.stages]
        if strategy.sends_individual_updates:
            arrived = {i.hospital for i in kept}  # quarantined ones sent none; late or dropped ones are left out here
            updates = sorted((pair for batch in partials for pair in batch if pair[0] in arrived), key=lambda pair: pair[0])
            total = strategy.combine(updates)
        elif secure:  # quarantined hospitals count as dropped: over_survivors renormalises
            total, stage_metrics = secure.unmasked_total(partials, instructions, round_index)
            if total is None:  # too few survivors: the round fails, the model stays
                return self.broadcast, {f"pipeline_{k}": v for k, v in stage_metrics.items()}, params_nbytes(self.broadcast), {}
            total, sums = self.pipeline.split_summed(total)
        else:
            exact = FixedPointSum()
            for partial in partials:
                exact.merge(partial)
            total, sums = self.pipeline.split_summed(exact.value())
            share = 1.0 if strategy.weighs_after_training else kept_share(instructions, kept)
            if share != 1.0:
                total = {name: value * share for name, value in total.items()}
        context = ServerContext(round_index, kept, float(sum(i.weight for i in instructions)), {},
                                strategy.model_params(self.broadcast), strategy.sums_updates)
        summed, more_metrics = self.pipeline.server_side(total, context, sums)
        if secure and not strategy.sends_individual_updates:
            summed = secure.over_survivors(summed, stage_metrics)
        stage_metrics = {**stage_metrics, **more_metrics}
        aggregate = Aggregate(kept, _in_order(kept, reports), summed)
        self.broadcast, metrics = strategy.aggregate(round_index, self.broadcast, aggregate)
        round_metrics = {**{f"strategy_{k}": v for k, v in metrics.items()}, **{f"pipeline_{k}": v for k, v in stage_metrics.items()}}
        return self.broadcast, round_metrics, params_nbytes(self.broadcast), self.strategy.hospital_metrics()

    def receive(self, dispatch: int, hospitals: list[int], *partials: Updates) -> None:
        """Keep the updates `hospitals` of dispatch `dispatch` sent (asynchronous strategies)
        until `step` applies them: the others dropped out."""
        keep = set(hospitals)
        self.pending.update(((dispatch, h), update) for batch in partials for h, update in batch if h in keep)

    def step(self, arrivals: list[tuple[int, int, int]]) -> tuple[Params, dict[str, float], int]:
        """One asynchronous server step with the pending updates of `arrivals` ((dispatch,
        hospital, staleness), in arrival order); returns the new broadcast, the step's metrics
        and its size in bytes."""
        applied = [Arrival(h, staleness, self.pending.pop((dispatch, h))) for dispatch, h, staleness in arrivals]
        self.broadcast, metrics = self.strategy.step(self.broadcast, applied)
        return self.broadcast, {f"strategy_{k}": v for k, v in metrics.items()}, params_nbytes(self.broadcast)

    def get_state(self) -> dict[str, Any]:
        """Everything that determines the server's future: broadcast, strategy and stage state,
        and the pending asynchronous updates."""
        return {"broadcast": self.broadcast, "strategy": self.strategy.get_state(), "pipeline": self.pipeline.get_state(),
                "pending": self.pending}

    def set_state(self, state: dict[str, Any]) -> None:
        self.broadcast = state["broadcast"]
        self.pending = state.get("pending", {})  # (a checkpoint written before asynchronous aggregation has none)
        self.strategy.set_state(state["strategy"])
        self.pipeline.set_state(state["pipeline"])

    def global_params(self) -> Params:
        """The global model itself (the broadcast without strategy extras such as SCAFFOLD's c)."""
        return self.strategy.global_params(self.broadcast)


def _in_order(instructions: list[Instruction], reports: list[ClientReport]) -> list[ClientReport]:
    by_hospital = {report.hospital: report for report in reports}
    return [by_hospital[i.hospital] for i in instructions]
