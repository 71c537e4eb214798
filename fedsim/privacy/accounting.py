"""Privacy accounting with Opacus' RDP analysis of the (Poisson-)subsampled Gaussian mechanism
(Mironov et al. 2017; Mironov, Talwar & Zhang 2019), composed additively in Renyi DP and
converted to (epsilon, delta) at the end.

The ledger keeps one RDP curve per hospital, so one code path covers every mechanism:

- central (client-level, DP-FedAvg): every round adds RDP(q, sigma, 1) to every hospital, q the
  chance a hospital is sampled (cohort size / federation size);
- local (hospital-level, no trusted server): each round a hospital takes part in adds
  RDP(1, sigma, 1), a Gaussian mechanism of sensitivity C with noise sigma * C;
- dp_sgd (sample-level, within a hospital): a round hospital k takes part in adds
  RDP(q_k, sigma, steps_k), q_k = 1 / ceil(n_k / B) (Opacus' Poisson batches) and
  steps_k = epochs * ceil(n_k / B).

The run's epsilon is the largest over hospitals.

Adaptive clipping (Andrew et al. 2021) releases, besides the noised update sum (noise multiplier
z_update), the noised count of unclipped updates: each hospital adds b_k - 1/2 in {-1/2, +1/2}
(sensitivity 1/2) and the server adds N(0, sigma_b^2), a Gaussian mechanism of noise multiplier
2 sigma_b. Two Gaussian mechanisms compose in RDP (alpha / 2z^2 each) into one of multiplier

    z = (z_update^-2 + (2 sigma_b)^-2)^(-1/2),

so the ledger accounts z (configured or calibrated as usual) and the update noise uses
z_update = (z^-2 - (2 sigma_b)^-2)^(-1/2), which exists only when 2 sigma_b > z.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

#: Renyi orders: Opacus' defaults plus orders close to 1, where the optimum lies at large epsilon.
ORDERS = np.array([1.01, 1.02, 1.05] + list(RDPAccountant.DEFAULT_ALPHAS), dtype=np.float64)


def rdp(sample_rate: float, noise_multiplier: float, steps: int) -> np.ndarray:
    """The RDP curve (over ORDERS) of `steps` subsampled Gaussian steps."""
    if steps == 0:
        return np.zeros(len(ORDERS))
    return np.asarray(compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=ORDERS))


def epsilon(curve: np.ndarray, delta: float) -> float:
    if not np.any(curve):
        return 0.0
    eps, _ = get_privacy_spent(orders=ORDERS, rdp=curve, delta=delta)
    return float(eps)


def effective_noise_multiplier(update_noise_multiplier: float, count_noise: float) -> float:
    """z of the update sum and the clipped count released together (Andrew et al. 2021, Thm. 1)."""
    return (update_noise_multiplier**-2 + (2 * count_noise) ** -2) ** -0.5


def update_noise_multiplier(noise_multiplier: float, count_noise: float) -> float:
    """The update sum's noise multiplier that, with the count's noise `count_noise`, spends
    exactly `noise_multiplier`'s privacy."""
    if not 2 * count_noise > noise_multiplier:
        raise ValueError(f"privacy.adaptive_clipping.count_noise: expected more than noise_multiplier / 2 = {noise_multiplier / 2:.4g} "
                         f"(the count would spend the whole budget), got {count_noise:.4g}")
    return (noise_multiplier**-2 - (2 * count_noise) ** -2) ** -0.5


def calibrate(spent: Callable[[float], float], target: float, tolerance: float = 1e-3) -> float:
    """The smallest noise multiplier whose epsilon `spent(sigma)` is at most `target`, found by
    bisection (epsilon falls as sigma grows); the result spends within `tolerance` (relative) of
    the target, from below."""
    low, high = 1e-2, 1.0
    while spent(high) > target:
        low, high = high, high * 2
        if high > 1e6:
            raise ValueError(f"privacy.target_epsilon: {target} is not reachable with any noise multiplier")
    if spent(low) <= target:
        return low
    for _ in range(200):
        middle = math.sqrt(low * high)
        if spent(middle) > target:
            low = middle
        else:
            high = middle
        if target - spent(high) <= tolerance * target:
            break
    return high
