"""Local only: no federation, the baseline that shows what federating buys.

Every hospital trains its own model from its previous one (the initial model the first time) on
its own training data only, and keeps it as hospital state; nothing is uploaded and the broadcast
never changes. A hospital's own model is what its evaluation scores, on the hospital's own test
split (hospital_eval.parquet; their means are rounds.parquet's hospital_*_mean columns): compare
local-only runs on those. There is no global model, so the global_* columns are NaN.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from fedsim.params import Params
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalResult
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, weighted_instructions


class LocalOnlyConfig(StrategyConfig):
    """No federation: every hospital trains and keeps its own model (the local-only baseline)."""

    name: Literal["local_only"] = "local_only"

    def build(self, config, task) -> "LocalOnly":
        return LocalOnly()


class LocalOnly(Strategy):
    name = "local_only"
    keeps_hospital_state = True
    has_global_model = False

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def model_params(self, broadcast: Params, state: Any = None) -> Params:
        return broadcast if state is None else state

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return {}

    def local_state(
        self, result: LocalResult, instruction: Instruction, broadcast: Params, state: Any
    ) -> tuple[Params, dict[str, float]]:
        return result.params, {}

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        return broadcast, {}
