"""Malicious hospitals for robustness experiments: the `attack` section.

A fraction of the federation's hospitals is malicious for the whole run; which ones is a pure
function of the run seed (`attackers`). What they do (`kind`):

- `label_flip`: they train on flipped labels, y -> K - 1 - y (their training split only; data poisoning);
- `sign_flip`: they send -factor * Delta_k instead of their update Delta_k (factor 1 by default);
- `scale`: they send factor * Delta_k (factor 10 by default), to dominate a mean;
- `gaussian`: they send N(0, noise_std^2) noise of the update's shape instead of it.

The update attacks act where an update leaves a hospital: a first update stage of the pipeline
(fedsim.pipeline.base), so they reach every strategy the same way and draw their noise from the
per-(round, hospital, stage) seed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np
from pydantic import Field

from fedsim.params import Params
from fedsim.pipeline.base import HospitalContext, UpdateStage
from fedsim.schema import Strict
from fedsim.seeding import Stream, rng_for

_DEFAULT_FACTOR = {"sign_flip": 1.0, "scale": 10.0}


class AttackConfig(Strict):
    fraction: float = Field(ge=0, le=1, description="share of the hospitals that are malicious (rounded to a count)")
    kind: Literal["label_flip", "sign_flip", "scale", "gaussian"]
    factor: float | None = Field(None, gt=0, description="sign_flip: -factor * update (default 1); scale: factor * update (default 10)")
    noise_std: float = Field(1.0, gt=0, description="gaussian: the noise's standard deviation")


def attackers(run_seed: int, num_hospitals: int, fraction: float) -> frozenset[int]:
    """The malicious hospitals: round(fraction * N) of them, drawn from the run seed alone."""
    count = int(round(fraction * num_hospitals))
    return frozenset(int(h) for h in rng_for(run_seed, Stream.ATTACK).permutation(num_hospitals)[:count])


class UpdatePoisoning(UpdateStage):
    """The attackers' updates, replaced as `kind` says; everyone else's pass unchanged."""

    def __init__(self, kind: str, malicious: frozenset[int], factor: float, noise_std: float) -> None:
        self.kind, self.malicious, self.factor, self.noise_std = kind, malicious, factor, noise_std

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        if context.hospital not in self.malicious:
            return update, state, {"attacker": 0.0}
        if self.kind == "gaussian":
            rng = np.random.default_rng(context.seed)
            poisoned = {name: rng.normal(0.0, self.noise_std, size=np.shape(delta)) for name, delta in update.items()}
        else:
            sign = -1.0 if self.kind == "sign_flip" else 1.0
            poisoned = {name: sign * self.factor * delta for name, delta in update.items()}
        return poisoned, state, {"attacker": 1.0}


def attack_stages(config: Any, num_hospitals: int) -> list[UpdateStage]:
    """The update stage of an update attack (none for no attack, or label flipping)."""
    attack = config.attack
    if attack is None or attack.kind == "label_flip":
        return []
    factor = attack.factor if attack.factor is not None else _DEFAULT_FACTOR.get(attack.kind, 1.0)
    return [UpdatePoisoning(attack.kind, attackers(config.seed, num_hospitals, attack.fraction), factor, attack.noise_std)]


def flip_labels(federation: Any, config: Any) -> Any:
    """The federation with the attackers' training labels flipped (y -> K - 1 - y), under
    `attack.kind: label_flip`; unchanged otherwise."""
    attack = config.attack
    if attack is None or attack.kind != "label_flip":
        return federation
    labels = federation.train_labels.copy()
    for hospital in sorted(attackers(config.seed, federation.num_hospitals, attack.fraction)):
        indices = federation.train_parts[hospital]
        labels[indices] = federation.dataset.num_classes - 1 - labels[indices]
    return replace(federation, reported_labels=labels)
