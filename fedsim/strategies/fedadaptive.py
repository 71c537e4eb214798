"""FedAdam and FedYogi (Reddi et al., 2021, Algorithm 2): adaptive server optimisers.

The pseudo-gradient is the sample-weighted mean local update  Delta_t = sum_k p_k (w_k - w_t), and

    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
    v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2                          (FedAdam)
    v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)      (FedYogi)
    w_{t+1} = w_t + server_lr * m_t / (sqrt(v_t) + tau)

with m_{-1} = 0 and v_{-1} = tau^2, no bias correction, as in the paper. BatchNorm running
statistics are averaged directly (they are not trained by gradients).
"""

from __future__ import annotations

import numpy as np

from fedsim.params import Params, is_statistic, is_trained
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalResult
from fedsim.strategies.base import Strategy, sample_shares, step_trained, weighted_instructions


class FedAdaptive(Strategy):
    def __init__(self, variant: str, server_lr: float, beta1: float, beta2: float, tau: float) -> None:
        if variant not in ("fedadam", "fedyogi"):
            raise ValueError(f"strategy.name: expected fedadam or fedyogi, got {variant!r}")
        self.name = variant  # type: ignore[misc]
        self.server_lr, self.beta1, self.beta2, self.tau = server_lr, beta1, beta2, tau
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        shares: dict[str, np.ndarray] = {}
        for name, local in result.params.items():
            if is_trained(name, local):
                shares[name] = instruction.weight * (local.astype(np.float64) - broadcast[name])
            elif is_statistic(name):
                shares[name] = instruction.weight * local.astype(np.float64)
        return shares

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        total = aggregate.total
        step_sq = 0.0

        def adaptive_step(name: str, w: np.ndarray, delta: np.ndarray) -> np.ndarray:
            nonlocal step_sq
            m = self.beta1 * self.m.get(name, 0.0) + (1 - self.beta1) * delta
            v_prev = self.v.get(name, np.full_like(delta, self.tau**2))
            if self.name == "fedadam":
                v = self.beta2 * v_prev + (1 - self.beta2) * delta**2
            else:
                v = v_prev - (1 - self.beta2) * delta**2 * np.sign(v_prev - delta**2)
            self.m[name], self.v[name] = m, v
            step = self.server_lr * m / (np.sqrt(v) + self.tau)
            step_sq += float(np.sum(step**2))
            return w.astype(np.float64) + step

        updated = step_trained(broadcast, total, adaptive_step)
        return updated, {"server_step_norm": float(np.sqrt(step_sq))}
