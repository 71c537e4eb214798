"""FedAdam (Reddi et al., 2021): FedOpt with Adam's second moment

    v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedsim.strategies.fedopt import FedOpt, FedOptConfig


class FedAdamConfig(FedOptConfig):
    name: Literal["fedadam"] = "fedadam"

    def build(self, config, task) -> "FedAdam":
        return FedAdam(self)


class FedAdam(FedOpt):
    name = "fedadam"

    def second_moment(self, v_prev: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return self.beta2 * v_prev + (1 - self.beta2) * delta**2
