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

Adaptive clipping (Andrew et al. 2021, "Differentially private learning with adaptive
clipping"): C is the server's state and goes out with every round's instructions; each hospital
also reports b_k - 1/2, b_k = 1[||delta_k|| <= C], which reaches the server only inside the exact
(or securely masked) sum; the server adds N(0, sigma_b^2) to that count and moves C towards the
target quantile gamma of the update norms,

    b = (sum_k (b_k - 1/2) + N(0, sigma_b^2)) / m + 1/2,    C <- C * exp(-eta_C * (b - gamma)).

The count costs privacy too: see fedsim.privacy.accounting for the effective noise multiplier.

Local DP: every hospital clips its update and adds N(0, sigma^2 C^2 I) itself before it leaves,
so no one it sends to must be trusted; accounted per hospital as a Gaussian mechanism of
sensitivity C per round it takes part in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.params import Params, is_trained
from fedsim.pipeline.base import HospitalContext, ServerContext, UpdateStage
from fedsim.pipeline.clipping import NormClip
from fedsim.seeding import Stream, rng_for


@dataclass(frozen=True)
class AdaptiveClipping:
    """Andrew et al. 2021's geometric rule: C follows the `target_quantile` gamma of the
    hospitals' update norms, C <- C * exp(-learning_rate * (b - gamma)), b the noised fraction
    of updates with norm <= C (noise std `count_noise` on their count)."""

    target_quantile: float
    learning_rate: float
    count_noise: float


class CentralDP(UpdateStage):
    """DP-FedAvg; with `adaptive` set, the clip norm C is server state that moves every round and
    reaches the hospitals as the stage's setting. `noise_multiplier` is the update sum's z_update
    (fedsim.privacy.accounting.update_noise_multiplier with adaptive clipping, else the run's z)."""

    def __init__(self, clip_norm: float, noise_multiplier: float, expected_cohort: float, run_seed: int,
                 adaptive: AdaptiveClipping | None = None) -> None:
        self.clip_norm = clip_norm  # C for the coming round
        self.noise_multiplier = noise_multiplier
        self.expected_cohort = expected_cohort
        self.run_seed = run_seed
        self.adaptive = adaptive
        self.summed = ("unclipped",) if adaptive else ()

    def setting(self) -> float:
        return self.clip_norm

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        clipped, _, metrics = NormClip(context.setting).hospital(update, context, state)
        scale = 1.0 / (self.expected_cohort * context.weight)
        if self.adaptive:
            metrics["unclipped"] = 0.5 - metrics["clipped"]  # b_k - 1/2: sensitivity 1/2 (Andrew et al.)
        return {name: delta * scale for name, delta in clipped.items()}, state, metrics

    def server(self, total: dict[str, np.ndarray], context: ServerContext) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        rng = rng_for(self.run_seed, Stream.SERVER_NOISE, context.round_index)
        noise_std = self.noise_multiplier * self.clip_norm / self.expected_cohort
        noisy = {
            name: value + rng.normal(0.0, noise_std, size=value.shape) if is_trained(name, value) else value
            for name, value in total.items()
        }
        metrics = {"noise_std": noise_std, "clip_norm": self.clip_norm}
        if self.adaptive:
            metrics["unclipped_fraction"] = self._adapt(context)
        return noisy, metrics

    def _adapt(self, context: ServerContext) -> float:
        """Move C for the next round; returns the noised fraction of unclipped updates,
        b = (sum_k (b_k - 1/2) + N(0, sigma_b^2)) / m + 1/2 (fixed denominator m, as for the update)."""
        spec = self.adaptive
        count = context.sums.get("unclipped", 0.0) + rng_for(self.run_seed, Stream.CLIP_COUNT_NOISE, context.round_index).normal(0.0, spec.count_noise)
        fraction = count / self.expected_cohort + 0.5
        self.clip_norm *= math.exp(-spec.learning_rate * (fraction - spec.target_quantile))
        return fraction


class LocalDP(UpdateStage):
    def __init__(self, clip_norm: float, noise_multiplier: float) -> None:
        self.clip = NormClip(clip_norm)
        self.noise_std = noise_multiplier * clip_norm

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        clipped, _, metrics = self.clip.hospital(update, context, state)
        rng = np.random.default_rng(context.seed)
        noisy = {name: delta + rng.normal(0.0, self.noise_std, size=delta.shape) for name, delta in clipped.items()}
        return noisy, state, {**metrics, "local_noise_std": self.noise_std}
