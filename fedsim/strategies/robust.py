"""What the robust aggregation rules share (coordinate-wise median, trimmed mean, Krum): they are
not weighted sums, so each hospital's update reaches the server on its own.

Every sampled hospital sends its update Delta_k = w_k - w_t (and its normalisation statistics);
the server reduces the round's updates with the rule's `combine` and steps w_{t+1} = w_t + Delta.

Cost: the server holds the whole round's updates at once, |S| x (model parameters) x 8 bytes
(float64, as the updates are exact differences of the float32 models), and they cross the object
store once: 20 hospitals of the 0.12M-parameter small_cnn is 19 MB a round. `max_round_bytes`
refuses a configuration whose round would need more, before anything starts. Results do not
depend on the number of workers: the server orders the updates by hospital before combining.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydantic import Field

from fedsim.errors import ConfigError
from fedsim.params import Params, is_trainable_float
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalResult, Updates
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, step_trained, weighted_instructions
from fedsim.strategies.fedopt import mean_update_contribution

_FLOAT_BYTES = 8


class RobustConfig(StrategyConfig):
    """Settings every robust rule has."""

    max_round_bytes: int = Field(2**31, ge=1, description="refuse a round whose updates the server would hold above this")

    def check_round_bytes(self, config, task) -> None:
        """Refuse a cohort whose updates would not fit in `max_round_bytes` on the server."""
        params = task.initial_params(0)
        floats = sum(int(array.size) for array in params.values() if is_trainable_float(array))
        needed = config.clients_per_round() * floats * _FLOAT_BYTES
        if needed > self.max_round_bytes:
            raise ConfigError(
                f"strategy.max_round_bytes: {config.clients_per_round()} hospitals x {floats} parameters x 8 bytes = "
                f"{needed / 2**20:.0f} MB of updates per round on the server, above {self.max_round_bytes / 2**20:.0f} MB; "
                "sample fewer hospitals (sampling.clients_per_round) or raise the bound"
            )


def stacked(updates: Updates, name: str) -> np.ndarray:
    """One parameter of every update, stacked along a new first axis (hospital order)."""
    return np.stack([np.asarray(update[name], dtype=np.float64) for _, update in updates])


class RobustStrategy(Strategy):
    """Unweighted updates to the server, combined there by a robust rule."""

    sends_individual_updates = True

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))  # weights only logged: the rule ignores them

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return mean_update_contribution(result, replace(instruction, weight=1.0), broadcast)

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        return step_trained(broadcast, aggregate.total, lambda name, w, delta: w.astype(np.float64) + delta), {}
