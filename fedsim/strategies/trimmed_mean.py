"""Coordinate-wise trimmed mean (Yin et al., 2018): per coordinate, drop the b largest and the b
smallest values and average the rest,

    Delta_t[j] = mean of sorted_k(Delta_k[j])[b : n - b],   b = floor(trim * n),   w_{t+1} = w_t + Delta_t

which tolerates up to b Byzantine hospitals of the n in the round. trim = 0 is the plain mean.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedsim.protocol import Updates
from fedsim.strategies.robust import RobustConfig, RobustStrategy, stacked


class TrimmedMeanConfig(RobustConfig):
    name: Literal["trimmed_mean"] = "trimmed_mean"
    trim: float = Field(0.2, ge=0, lt=0.5, description="beta: the fraction cut from each end, per coordinate")

    def build(self, config, task) -> "TrimmedMean":
        self.check_round_bytes(config, task)
        return TrimmedMean(self.trim)


class TrimmedMean(RobustStrategy):
    name = "trimmed_mean"

    def __init__(self, trim: float) -> None:
        self.trim = trim

    def combine(self, updates: Updates) -> dict[str, np.ndarray]:
        n = len(updates)
        cut = int(np.floor(self.trim * n))
        return {name: np.mean(np.sort(stacked(updates, name), axis=0)[cut : n - cut], axis=0) for name in updates[0][1]}
