"""Client-level differential privacy as update stages.

Central DP is DP-FedAvg (McMahan et al. 2018, "Learning differentially private recurrent language
models") with uniform weights and the fixed denominator m = q N (the expected cohort size):

    w_{t+1} = w_t + (1/m) * [ sum_{k in cohort} clip_C(delta_k) + N(0, sigma^2 C^2 I) ]

Adding or removing one hospital moves sum_k clip_C(delta_k) by at most C in L2, so the sum has
sensitivity C and, divided by m, sensitivity C/m: the noise on the strategy's sum has std
sigma * C / m. The hospital half makes the strategy's own weighted sum equal that sum: it sends
clip_C(delta_k) / (m p_k), so that p_k * (w_t + delta'_k) summed over the cohort is
w_t + (1/m) sum_k clip_C(delta_k) (the p_k of a cohort sum to 1), whatever the strategy's weights
p_k. The server half adds the noise to every trained entry of the sum, once. Accounting: the
Poisson-subsampled Gaussian mechanism at q = m / N, one step per round (fedsim.privacy.accounting).

Local DP: every hospital clips its update and adds N(0, sigma^2 C^2 I) itself before it leaves,
so no one it sends to must be trusted; accounted per hospital as a Gaussian mechanism of
sensitivity C per round it takes part in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.params import Params, is_trained
from fedsim.pipeline.base import HospitalContext, UpdateStage
from fedsim.pipeline.clipping import NormClip
from fedsim.protocol import Instruction
from fedsim.seeding import Stream, rng_for


class CentralDP(UpdateStage):
    def __init__(self, clip_norm: float, noise_multiplier: float, expected_cohort: float, run_seed: int) -> None:
        self.clip = NormClip(clip_norm)
        self.noise_std = noise_multiplier * clip_norm / expected_cohort
        self.expected_cohort = expected_cohort
        self.run_seed = run_seed

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        clipped, _, metrics = self.clip.hospital(update, context, state)
        scale = 1.0 / (self.expected_cohort * context.weight)
        return {name: delta * scale for name, delta in clipped.items()}, state, metrics

    def server(self, total: dict[str, np.ndarray], round_index: int, instructions: list[Instruction]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        rng = rng_for(self.run_seed, Stream.SERVER_NOISE, round_index)
        noisy = {
            name: value + rng.normal(0.0, self.noise_std, size=value.shape) if is_trained(name, value) else value
            for name, value in total.items()
        }
        return noisy, {"noise_std": self.noise_std}


class LocalDP(UpdateStage):
    def __init__(self, clip_norm: float, noise_multiplier: float) -> None:
        self.clip = NormClip(clip_norm)
        self.noise_std = noise_multiplier * clip_norm

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        clipped, _, metrics = self.clip.hospital(update, context, state)
        rng = np.random.default_rng(context.seed)
        noisy = {name: delta + rng.normal(0.0, self.noise_std, size=delta.shape) for name, delta in clipped.items()}
        return noisy, state, {**metrics, "local_noise_std": self.noise_std}
