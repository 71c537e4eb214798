"""FedYogi (Reddi et al., 2021): FedOpt with Yogi's additive second moment, which grows v only
as fast as the squared update demands:

    v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedsim.strategies.fedopt import FedOpt, FedOptConfig


class FedYogiConfig(FedOptConfig):
    name: Literal["fedyogi"] = "fedyogi"

    def build(self, config, task) -> "FedYogi":
        return FedYogi(self)


class FedYogi(FedOpt):
    name = "fedyogi"

    def second_moment(self, v_prev: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return v_prev - (1 - self.beta2) * delta**2 * np.sign(v_prev - delta**2)
