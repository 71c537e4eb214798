"""One round through the engine's own round protocol on the in-process backend (no Ray)."""

from __future__ import annotations

from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import run_round
from fedsim.pipeline.base import Pipeline

SEED = 11


def one_round(task, strategy, cohort, broadcast=None, states=None, workers=1, pipeline=None, seed=SEED):
    """Returns the new broadcast, the reports (by hospital), every hospital's state and the
    strategy's round metrics (without the strategy_ prefix)."""
    backend = InProcessBackend(task, strategy, pipeline or Pipeline([]), task.initial_params(0), seed, workers)
    if broadcast is not None:
        backend.server.broadcast = broadcast
    backend.states.update(states or {})
    outcome = run_round(backend, task, 1, cohort, scored=None)
    metrics = {name.removeprefix("strategy_"): value for name, value in outcome.round_metrics.items()}
    return backend.server.broadcast, outcome.reports, dict(backend.states), metrics
