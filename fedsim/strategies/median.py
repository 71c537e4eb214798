"""Coordinate-wise median (Yin et al., 2018): robust to a minority of arbitrary (Byzantine) updates.

    Delta_t[j] = median_k Delta_k[j]      for every coordinate j,     w_{t+1} = w_t + Delta_t

Normalisation statistics take their coordinate-wise median too. See fedsim.strategies.robust for
how the individual updates reach the server and what that costs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedsim.protocol import Updates
from fedsim.strategies.robust import RobustConfig, RobustStrategy, stacked


class MedianConfig(RobustConfig):
    name: Literal["median"] = "median"

    def build(self, config, task) -> "Median":
        self.check_round_bytes(config, task)
        return Median()


class Median(RobustStrategy):
    name = "median"

    def combine(self, updates: Updates) -> dict[str, np.ndarray]:
        return {name: np.median(stacked(updates, name), axis=0) for name in updates[0][1]}
