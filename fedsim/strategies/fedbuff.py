"""FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation").

Each hospital sends its update Delta_i = w_i - w_{v_i}: the model it trained minus the model
(version v_i) it started from, for every float array it shares (BatchNorm statistics
included). The server buffers arrivals; when it holds K of them it steps

    w <- w + eta_g * (1 / K) * sum_{i in buffer} s(tau_i) * Delta_i,    s(tau) = 1 / sqrt(1 + tau)

(the paper's Algorithm 1 with server learning rate eta_g; s is configurable, see
fedsim.strategies.asynchronous), empties the buffer and counts one version. With K equal to the
concurrency, eta_g = 1, equal hospital sizes and no staleness, this is FedAvg.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedsim.params import Params, is_trainable_float
from fedsim.protocol import Instruction, LocalResult
from fedsim.strategies.asynchronous import Arrival, AsynchronousConfig, AsynchronousStrategy, StalenessConfig


class FedBuffConfig(AsynchronousConfig):
    """FedBuff: `buffer_size` K updates per server step, server learning rate `server_lr` eta_g.
    K may exceed the concurrency (sampling.clients_per_round): freed slots refill while the
    buffer fills."""

    name: Literal["fedbuff"] = "fedbuff"
    buffer_size: int = Field(10, ge=1)
    server_lr: float = Field(1.0, gt=0)

    def build(self, config, task) -> "FedBuff":
        return FedBuff(self.buffer_size, self.server_lr, self.staleness)


def model_delta(result: LocalResult, start: Params) -> dict[str, np.ndarray]:
    """w_i - w_start for every float array the hospital shares, in float64."""
    return {name: array.astype(np.float64) - start[name] for name, array in result.params.items() if is_trainable_float(array)}


class FedBuff(AsynchronousStrategy):
    name = "fedbuff"

    def __init__(self, buffer_size: int, server_lr: float, staleness: StalenessConfig) -> None:
        super().__init__(staleness)
        self.buffer_size = buffer_size
        self.server_lr = server_lr

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return model_delta(result, broadcast)

    def step(self, broadcast: Params, arrivals: list[Arrival]) -> tuple[Params, dict[str, float]]:
        weights = [self.staleness.weight(arrival.staleness) for arrival in arrivals]
        updated = dict(broadcast)
        for name in arrivals[0].update:
            total = sum(weight * arrival.update[name] for weight, arrival in zip(weights, arrivals))
            updated[name] = (broadcast[name] + self.server_lr * total / len(arrivals)).astype(broadcast[name].dtype)
        return updated, {"mean_staleness_weight": float(np.mean(weights))}
